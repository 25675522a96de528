//! Training throughput of the 6-layer SmolLM2 student (layers 0, 5, …, 25 of SmolLM2-135M;
//! 49.5M parameters), fp32 on the CPU, AdamW, batch 8:
//!
//! * `fixed_b8_t256`: 8 × 256 random tokens, every position trained (hard labels);
//! * `lab_variable/{bucketed,random}`: one epoch over 32 real lab examples (teacher answers from
//!   `datasets/generated/smollm2_lab.jsonl`), with length bucketing or random batches; throughput
//!   counts real (unpadded) tokens;
//! * `kd_b8_t256/{stored_top20,online_teacher}`: forward KL at T = 2 from stored top-20 teacher
//!   log-probabilities, or from the full 30-layer teacher run on every step.
//!
//! The transformers + PyTorch side is `benches/train_hf.py`, run in the same session; figures in
//! docs/benchmarks.md.

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;

use std::path::Path;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use distill_data::prompts::SplitMix64;
use distill_student::Pretrained;
use distill_student::shrink::{evenly_spaced_layers, select_layers};
use distill_student::train::data::{Preparer, Sequence, SoftSource, split_examples};
use distill_student::train::{DeviceChoice, LossKind, TrainConfig, Trainer};
use tch::Device;

const BATCH: usize = 8;
const LEN: usize = 256;
const VARIABLE_EXAMPLES: usize = 32;

fn student(full: &Pretrained) -> Pretrained {
    let layers = evenly_spaced_layers(30, 6).unwrap();
    Pretrained {
        model: select_layers(&full.model, &layers).unwrap(),
        tokenizer: full.tokenizer.clone(),
    }
}

fn config(out: &Path, loss: LossKind, bucket_window: usize) -> TrainConfig {
    let mut c = TrainConfig::new("bench", "SmolLM2-135M-Instruct", out);
    c.device = DeviceChoice::Cpu;
    c.loss.kind = loss;
    c.loss.temperature = 2.0;
    c.batch_size = BATCH;
    c.max_seq_len = LEN;
    c.bucket_window = bucket_window;
    c.max_steps = Some(1_000_000);
    c.save_every = 0;
    c
}

/// 16 sequences of 256 random tokens (two batches), all trained; with `top_k`, stored soft targets.
fn random_sequences(vocab: u64, top_k: usize) -> Vec<Sequence> {
    let mut rng = SplitMix64::new(7);
    (0..2 * BATCH)
        .map(|i| {
            let ids: Vec<i64> = (0..=LEN).map(|_| rng.below(vocab) as i64).collect();
            let soft = (0..LEN)
                .map(|_| {
                    // A geometric teacher distribution over k distinct random tokens.
                    let mut seen = Vec::with_capacity(top_k);
                    while seen.len() < top_k {
                        let id = rng.below(vocab) as u32;
                        if !seen.contains(&id) {
                            seen.push(id);
                        }
                    }
                    seen.into_iter()
                        .enumerate()
                        .map(|(j, id)| (id, -(j as f32 + 1.0) * std::f32::consts::LN_2))
                        .collect()
                })
                .collect();
            Sequence {
                id: format!("random-{i}"),
                input_ids: ids[..LEN].to_vec(),
                targets: ids[1..].to_vec(),
                first_target: 0,
                soft,
                spans: Vec::new(),
                truncated: false,
            }
        })
        .collect()
}

fn bench_training(c: &mut Criterion) {
    // The allocator tuning `distill train` applies, so that the bench measures what the CLI runs.
    // `DISTILL_BENCH_MALLOC=default` leaves glibc's defaults, for the comparison in
    // docs/benchmarks.md.
    if !std::env::var("DISTILL_BENCH_MALLOC").is_ok_and(|v| v == "default") {
        distill_student::alloc::keep_freed_memory();
    }
    let gguf = assets::smollm2_gguf();
    let full = Pretrained::load(&gguf, Device::Cpu).unwrap();
    let vocab = full.model.config.vocab_size() as u64;
    let out = tempfile::tempdir().unwrap();

    let mut group = c.benchmark_group("train_step");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements((BATCH * LEN) as u64));
    let mut trainer = Trainer::from_sequences(
        config(out.path(), LossKind::Ce, 1),
        student(&full),
        None,
        random_sequences(vocab, 0),
        vec![],
    )
    .unwrap();
    group.bench_function("fixed_b8_t256", |b| b.iter(|| trainer.step().unwrap()));
    drop(trainer);
    group.finish();

    let dataset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/generated/smollm2_lab.jsonl");
    if dataset.exists() {
        let (train, _) = split_examples(distill_data::read_file(&dataset).unwrap());
        let preparer = Preparer::new(&full.tokenizer, LEN, SoftSource::None).unwrap();
        let take = &train[..VARIABLE_EXAMPLES.min(train.len())];
        let (seqs, stats) = preparer.prepare(take, &dataset).unwrap();
        let mut group = c.benchmark_group("lab_variable");
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(60));
        group.throughput(Throughput::Elements(stats.input_tokens as u64));
        let batches = seqs.len().div_ceil(BATCH);
        // Window 0: random batches, as transformers' Trainer; otherwise the whole subset is one window.
        for (name, window) in [("bucketed", batches), ("random", 0)] {
            let mut trainer = Trainer::from_sequences(
                config(out.path(), LossKind::Ce, window),
                student(&full),
                None,
                seqs.clone(),
                vec![],
            )
            .unwrap();
            // One iteration is one epoch: the same real tokens every time.
            group.bench_function(name, |b| {
                b.iter(|| {
                    for _ in 0..batches {
                        trainer.step().unwrap();
                    }
                })
            });
        }
        group.finish();
    } else {
        eprintln!(
            "skipping lab_variable: {} is missing (make it with `distill generate --provider local --model \
             <SmolLM2 gguf> --top-logprobs 20 --max-tokens 128 --num-examples 250 --output <it>`)",
            dataset.display()
        );
    }

    let mut group = c.benchmark_group("kd_b8_t256");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(60));
    group.throughput(Throughput::Elements((BATCH * LEN) as u64));
    let mut trainer = Trainer::from_sequences(
        config(out.path(), LossKind::Kl, 1),
        student(&full),
        None,
        random_sequences(vocab, 20),
        vec![],
    )
    .unwrap();
    group.bench_function("stored_top20", |b| b.iter(|| trainer.step().unwrap()));
    drop(trainer);
    let mut online = config(out.path(), LossKind::Kl, 1);
    online.teacher_model = Some(gguf.clone());
    let mut trainer = Trainer::from_sequences(
        online,
        student(&full),
        Some(full),
        random_sequences(vocab, 0),
        vec![],
    )
    .unwrap();
    group.bench_function("online_teacher", |b| b.iter(|| trainer.step().unwrap()));
    group.finish();
}

criterion_group!(benches, bench_training);
criterion_main!(benches);
