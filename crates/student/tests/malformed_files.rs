//! The malformed-checkpoint corpus (`tests/fixtures/malformed`, written by its script): each
//! mutant of a tiny valid GGUF file and HF directory breaks one size, offset, count, type or
//! config value. Loading one must fail with an error that names the file, with each cause in
//! its chain once, never panic, and never allocate what the file cannot back; the valid
//! originals load.

#[path = "../../gguf/tests/support/chain.rs"]
mod chain;

use std::path::{Path, PathBuf};

use distill_student::LoadedModel;
use tch::Device;

fn corpus(kind: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/malformed")
        .join(kind);
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_none_or(|e| e != "py"))
        .collect();
    paths.sort();
    paths
}

/// Loads every entry; returns (name, error message) of the failures, after checking that only
/// `valid` loaded.
fn load_all(kind: &str, valid: &str) -> Vec<(String, String)> {
    let mut failures = Vec::new();
    for path in corpus(kind) {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let loaded = std::panic::catch_unwind(|| LoadedModel::load(&path, Device::Cpu))
            .unwrap_or_else(|_| panic!("{name}: loading panicked"));
        match loaded {
            Ok(model) => assert_eq!(
                name,
                valid,
                "{name} loaded ({} parameters)",
                model.parameter_count()
            ),
            Err(e) => {
                assert_ne!(name, valid, "the valid file failed: {e}");
                failures.push((name, chain::chain_line(&e)));
            }
        }
    }
    failures
}

/// Loads the corpus `kind` and checks every mutant failed with an error naming its path.
fn check_corpus(kind: &str, valid: &str, at_least: usize) {
    let failures = load_all(kind, valid);
    assert!(failures.len() >= at_least, "only {} mutants", failures.len());
    for (name, message) in &failures {
        eprintln!("{name}: {message}");
        assert!(
            message.contains(&format!("/{name}")),
            "{name}: the error does not name its path: {message}"
        );
    }
}

#[test]
fn malformed_gguf_files_fail_with_an_error_naming_the_file() {
    check_corpus("gguf", "valid.gguf", 25);
}

#[test]
fn malformed_safetensors_directories_fail_with_an_error_naming_the_directory() {
    check_corpus("safetensors", "valid", 18);
}
