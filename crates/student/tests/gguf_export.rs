//! GGUF export: what we write reads back through our own loader with the same weights (f32) or
//! close ones (f16, Q8_0). `scripts/check_gguf_llama_cpp.py` checks the same files with llama.cpp.

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;

use std::path::Path;

use distill_student::checkpoint::gguf_export::{GgufQuant, export_gguf};
use distill_student::{ForwardInput, GenerationConfig, Pretrained, generate};
use serde_json::Value;
use tch::{Device, Tensor};

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/smollm2.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn smollm2_exported_as_gguf_reloads_and_generates_the_same() {
    let source = Pretrained::load(assets::smollm2_gguf(), Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let expected = fixture();
    let ids = Tensor::from_slice(&[1i64, 504, 3575, 282, 4649, 314]).reshape([1, 6]);
    let _guard = tch::no_grad_guard();
    let logits = |m: &Pretrained| m.model.model.forward(&ForwardInput::new(&ids), None);
    let reference = logits(&source);

    // Q8_0 re-quantizes the Q4_1 weights (max error amax/254 per weight): logits move by ~1 of ~20.
    for (quant, tolerance) in [(GgufQuant::F32, 0.0), (GgufQuant::Q8_0, 1.5)] {
        let path = dir.path().join(format!("{quant:?}.gguf"));
        export_gguf(&source, &path, quant).unwrap();
        let reloaded = Pretrained::load(&path, Device::Cpu).unwrap();
        assert_eq!(
            reloaded.tokenizer.vocab_hash(),
            source.tokenizer.vocab_hash(),
            "{quant:?}"
        );
        assert_eq!(reloaded.model.parameter_count(), source.model.parameter_count());
        let diff = (logits(&reloaded) - &reference).abs().max().double_value(&[]);
        assert!(diff <= tolerance, "{quant:?}: logits differ by {diff}");

        let case = &expected["generations"][0];
        let prompt: Vec<i64> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let want: Vec<i64> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let config = GenerationConfig {
            max_new_tokens: 8,
            ..Default::default()
        };
        let got = generate(&reloaded.model.model, &[prompt], &config, &mut |_, _| {}).unwrap();
        assert_eq!(got[0], want[..8], "{quant:?}: 'The capital of France is Paris.'");
    }
}
