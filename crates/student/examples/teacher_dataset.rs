//! Makes a distillation dataset with a local teacher: greedy answers to the lab prompts, with the
//! teacher's own top-k log-probabilities at every response token, written with distill-data's
//! crash-safe writer (rerunning resumes). The first `--train` prompts get `split: train`, the next
//! `--held-out` get `split: test`.
//!
//! ```text
//! cargo run --release -p distill-student --example teacher_dataset -- \
//!     --teacher ~/.cache/distill/models/SmolLM2-135M-Instruct.Q4_1.gguf \
//!     --prompts datasets/prompts/lab.jsonl --output datasets/generated/smollm2_lab.jsonl
//! ```
//!
//! Logprobs come from one teacher-forced forward pass over prompt + answer (the same logits
//! greedy decoding used), so `top_logprobs[0]` is the chosen token.

use std::path::PathBuf;
use std::time::Instant;

use distill_data::prompts::{LabPrompts, PromptSource};
use distill_data::{ExampleWriter, FinishReason, Split, TeacherInfo, TokenLogprob, TopLogprob, Usage};
use distill_student::tokenizer::{Message, Tokenizer};
use distill_student::train::data::{TEACHER_VOCAB_HASH_KEY, token_bytes};
use distill_student::{ForwardInput, GenerationConfig, LoadedModel, generate};
use tch::{Device, Kind, Tensor};

struct Args {
    teacher: PathBuf,
    prompts: PathBuf,
    output: PathBuf,
    train: usize,
    held_out: usize,
    max_new_tokens: usize,
    top_k: i64,
    batch: usize,
    seed: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        teacher: PathBuf::new(),
        prompts: PathBuf::from("datasets/prompts/lab.jsonl"),
        output: PathBuf::from("datasets/generated/smollm2_lab.jsonl"),
        train: 200,
        held_out: 50,
        max_new_tokens: 128,
        top_k: 20,
        batch: 16,
        seed: 7,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--teacher" => a.teacher = value.into(),
            "--prompts" => a.prompts = value.into(),
            "--output" => a.output = value.into(),
            "--train" => a.train = num(&value)?,
            "--held-out" => a.held_out = num(&value)?,
            "--max-new-tokens" => a.max_new_tokens = num(&value)?,
            "--top-k" => a.top_k = num(&value)? as i64,
            "--batch" => a.batch = num(&value)?,
            "--seed" => a.seed = num(&value)? as u64,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if a.teacher.as_os_str().is_empty() {
        return Err("--teacher FILE.gguf is required".into());
    }
    Ok(a)
}

fn logprob_entry(tokenizer: &Tokenizer, id: i64, logprob: f32) -> (String, Vec<u8>, f64) {
    let spelled = tokenizer.id_to_token(id as u32).unwrap_or_default();
    let bytes = token_bytes(&spelled).unwrap_or_else(|| spelled.clone().into_bytes());
    (
        String::from_utf8_lossy(&bytes).into_owned(),
        bytes,
        f64::from(logprob),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse()?;
    let started = Instant::now();
    let model = LoadedModel::load(&args.teacher, Device::Cpu)?;
    let tokenizer = Tokenizer::from_gguf_file(&args.teacher)?;
    let name = args
        .teacher
        .file_stem()
        .map_or("teacher".into(), |s| s.to_string_lossy().into_owned());
    let prompts = LabPrompts {
        path: args.prompts.clone(),
        system: None,
    }
    .load()?;
    let prompts = distill_data::pick(prompts, args.train + args.held_out, args.seed);
    if let Some(dir) = args.output.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut writer = ExampleWriter::open(&args.output)?;
    let stop: Vec<i64> = tokenizer.eos_token_ids().iter().map(|&t| i64::from(t)).collect();
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        stop_tokens: stop.clone(),
        pad_token: tokenizer.pad_token_id().map_or(0, i64::from),
        ..GenerationConfig::default()
    };
    let mut todo: Vec<(usize, Vec<i64>)> = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        if writer.contains(&p.id) {
            continue;
        }
        let messages: Vec<Message> = p.messages.iter().map(Message::from).collect();
        let text = tokenizer.render_chat(&messages, true)?;
        let ids = tokenizer
            .encode(&text, false)?
            .into_iter()
            .map(i64::from)
            .collect();
        todo.push((i, ids));
    }
    // Similar lengths together, so left padding stays small.
    todo.sort_by_key(|(_, ids)| ids.len());
    let total = todo.len();
    let mut done = 0;
    let mut new_tokens = 0usize;
    for chunk in todo.chunks(args.batch) {
        let batch: Vec<Vec<i64>> = chunk.iter().map(|(_, ids)| ids.clone()).collect();
        let outputs = generate(&model.model, &batch, &config, &mut |_, _| {})?;
        for ((i, prompt_ids), answer) in chunk.iter().zip(outputs) {
            let prompt = &prompts[*i];
            new_tokens += answer.len();
            let mut full = prompt_ids.clone();
            full.extend_from_slice(&answer);
            let logits = tch::no_grad(|| {
                let input = Tensor::from_slice(&full).unsqueeze(0);
                model.model.forward(&ForwardInput::new(&input), None)
            });
            let start = prompt_ids.len() as i64 - 1;
            let rows = logits
                .get(0)
                .narrow(0, start, answer.len() as i64)
                .log_softmax(-1, Kind::Float);
            let (values, indices) = rows.topk(args.top_k, -1, true, true);
            let chosen = rows.gather(1, &Tensor::from_slice(&answer).unsqueeze(1), false);
            let values = Vec::<f32>::try_from(values.view(-1))?;
            let indices = Vec::<i64>::try_from(indices.view(-1))?;
            let chosen = Vec::<f32>::try_from(chosen.view(-1))?;
            let k = args.top_k as usize;
            let logprobs = answer
                .iter()
                .enumerate()
                .map(|(j, &id)| {
                    let (token, bytes, logprob) = logprob_entry(&tokenizer, id, chosen[j]);
                    let top_logprobs = (0..k)
                        .map(|r| {
                            let (token, bytes, logprob) =
                                logprob_entry(&tokenizer, indices[j * k + r], values[j * k + r]);
                            TopLogprob {
                                token,
                                bytes: Some(bytes),
                                logprob,
                            }
                        })
                        .collect();
                    TokenLogprob {
                        token,
                        bytes: Some(bytes),
                        logprob,
                        top_logprobs,
                    }
                })
                .collect();
            let ids: Vec<u32> = answer.iter().map(|&t| t as u32).collect();
            let response = tokenizer.decode(&ids, true)?;
            let finished = answer.len() < args.max_new_tokens;
            let mut example = prompt.clone().into_example(response);
            example.teacher = Some(TeacherInfo {
                model: name.clone(),
                provider: "local".into(),
                finish_reason: Some(if finished {
                    FinishReason::Stop
                } else {
                    FinishReason::Length
                }),
                usage: Some(Usage {
                    prompt_tokens: prompt_ids.len() as u64,
                    completion_tokens: answer.len() as u64,
                }),
                latency_ms: None,
                created: None,
            });
            example.logprobs = Some(logprobs);
            example.split = Some(if *i < args.train {
                Split::Train
            } else {
                Split::Test
            });
            example
                .metadata
                .insert(TEACHER_VOCAB_HASH_KEY.into(), tokenizer.vocab_hash().into());
            writer.append(&example)?;
            done += 1;
        }
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{done}/{total} examples, {new_tokens} tokens, {:.1} tok/s",
            new_tokens as f64 / secs
        );
    }
    writer.sync()?;
    eprintln!(
        "wrote {} in {:.0} s",
        args.output.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
