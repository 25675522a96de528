//! Loading the parity fixtures made by `tests/fixtures/make_fixtures.py`.
#![allow(dead_code)]

use std::path::PathBuf;

use distill_eval::bleu::{BleuConfig, BleuTokenizer, Smoothing};
use serde_json::Value;

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn read_json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    serde_json::from_str(&text).expect("fixture JSON")
}

pub fn read_jsonl(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("fixture JSON line"))
        .collect()
}

/// A `tok/case/smooth` variant key of the fixtures as a config.
pub fn config_of(key: &str, effective_order: bool) -> BleuConfig {
    let parts: Vec<&str> = key.split('/').collect();
    BleuConfig {
        tokenizer: BleuTokenizer::from_name(parts[0]).expect("tokenizer"),
        lowercase: parts[1] == "lc",
        smoothing: Smoothing::from_name(parts[2]).expect("smoothing"),
        effective_order,
        ..BleuConfig::default()
    }
}

pub fn f64_of(v: &Value) -> f64 {
    v.as_f64().expect("number")
}

pub fn str_of(v: &Value) -> &str {
    v.as_str().expect("string")
}

/// Asserts `|a - b| <= 1e-9`, naming what differs.
#[track_caller]
pub fn assert_close(actual: f64, expected: f64, what: &dyn std::fmt::Display) {
    assert!(
        (actual - expected).abs() <= 1e-9,
        "{what}: got {actual}, sacrebleu/rouge-score gave {expected}"
    );
}
