//! A model loaded for inference from its GGUF blocks takes about the file's size in memory,
//! not the f32 size: peak resident memory from just before loading to the end of 128 greedy
//! tokens, against the file's bytes plus the KV cache's. Alone in its test binary, so that no
//! other test's allocations are measured.
//!
//! The weights and the decoding are measured, not the tokenizer, whose size does not depend on
//! the weights' format: `distill chat` reports both together (docs/benchmarks.md).

#[path = "../crates/gguf/tests/support/assets.rs"]
mod assets;

use distill::eval::memory;
use distill::student::tch::{Device, Kind, Tensor};
use distill::student::{CausalLm, GenerationConfig, InferenceDtype, LoadedModel, generate};

#[test]
fn a_quantized_load_takes_about_the_file_size() {
    let path = assets::smollm2_gguf();
    let file = std::fs::metadata(&path).unwrap().len();
    // libtorch's own first-use allocations belong to the process, not to the model.
    let warm = Tensor::ones([64, 64], (Kind::Float, Device::Cpu));
    drop(warm.matmul(&warm));
    let before = memory::start_peak_measurement().unwrap();
    let model = LoadedModel::load_for_inference(&path, Device::Cpu, InferenceDtype::Native).unwrap();
    let loaded = memory::current_rss_bytes().unwrap() - before;
    let prompt: Vec<i64> = (0..40).map(|i| 100 + i * 37).collect();
    let config = GenerationConfig {
        max_new_tokens: 128,
        stop_tokens: Vec::new(),
        ..GenerationConfig::default()
    };
    let out = generate(
        &model.model,
        std::slice::from_ref(&prompt),
        &config,
        &mut |_, _| {},
    )
    .unwrap();
    let peak = memory::peak_rss_bytes().unwrap() - before;

    let CausalLm::CpuLlama(cpu) = &model.model else {
        panic!("a native load of a quantized GGUF is a CpuLlama")
    };
    let c = cpu.config();
    let positions = (prompt.len() + out[0].len()) as u64;
    let kv = (c.num_hidden_layers * 2 * c.kv_heads() * c.head_width()) as u64 * positions * 4;
    let bound = file * 13 / 10 + kv;
    let mb = |b: u64| b as f64 / 1e6;
    eprintln!(
        "file {:.1} MB, weights {:.1} MB; resident after loading +{:.1} MB, peak +{:.1} MB over {} positions \
         (KV cache {:.1} MB); 1.3 x file + KV = {:.1} MB",
        mb(file),
        mb(cpu.weight_bytes()),
        mb(loaded),
        mb(peak),
        positions,
        mb(kv),
        mb(bound)
    );
    assert_eq!(out[0].len(), 128);
    assert!(
        peak <= bound,
        "peak {peak} bytes over the pre-load size, for a {file}-byte file and a {kv}-byte KV cache"
    );
}
