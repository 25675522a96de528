//! Our CPU decoder on quantized SmolLM2 against llama.cpp on the same GGUF: logits at every
//! position of five prompts and their greedy continuations, and the greedy tokens themselves.
//! The fixtures were recorded by `scripts/llama_cpp_logits.py` (llama-cpp-python); no Python
//! runs here.

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;

use std::path::Path;

use distill_student::checkpoint::gguf_export::{GgufQuant, export_gguf};
use distill_student::tch::{self, Device, Kind, Tensor};
use distill_student::{ForwardInput, GenerationConfig, InferenceDtype, LoadedModel, Pretrained, generate};
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// The greedy choice must agree with llama.cpp's wherever llama.cpp's top two logits are at
/// least this far apart (below it, summation order may swap them).
const DECISIVE_MARGIN: f32 = 0.5;

#[derive(Deserialize)]
struct Fixture {
    model_sha256: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt_ids: Vec<i64>,
    greedy_ids: Vec<i64>,
    steps: Vec<Step>,
}

/// One predicted position: llama.cpp's ten largest logits, and the gap between its top two.
#[derive(Deserialize)]
struct Step {
    top_ids: Vec<i64>,
    top_logits: Vec<f32>,
    margin: f32,
}

fn fixture(name: &str) -> Fixture {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/llama_cpp")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn sha256(path: &Path) -> String {
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the comparison found over a whole fixture.
#[derive(Default, Debug)]
struct Agreement {
    /// Largest |ours − llama.cpp| over llama.cpp's top ten logits at every position.
    worst_logit_diff: f32,
    /// The mean of the same differences.
    mean_logit_diff: f32,
    /// Positions where llama.cpp's margin is decisive, and how many of them we agree on.
    decisive: usize,
    decisive_agreed: usize,
    /// Positions in all, and how many of them we agree on.
    positions: usize,
    agreed: usize,
    /// Free-running greedy tokens equal to llama.cpp's before its first indecisive step, of
    /// how many such tokens.
    greedy_prefix_equal: usize,
    greedy_prefix_len: usize,
}

/// Runs the fixture's prompts through `model`: teacher-forced on llama.cpp's continuation (the
/// prefill path, every position at once), then free-running greedy (the decoding path).
fn compare(model: &LoadedModel, fixture: &Fixture) -> Agreement {
    let _guard = tch::no_grad_guard();
    let mut found = Agreement::default();
    let mut compared = 0usize;
    for case in &fixture.cases {
        let mut ids = case.prompt_ids.clone();
        ids.extend(&case.greedy_ids[..case.greedy_ids.len() - 1]);
        let input = Tensor::from_slice(&ids).unsqueeze(0);
        let logits = model.model.forward(&ForwardInput::new(&input), None);
        let first = case.prompt_ids.len() - 1;
        let logits = logits
            .squeeze_dim(0)
            .narrow(0, first as i64, case.steps.len() as i64);
        let logits: Vec<Vec<f32>> = Vec::try_from(logits.to_kind(Kind::Float)).unwrap();
        for (row, step) in logits.iter().zip(&case.steps) {
            for (&id, &want) in step.top_ids.iter().zip(&step.top_logits) {
                let diff = (row[id as usize] - want).abs();
                found.worst_logit_diff = found.worst_logit_diff.max(diff);
                found.mean_logit_diff += diff;
                compared += 1;
            }
            let ours = argmax(row);
            found.positions += 1;
            found.agreed += usize::from(ours == step.top_ids[0]);
            if step.margin >= DECISIVE_MARGIN {
                found.decisive += 1;
                found.decisive_agreed += usize::from(ours == step.top_ids[0]);
            }
        }

        let config = GenerationConfig {
            max_new_tokens: case.greedy_ids.len(),
            ..Default::default()
        };
        let ours = generate(
            &model.model,
            std::slice::from_ref(&case.prompt_ids),
            &config,
            &mut |_, _| {},
        )
        .unwrap();
        let decisive_prefix = case
            .steps
            .iter()
            .take_while(|s| s.margin >= DECISIVE_MARGIN)
            .count();
        let equal = ours[0]
            .iter()
            .zip(&case.greedy_ids)
            .take(decisive_prefix)
            .take_while(|(a, b)| a == b)
            .count();
        found.greedy_prefix_equal += equal;
        found.greedy_prefix_len += decisive_prefix;
    }
    found.mean_logit_diff /= compared.max(1) as f32;
    found
}

fn argmax(row: &[f32]) -> i64 {
    let best = row
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(i, _)| i);
    best.unwrap() as i64
}

/// Tolerances on the logits, against llama.cpp's top ten at each position.
struct Tolerance {
    worst: f32,
    mean: f32,
}

fn assert_agrees(label: &str, found: &Agreement, tolerance: Tolerance) {
    eprintln!("{label}: {found:?}");
    assert!(
        found.worst_logit_diff <= tolerance.worst && found.mean_logit_diff <= tolerance.mean,
        "{label}: logits differ from llama.cpp's by up to {} and {} on average (tolerances {} and {})",
        found.worst_logit_diff,
        found.mean_logit_diff,
        tolerance.worst,
        tolerance.mean
    );
    assert_eq!(
        found.decisive_agreed, found.decisive,
        "{label}: greedy choice differs from llama.cpp's where its margin is at least {DECISIVE_MARGIN}"
    );
    assert_eq!(
        found.greedy_prefix_equal, found.greedy_prefix_len,
        "{label}: free-running greedy output leaves llama.cpp's before an indecisive step"
    );
}

/// Both sides quantize each layer's inputs to 8 bits per 32 values, and a value on a rounding
/// boundary in one and not the other moves by a step that 30 layers carry on: measured, the
/// logits differ by up to 1.35 (Q4_1) and 1.18 (Q8_0), 0.18 and 0.19 on average, with logits up
/// to about 36. The float paths agree to 0.02 on the same positions (the f32 test below), so
/// the difference is that quantization noise, not the model.
const QUANTIZED: Tolerance = Tolerance {
    worst: 2.5,
    mean: 0.3,
};

/// Our export of the shipped model in `quant`, checked to be the file the fixture was recorded
/// on: the same export must give the same bytes, or the comparison would be of other weights.
fn exported(dir: &Path, quant: GgufQuant, fixture: &Fixture) -> std::path::PathBuf {
    // The file's stem becomes its `general.name`: named as the fixture's script names it.
    let path = dir.join(format!("smollm2-{}.gguf", format!("{quant:?}").to_lowercase()));
    let source = Pretrained::load(assets::smollm2_gguf(), Device::Cpu).unwrap();
    export_gguf(&source, &path, quant).unwrap();
    assert_eq!(
        sha256(&path),
        fixture.model_sha256,
        "our {quant:?} export changed"
    );
    path
}

#[test]
fn shipped_q4_1_decodes_as_llama_cpp_does() {
    let path = assets::smollm2_gguf();
    let fixture = fixture("smollm2_q4_1.json");
    assert_eq!(
        sha256(&path),
        fixture.model_sha256,
        "the fixture was recorded on another file"
    );
    let model = LoadedModel::load_for_inference(&path, Device::Cpu, InferenceDtype::Native).unwrap();
    assert_agrees("native Q4_1", &compare(&model, &fixture), QUANTIZED);
}

#[test]
fn q8_0_export_decodes_as_llama_cpp_does() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture("smollm2_q8_0.json");
    let path = exported(dir.path(), GgufQuant::Q8_0, &fixture);
    let model = LoadedModel::load_for_inference(&path, Device::Cpu, InferenceDtype::Native).unwrap();
    assert_agrees("native Q8_0", &compare(&model, &fixture), QUANTIZED);
}

#[test]
fn f32_export_decodes_as_llama_cpp_does_to_float_rounding() {
    // No 8-bit inputs on either side: what is left is summation order (measured: 0.021 at
    // most, 0.003 on average, every top-1 equal).
    let dir = tempfile::tempdir().unwrap();
    let fixture = fixture("smollm2_f32.json");
    let path = exported(dir.path(), GgufQuant::F32, &fixture);
    let model = LoadedModel::load_for_inference(&path, Device::Cpu, InferenceDtype::F32).unwrap();
    let found = compare(&model, &fixture);
    assert_agrees(
        "f32",
        &found,
        Tolerance {
            worst: 0.1,
            mean: 0.01,
        },
    );
    assert_eq!(
        found.agreed, found.positions,
        "f32: top-1 differs from llama.cpp's"
    );
}
