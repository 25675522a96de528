//! Quality of trained students against their teacher on held-out prompts: each model answers
//! the `test` split of a dataset greedily, and is scored with ROUGE-L F1 (distill-eval, equal to
//! rouge-score with the Porter stemmer) against the teacher's answers, and with the
//! negative log-likelihood of the teacher's answers under teacher forcing, per token (nats) and
//! per byte (bits, comparable whatever the tokenizers).
//!
//! ```text
//! cargo run --release --example train_quality -- --dataset datasets/generated/smollm2_lab.jsonl \
//!     --model untrained=~/.cache/distill/models/SmolLM2-135M-Instruct.Q4_1.gguf@0,5,10,15,20,25 \
//!     --model ce=out/ce/final_model --model kd=out/kd/final_model [--json report.json]
//! ```
//!
//! A model is `NAME=DIR` (an HF directory) or `NAME=FILE.gguf[@i,j,k]` (a GGUF, cut to those layers).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use distill::data::{Example, Split};
use distill::eval::rouge::{RougeScorer, RougeType};
use distill::evaluate::teacher_answer_nll;
use distill::student::tch::Device;
use distill::student::tokenizer::{Message, Tokenizer};
use distill::student::{GenerationConfig, LoadedModel, Pretrained, generate, shrink};

struct Args {
    dataset: PathBuf,
    models: Vec<(String, String)>,
    max_new_tokens: usize,
    batch: usize,
    json: Option<PathBuf>,
}

fn parse() -> anyhow::Result<Args> {
    let mut args = Args {
        dataset: PathBuf::from("datasets/generated/smollm2_lab.jsonl"),
        models: Vec::new(),
        max_new_tokens: 128,
        batch: 16,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--dataset" => args.dataset = value.into(),
            "--model" => {
                let (name, path) = value.split_once('=').context("--model NAME=PATH")?;
                args.models.push((name.into(), path.into()));
            }
            "--max-new-tokens" => args.max_new_tokens = value.parse()?,
            "--batch" => args.batch = value.parse()?,
            "--json" => args.json = Some(value.into()),
            _ => bail!("unknown flag {flag}"),
        }
    }
    if args.models.is_empty() {
        bail!("give at least one --model NAME=PATH");
    }
    Ok(args)
}

fn load(spec: &str) -> anyhow::Result<(LoadedModel, Tokenizer)> {
    let (path, layers) = match spec.split_once('@') {
        Some((p, l)) => (p, Some(l)),
        None => (spec, None),
    };
    let path = Path::new(path);
    let model =
        LoadedModel::load(path, Device::Cpu).with_context(|| format!("loading {}", path.display()))?;
    let tokenizer = if path.is_dir() {
        Tokenizer::from_hf_dir(path)?
    } else {
        Tokenizer::from_gguf_file(path)?
    };
    let model = match layers {
        Some(list) => {
            let keep = list
                .split(',')
                .map(str::parse)
                .collect::<Result<Vec<usize>, _>>()?;
            shrink::select_layers(&model, &keep)?
        }
        None => model,
    };
    Ok((model, tokenizer))
}

/// Greedy answers to every example's prompt, batched by prompt length.
fn answers(
    model: &LoadedModel,
    tokenizer: &Tokenizer,
    examples: &[Example],
    args: &Args,
) -> anyhow::Result<Vec<String>> {
    let mut prompts = Vec::with_capacity(examples.len());
    for e in examples {
        let messages: Vec<Message> = e.messages.iter().map(Message::from).collect();
        let text = tokenizer.render_chat(&messages, true)?;
        prompts.push(
            tokenizer
                .encode(&text, false)?
                .into_iter()
                .map(i64::from)
                .collect::<Vec<_>>(),
        );
    }
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| prompts[i].len());
    let config = GenerationConfig {
        max_new_tokens: args.max_new_tokens,
        stop_tokens: tokenizer.eos_token_ids().iter().map(|&t| i64::from(t)).collect(),
        pad_token: tokenizer.pad_token_id().map_or(0, i64::from),
        ..GenerationConfig::default()
    };
    let mut out = vec![String::new(); prompts.len()];
    for chunk in order.chunks(args.batch) {
        let batch: Vec<Vec<i64>> = chunk.iter().map(|&i| prompts[i].clone()).collect();
        let generated = generate(&model.model, &batch, &config, &mut |_, _| {})?;
        for (&i, ids) in chunk.iter().zip(generated) {
            let ids: Vec<u32> = ids.into_iter().map(|t| t as u32).collect();
            out[i] = tokenizer.decode(&ids, true)?;
        }
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args = parse()?;
    let all = distill::data::read_file(&args.dataset)?;
    let test: Vec<Example> = all.into_iter().filter(|e| e.split == Some(Split::Test)).collect();
    if test.is_empty() {
        bail!("{}: no `test` examples", args.dataset.display());
    }
    let references: Vec<&str> = test.iter().map(|e| e.response.as_str()).collect();
    let scorer = RougeScorer::new(&[RougeType::L], true)?;
    println!("{} held-out prompts from {}", test.len(), args.dataset.display());
    println!(
        "| model | ROUGE-L F1 vs teacher | teacher-token CE (nats) | bits per byte | mean answer words | seconds |"
    );
    println!("|---|---|---|---|---|---|");
    let mut report = Vec::new();
    for (name, spec) in &args.models {
        let started = Instant::now();
        let (model, tokenizer) = load(spec)?;
        let pretrained = Pretrained { model, tokenizer };
        let (model, tokenizer) = (&pretrained.model, &pretrained.tokenizer);
        let outputs = answers(model, tokenizer, &test, &args)?;
        let rouge: f64 = references
            .iter()
            .zip(&outputs)
            .map(|(r, o)| scorer.score(r, o).get(RougeType::L).map_or(0.0, |s| s.fmeasure))
            .sum::<f64>()
            / test.len() as f64;
        let nll = teacher_answer_nll(&pretrained, &test, 1024)?;
        let (ce, bpb) = (nll.nats / nll.tokens as f64, nll.bits_per_byte());
        let words = outputs
            .iter()
            .map(|o| o.split_whitespace().count())
            .sum::<usize>() as f64
            / test.len() as f64;
        let secs = started.elapsed().as_secs_f64();
        println!("| {name} | {rouge:.4} | {ce:.4} | {bpb:.4} | {words:.1} | {secs:.0} |");
        report.push(serde_json::json!({
            "model": name, "source": spec, "rouge_l_f1": rouge, "teacher_token_ce": ce, "bits_per_byte": bpb,
            "mean_answer_words": words, "samples": outputs.iter().take(3).collect::<Vec<_>>(),
        }));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}
