//! Generation speed: batch 1, greedy, 128 new tokens, fp32 on the CPU, for SmolLM2-135M, a
//! 6-layer student made from it (layers 0, 5, …, 25), and a randomly initialised GPT-2 of
//! distilgpt2's shape (the Hub is offline; speed does not depend on the values). The
//! transformers side of the comparison is `benches/generate_peer.py`, run in the same session
//! (see docs/benchmarks.md).

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use distill_student::model::Gpt2Config;
use distill_student::shrink::{evenly_spaced_layers, select_layers};
use distill_student::{GenerationConfig, LoadedModel, Precision, generate};
use tch::Device;

const NEW_TOKENS: usize = 128;

fn prompt() -> Vec<i64> {
    // A fixed 32-token prompt, so both sides decode from the same length.
    (0..32).map(|i| 100 + 37 * i).collect()
}

fn bench_generation(c: &mut Criterion) {
    let mut teacher = LoadedModel::load(assets::smollm2_gguf(), Device::Cpu).unwrap();
    let layers = evenly_spaced_layers(30, 6).unwrap();
    let mut student = select_layers(&teacher, &layers).unwrap();
    teacher.prepare_for_generation(Precision::F32);
    student.prepare_for_generation(Precision::F32);
    let mut distilgpt2 = distilgpt2_shaped();
    distilgpt2.prepare_for_generation(Precision::F32);
    // No stop tokens: always exactly NEW_TOKENS, as the peer forces with min_new_tokens.
    let config = GenerationConfig {
        max_new_tokens: NEW_TOKENS,
        ..Default::default()
    };
    let mut group = c.benchmark_group("generate_greedy_128");
    group.sample_size(10).measurement_time(Duration::from_secs(20));
    group.throughput(Throughput::Elements(NEW_TOKENS as u64));
    let models = [
        ("smollm2_135m", &teacher),
        ("student_6_layers", &student),
        ("distilgpt2_shape", &distilgpt2),
    ];
    for (name, model) in models {
        group.bench_function(name, |b| {
            b.iter(|| generate(&model.model, &[prompt()], &config, &mut |_, _| {}).unwrap())
        });
    }
    group.finish();

    // Eight left-padded prompts (32 down to 28 tokens) decoded together, 64 new tokens each.
    let mut batched = c.benchmark_group("generate_batch8_greedy_64");
    batched.sample_size(10).measurement_time(Duration::from_secs(20));
    batched.throughput(Throughput::Elements(8 * 64));
    let prompts: Vec<Vec<i64>> = (0..8)
        .map(|b| prompt()[..32 - b % 5].iter().map(|t| t + b as i64).collect())
        .collect();
    let config = GenerationConfig {
        max_new_tokens: 64,
        ..Default::default()
    };
    batched.bench_function("smollm2_135m", |b| {
        b.iter(|| generate(&teacher.model, &prompts, &config, &mut |_, _| {}).unwrap())
    });
    // As the local teacher decodes: each prompt prefilled alone, answers batch-invariant.
    let invariant = GenerationConfig {
        batch_invariant: true,
        ..config.clone()
    };
    batched.bench_function("smollm2_135m_batch_invariant", |b| {
        b.iter(|| generate(&teacher.model, &prompts, &invariant, &mut |_, _| {}).unwrap())
    });
    batched.finish();

    let mut prefill = c.benchmark_group("prefill_32_tokens");
    prefill.sample_size(10);
    let ids = tch::Tensor::from_slice(&prompt()).reshape([1, 32]);
    let _guard = tch::no_grad_guard();
    prefill.bench_function("smollm2_135m", |b| {
        b.iter(|| {
            teacher
                .model
                .forward(&distill_student::ForwardInput::new(&ids), None)
        })
    });
    prefill.finish();
}

/// distilgpt2's configuration (6 layers, 768 wide, 12 heads, 50,257 tokens), initialised as
/// transformers initialises GPT-2 (N(0, 0.02)).
fn distilgpt2_shaped() -> LoadedModel {
    let config: Gpt2Config = serde_json::from_value(serde_json::json!({
        "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 6, "n_head": 12,
        "activation_function": "gelu_new", "layer_norm_epsilon": 1e-5,
    }))
    .unwrap();
    let model = LoadedModel::new_gpt2(config, Device::Cpu, "distilgpt2-shape".into()).unwrap();
    distill_student::model::init_like_transformers(&model.vs, &model.config, 0.02);
    model
}

criterion_group!(benches, bench_generation);
criterion_main!(benches);
