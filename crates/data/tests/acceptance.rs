//! The acceptance criteria of the distill-data issue, through the public API.

use std::path::{Path, PathBuf};

use distill_data::ops::files::{WriteOptions, convert, write_examples};
use distill_data::prompts::{LabPrompts, MultipleChoice, MultipleChoiceTemplate, extract_choice};
use distill_data::{
    EncodeOptions, Encoding, Error, Example, ExampleReader, FinetuneTarget, FinishReason, Message,
    PromptSource, ReaderOptions, Split, TeacherInfo, TokenLogprob, TopLogprob, Usage, export_finetune, pick,
    read_file, validate_finetune_file,
};

fn full_example(i: usize) -> Example {
    let mut e = Example::new(
        vec![
            Message::system("You are concise."),
            Message::user(format!("Question {i}: what is {i} + {i}?")),
        ],
        format!("{}", 2 * i),
    );
    e.teacher = Some(TeacherInfo {
        model: "gpt-4o".into(),
        provider: "azure".into(),
        finish_reason: Some(FinishReason::Stop),
        usage: Some(Usage {
            prompt_tokens: 20,
            completion_tokens: 1,
        }),
        latency_ms: Some(412),
        created: Some(1_790_000_000),
    });
    e.logprobs = Some(vec![TokenLogprob {
        token: format!("{}", 2 * i),
        bytes: Some(format!("{}", 2 * i).into_bytes()),
        logprob: -0.0123,
        top_logprobs: vec![
            TopLogprob {
                token: format!("{}", 2 * i),
                bytes: None,
                logprob: -0.0123,
            },
            TopLogprob {
                token: "x".into(),
                bytes: Some(vec![120]),
                logprob: -4.5,
            },
        ],
    }]);
    e.split = Some(Split::Train);
    e.metadata.insert("category".into(), "math".into());
    e
}

fn lab_lines(n: usize) -> Vec<String> {
    (1..=n)
        .map(|i| format!("{{\"prompt\": \"prompt {i}\", \"response\": \"response {i}\"}}"))
        .collect()
}

#[test]
fn malformed_line_37_strict_names_file_and_line_lenient_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lab.jsonl");
    let mut lines = lab_lines(100);
    lines[36] = "{\"prompt\": \"prompt 37\", \"response\": }".into();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();

    let err = read_file(&path).unwrap_err();
    let at = err.location().expect("a location");
    assert_eq!(at.path, path);
    assert_eq!(at.line, 37);
    let msg = err.to_string();
    let want = format!(
        "{}:37:37: cannot parse {{\"prompt\": \"prompt 37\", \"response\": }}",
        path.display()
    );
    assert_eq!(msg, want);
    let cause = std::error::Error::source(&err).expect("serde's error is chained");
    assert_eq!(cause.to_string(), "expected value");

    let reader = ExampleReader::open_with(&path, ReaderOptions::lenient()).unwrap();
    let (examples, report) = reader.read_all().unwrap();
    assert_eq!(examples.len(), 99);
    assert!(examples.iter().all(|e| e.prompt_text() != Some("prompt 37")));
    assert_eq!(report.bad_lines, 1);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].location().unwrap().line, 37);
    assert!(report.to_string().contains("skipped 1 bad line"), "{report}");
}

fn roundtrip(examples: &[Example], encoding: Encoding, dir: &Path) -> Vec<Example> {
    let path = dir.join(format!("{}.jsonl", encoding.as_str()));
    let opts = WriteOptions {
        encoding,
        ..WriteOptions::default()
    };
    write_examples(&path, examples.iter().cloned().map(Ok), &opts).unwrap();
    let reader = ExampleReader::open(&path).unwrap();
    let (back, report) = reader.read_all().unwrap();
    assert_eq!(report.encoding, Some(encoding));
    back
}

#[test]
fn three_encodings_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let full: Vec<Example> = (0..20).map(full_example).collect();
    // Full keeps everything.
    assert_eq!(roundtrip(&full, Encoding::Full, dir.path()), full);
    // Chat keeps the messages and response (and so the id).
    let chat_view: Vec<Example> = full
        .iter()
        .map(|e| Example::new(e.messages.clone(), e.response.clone()))
        .collect();
    assert_eq!(roundtrip(&full, Encoding::Chat, dir.path()), chat_view);
    // Lab keeps one user prompt and the response.
    let lab: Vec<Example> = (0..20)
        .map(|i| Example::new(vec![Message::user(format!("p{i} \u{1F600}"))], format!("r{i}")))
        .collect();
    assert_eq!(roundtrip(&lab, Encoding::Lab, dir.path()), lab);
    // Lab refuses to drop a system prompt silently.
    let path = dir.path().join("lossy.jsonl");
    let opts = WriteOptions {
        encoding: Encoding::Lab,
        ..WriteOptions::default()
    };
    let err = write_examples(&path, full.iter().cloned().map(Ok), &opts).unwrap_err();
    assert!(matches!(err, Error::NotRepresentable { .. }), "{err}");
    let opts = WriteOptions {
        encode: EncodeOptions {
            drop_system_prompt: true,
        },
        ..opts
    };
    assert_eq!(
        write_examples(&path, full.iter().cloned().map(Ok), &opts).unwrap(),
        20
    );
}

#[test]
fn lab_file_text_round_trips_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("in.jsonl");
    let text: String = (0..5)
        .map(|i| format!("{{\"prompt\":\"p{i}\",\"response\":\"r\\n{i}\"}}\n"))
        .collect();
    std::fs::write(&src, &text).unwrap();
    let out = dir.path().join("out.jsonl");
    let opts = WriteOptions {
        encoding: Encoding::Lab,
        ..WriteOptions::default()
    };
    convert(&src, &out, ReaderOptions::default(), &opts).unwrap();
    assert_eq!(std::fs::read_to_string(&out).unwrap(), text);
}

#[test]
fn finetune_export_passes_the_validator_for_both_services() {
    let dir = tempfile::tempdir().unwrap();
    let full_path = dir.path().join("full.jsonl");
    let full: Vec<Example> = (0..12).map(full_example).collect();
    write_examples(&full_path, full.iter().cloned().map(Ok), &WriteOptions::default()).unwrap();

    for target in [FinetuneTarget::OpenAi, FinetuneTarget::Azure] {
        let out = dir.path().join(format!("{target:?}.jsonl"));
        let (conv, report) = export_finetune(&full_path, &out, target, ReaderOptions::default()).unwrap();
        assert_eq!(conv.written, 12);
        assert!(report.is_valid(), "{report}");
        assert!(report.warnings.is_empty(), "{report}");
        assert_eq!(report.examples, 12);
        let bytes = std::fs::read(&out).unwrap();
        assert_eq!(
            bytes.starts_with(b"\xEF\xBB\xBF"),
            target == FinetuneTarget::Azure
        );
        // And our reader reads the export back.
        let back = read_file(&out).unwrap();
        assert_eq!(back.len(), 12);
        assert_eq!(back[3].messages, full[3].messages);
    }
    // The other service's file fails or warns as documented.
    let azure = dir.path().join("Azure.jsonl");
    assert!(
        !validate_finetune_file(dir.path().join("OpenAi.jsonl"), FinetuneTarget::Azure)
            .unwrap()
            .is_valid()
    );
    assert_eq!(
        validate_finetune_file(&azure, FinetuneTarget::OpenAi)
            .unwrap()
            .warnings
            .len(),
        1
    );
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel)
}

#[test]
fn shipped_lab_prompts_load_and_pick_deterministically() {
    let src = LabPrompts {
        path: repo_file("datasets/prompts/lab.jsonl"),
        system: None,
    };
    let prompts = src.load().unwrap();
    assert!(prompts.len() >= 200, "only {} lab prompts", prompts.len());
    assert!(prompts.iter().all(|p| p.metadata.contains_key("category")));
    let a = pick(prompts.clone(), 50, 2026);
    let b = pick(prompts.clone(), 50, 2026);
    assert_eq!(a, b);
    assert_eq!(a.len(), 50);
    assert_ne!(a, pick(prompts, 50, 2027));
}

#[test]
fn shipped_commonsenseqa_sample_loads_with_answer_keys() {
    let src = MultipleChoice {
        path: repo_file("datasets/prompts/commonsenseqa_sample.jsonl"),
        template: MultipleChoiceTemplate::default(),
    };
    let prompts = src.load().unwrap();
    assert!(prompts.len() >= 30);
    for p in &prompts {
        let key = p.metadata["answer_key"].as_str().unwrap();
        let labels: Vec<String> = serde_json::from_value(p.metadata["choice_labels"].clone()).unwrap();
        // A perfect teacher answering with the key scores as correct.
        assert_eq!(extract_choice(key, &labels), Some(key));
        assert!(p.messages[1].content.contains(&format!("{key}. ")));
    }
}
