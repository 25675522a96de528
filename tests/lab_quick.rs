//! `distill lab --quick` end to end on the embedded teacher (SmolLM2 from the asset cache):
//! every stage runs, the run directory holds what the lab promises, and a second run in the
//! same directory resumes (nothing redone) or refuses another configuration.

#[path = "../crates/gguf/tests/support/assets.rs"]
mod assets;

use std::sync::atomic::AtomicBool;

use distill::data::Split;
use distill::evaluate::Role;
use distill::lab::{self, LabConfig, LabEvent, Stage, TeacherChoice};

#[test]
fn quick_lab_fills_its_run_directory_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let teacher = TeacherChoice::Local {
        model: assets::smollm2_gguf(),
    };
    let mut config = LabConfig::new(&run_dir, teacher).quick();
    config.prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/prompts/lab.jsonl").into();
    let stop = AtomicBool::new(false);
    let outcome = lab::run(&config, &stop, &mut |_| {}).unwrap();

    for file in [
        "lab.json",
        "data.jsonl",
        "generation/teacher.jsonl",
        "metrics.jsonl",
        "loss_curve.svg",
        "report.md",
        "report.json",
        "charts.svg",
        "manifest.json",
        "final_model.gguf",
        "final_model/config.json",
        "final_model/model.safetensors",
        "final_model/tokenizer.json",
        "final_model/README.md",
    ] {
        assert!(run_dir.join(file).exists(), "{file} is missing");
    }
    // The dataset: every prompt answered once, in its split, with soft labels and the vocab hash.
    let data = distill::data::read_file(run_dir.join("data.jsonl")).unwrap();
    assert_eq!(data.len(), config.num_prompts);
    let count = |s| data.iter().filter(|e| e.split == Some(s)).count();
    assert_eq!(count(Split::Test), config.test_prompts);
    assert_eq!(count(Split::Val), config.val_prompts);
    for e in &data {
        let logprobs = e.logprobs.as_ref().expect("local teacher answers carry logprobs");
        assert!(
            logprobs
                .iter()
                .all(|t| t.top_logprobs.len() == usize::from(config.top_logprobs))
        );
        assert!(e.metadata.contains_key("teacher_vocab_hash"));
    }
    // The report: teacher, student and untrained student, the teacher reproducing its answers.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["models"].as_array().unwrap().len(), 3);
    let teacher = outcome.report.model(Role::Teacher).unwrap();
    assert!(
        teacher.rouge_l() > 0.9,
        "teacher ROUGE-L vs its own answers: {}",
        teacher.rouge_l()
    );
    let student = outcome.report.model(Role::Student).unwrap();
    assert!(student.parameters < teacher.parameters);
    assert_eq!(student.showcase.len(), 1);
    let card = std::fs::read_to_string(run_dir.join("final_model/README.md")).unwrap();
    assert!(card.starts_with("---\n") && card.contains("base_model:"));
    assert!(
        std::fs::read_to_string(run_dir.join("report.md"))
            .unwrap()
            .contains("machine learning")
    );

    // Run again: generation and training are complete, so they are skipped.
    let mut skipped = Vec::new();
    lab::run(&config, &stop, &mut |e| {
        if let LabEvent::StageSkipped { stage } = e {
            skipped.push(stage)
        }
    })
    .unwrap();
    assert_eq!(skipped, [Stage::Generate, Stage::Train]);

    // Another configuration in the same directory is refused, naming what differs.
    let mut other = config.clone();
    other.seed += 1;
    let err = lab::run(&other, &stop, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("seed"), "{err}");
}
