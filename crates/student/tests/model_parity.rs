//! Model parity with transformers: tiny random Llamas to 1e-4 on logits, and SmolLM2 from the
//! offline GGUF (dequantized weights to 1e-6, greedy tokens identical). Fixtures and the script
//! that made them are in `tests/fixtures/model/`.

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;

use std::path::{Path, PathBuf};

use distill_student::{ForwardInput, GenerationConfig, LoadedModel, Precision, generate};
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model")
        .join(name)
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn tensor_2d_i64(v: &Value) -> Tensor {
    let rows: Vec<Vec<i64>> = serde_json::from_value(v.clone()).unwrap();
    let width = rows[0].len() as i64;
    Tensor::from_slice(&rows.concat()).reshape([rows.len() as i64, width])
}

fn tensor_3d_f32(v: &Value) -> Tensor {
    let rows: Vec<Vec<Vec<f32>>> = serde_json::from_value(v.clone()).unwrap();
    let (a, b, c) = (rows.len() as i64, rows[0].len() as i64, rows[0][0].len() as i64);
    Tensor::from_slice(&rows.concat().concat()).reshape([a, b, c])
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn check_tiny(name: &str) {
    let dir = fixture(name);
    let model = LoadedModel::load(&dir, Device::Cpu).unwrap();
    let expected = json(&dir.join("logits.json"));
    let ids = tensor_2d_i64(&expected["input_ids"]);
    let _guard = tch::no_grad_guard();

    let logits = model.model.forward(&ForwardInput::new(&ids), None);
    let diff = max_abs_diff(&logits, &tensor_3d_f32(&expected["logits"]));
    assert!(diff <= 1e-4, "{name}: logits differ by {diff}");

    // Left padding: compare only the real positions of the padded row, and the full other row.
    let mask = tensor_2d_i64(&expected["attention_mask"]);
    let input = ForwardInput {
        input_ids: &ids,
        attention_mask: Some(&mask),
    };
    let padded = model.model.forward(&input, None);
    let want = tensor_3d_f32(&expected["padded_logits"]);
    let real = mask.to_kind(Kind::Bool).unsqueeze(-1);
    let diff = max_abs_diff(&padded.masked_select(&real), &want.masked_select(&real));
    assert!(diff <= 1e-4, "{name}: padded logits differ by {diff}");

    // The generation layout changes strides only; bf16 stays close to the f32 reference.
    // Llamas decode on their own kernels in every precision, which read row-major weights;
    // libtorch's decoding (GPT-2 in bf16) reads column-major ones.
    let want = tensor_3d_f32(&expected["logits"]);
    let column_major = |m: &LoadedModel| {
        m.vs.variables()
            .values()
            .filter(|v| v.dim() == 2 && v.stride()[0] == 1)
            .count()
    };
    let mut prepared = LoadedModel::load(&dir, Device::Cpu).unwrap();
    prepared.prepare_for_generation(Precision::F32);
    let llama = prepared.config.as_llama().is_some();
    assert_eq!(
        column_major(&prepared) == 0,
        llama,
        "{name}: layout for f32 generation"
    );
    let diff = max_abs_diff(&prepared.model.forward(&ForwardInput::new(&ids), None), &want);
    assert!(
        diff <= 1e-4,
        "{name}: logits in the generation layout differ by {diff}"
    );
    let mut bf16 = LoadedModel::load(&dir, Device::Cpu).unwrap();
    bf16.prepare_for_generation(Precision::Bf16);
    assert_eq!(
        column_major(&bf16) == 0,
        llama,
        "{name}: layout for bf16 generation"
    );
    let logits = bf16.model.forward(&ForwardInput::new(&ids), None);
    assert_eq!(logits.kind(), Kind::BFloat16);
    let scale = want.abs().max().double_value(&[]);
    let diff = max_abs_diff(&logits.to_kind(Kind::Float), &want);
    eprintln!("{name}: bf16 max diff {diff} (largest logit {scale})");
    assert!(
        diff <= 0.05 * scale,
        "{name}: bf16 logits differ by {diff} (largest {scale})"
    );
}

#[test]
fn tiny_llama_with_gqa_tied_head_and_llama3_rope_matches_transformers() {
    check_tiny("tiny_llama_gqa");
}

#[test]
fn tiny_llama_with_attention_bias_and_untied_head_matches_transformers() {
    check_tiny("tiny_llama_bias");
}

#[test]
fn tiny_gemma3_with_sliding_windows_two_rope_bases_and_qk_norms_matches_transformers() {
    check_tiny("tiny_gemma3");
}

#[test]
fn cached_decoding_equals_a_full_forward() {
    // Gemma 3's sliding window (4) is shorter than the sequence, so the cache must drop keys.
    for name in ["tiny_llama_gqa", "tiny_gemma3"] {
        let model = LoadedModel::load(fixture(name), Device::Cpu).unwrap();
        let ids = Tensor::from_slice(&[5i64, 17, 42, 8, 99, 3, 64]).reshape([1, 7]);
        let _guard = tch::no_grad_guard();
        let full = model.model.forward(&ForwardInput::new(&ids), None);
        let mut cache = distill_student::KvCache::new(model.model.layer_count());
        let head = ids.narrow(1, 0, 4);
        let mut steps = vec![model.model.forward(&ForwardInput::new(&head), Some(&mut cache))];
        for t in 4..7 {
            steps.push(
                model
                    .model
                    .forward(&ForwardInput::new(&ids.narrow(1, t, 1)), Some(&mut cache)),
            );
        }
        let diff = max_abs_diff(&full, &Tensor::cat(&steps, 1));
        assert!(diff <= 1e-5, "{name}: cached logits differ by {diff}");
    }
}

#[test]
fn smollm2_gguf_matches_transformers_weights_and_greedy_tokens() {
    let expected = json(&fixture("smollm2.json"));
    let mut model = LoadedModel::load(assets::smollm2_gguf(), Device::Cpu).unwrap();
    assert_eq!(model.parameter_count(), 134_515_008);

    let vars = model.vs.variables();
    for (name, sample) in expected["samples"].as_object().unwrap() {
        let flat = vars[name].flatten(0, -1);
        let shape: Vec<i64> = serde_json::from_value(sample["shape"].clone()).unwrap();
        assert_eq!(vars[name].size(), shape, "{name}");
        let indices: Vec<i64> = serde_json::from_value(sample["indices"].clone()).unwrap();
        let values: Vec<f32> = serde_json::from_value(sample["values"].clone()).unwrap();
        let ours = Vec::<f32>::try_from(flat.index_select(0, &Tensor::from_slice(&indices))).unwrap();
        for (i, (a, b)) in ours.iter().zip(&values).enumerate() {
            assert!((a - b).abs() <= 1e-6, "{name}[{}]: {a} vs {b}", indices[i]);
        }
    }

    // As loaded, then in the generation layout (fused projections).
    for prepared in [false, true] {
        if prepared {
            model.prepare_for_generation(Precision::F32);
        }
        for case in expected["generations"].as_array().unwrap() {
            let prompt: Vec<i64> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
            let want: Vec<i64> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
            let config = GenerationConfig {
                max_new_tokens: want.len(),
                ..Default::default()
            };
            let got = generate(&model.model, &[prompt], &config, &mut |_, _| {}).unwrap();
            assert_eq!(
                got[0], want,
                "greedy tokens for {} (prepared: {prepared})",
                case["messages"]
            );
        }
    }
}

#[test]
fn selecting_every_layer_keeps_the_logits_and_fewer_layers_change_them() {
    let model = LoadedModel::load(fixture("tiny_llama_bias"), Device::Cpu).unwrap();
    let ids = Tensor::from_slice(&[5i64, 17, 42, 8]).reshape([1, 4]);
    let _guard = tch::no_grad_guard();
    let logits = |m: &LoadedModel| m.model.forward(&ForwardInput::new(&ids), None);
    let all = distill_student::shrink::select_layers(&model, &[0, 1]).unwrap();
    assert_eq!(max_abs_diff(&logits(&model), &logits(&all)), 0.0);
    let one = distill_student::shrink::select_layers(&model, &[1]).unwrap();
    assert!(max_abs_diff(&logits(&model), &logits(&one)) > 1e-3);
    assert!(one.parameter_count() < model.parameter_count());
    assert!(distill_student::shrink::select_layers(&model, &[2]).is_err());

    // Gemma 3's kept layers keep their attention type: all four give the same logits, and the
    // global layer (2) kept alone stays global.
    let gemma = LoadedModel::load(fixture("tiny_gemma3"), Device::Cpu).unwrap();
    let all = distill_student::shrink::select_layers(&gemma, &[0, 1, 2, 3]).unwrap();
    assert_eq!(max_abs_diff(&logits(&gemma), &logits(&all)), 0.0);
    let global = distill_student::shrink::select_layers(&gemma, &[2]).unwrap();
    let config = global.config.clone();
    let distill_student::model::ModelConfig::Gemma3(config) = config else {
        panic!("a Gemma 3 stays a Gemma 3")
    };
    assert!(!config.is_sliding(0));
}

#[test]
fn tiny_gpt2_matches_transformers() {
    check_tiny("tiny_gpt2");
}

#[test]
fn saved_hf_directories_reload_with_identical_logits() {
    let ids = Tensor::from_slice(&[5i64, 17, 42, 8]).reshape([1, 4]);
    let _guard = tch::no_grad_guard();
    for name in ["tiny_gpt2", "tiny_llama_gqa", "tiny_llama_bias", "tiny_gemma3"] {
        let model = LoadedModel::load(fixture(name), Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        distill_student::checkpoint::hf::save_dir(&model, dir.path()).unwrap();
        let reloaded = LoadedModel::load(dir.path(), Device::Cpu).unwrap();
        let before = model.model.forward(&ForwardInput::new(&ids), None);
        let after = reloaded.model.forward(&ForwardInput::new(&ids), None);
        assert_eq!(max_abs_diff(&before, &after), 0.0, "{name}");
    }
}
