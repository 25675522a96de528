//! Hub ids resolve from the standard Hugging Face cache layout, and offline misses fail fast
//! with the id, the cache path checked and what to do instead.

use std::path::Path;
use std::time::Instant;

use distill_student::checkpoint::hub::{HubOptions, locate};
use distill_student::{ErrorKind, LoadedModel};
use tch::Device;

#[test]
fn a_cached_model_resolves_offline_and_loads() {
    let cache = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let repo = cache.path().join("models--distill-test--tiny-gpt2");
    let snapshot = repo.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/tiny_gpt2");
    for file in ["config.json", "model.safetensors", "generation_config.json"] {
        std::fs::copy(fixture.join(file), snapshot.join(file)).unwrap();
    }
    let options = HubOptions {
        offline: true,
        cache_dir: Some(cache.path().into()),
        revision: None,
    };
    let dir = locate("distill-test/tiny-gpt2", &options).unwrap();
    assert_eq!(
        std::fs::canonicalize(&dir).unwrap(),
        std::fs::canonicalize(&snapshot).unwrap()
    );
    let model = LoadedModel::load(&dir, Device::Cpu).unwrap();
    assert_eq!(model.config.layer_count(), 2);
}

#[test]
fn an_uncached_model_offline_fails_fast_with_the_cache_path() {
    let cache = tempfile::tempdir().unwrap();
    let options = HubOptions {
        offline: true,
        cache_dir: Some(cache.path().into()),
        revision: None,
    };
    let started = Instant::now();
    let error = locate("distilgpt2", &options).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    // The message says all there is: no hf-hub error is chained to repeat it.
    assert!(std::error::Error::source(&error).is_none(), "{error:?}");
    let error = error.to_string();
    assert!(
        started.elapsed().as_secs_f64() < 10.0,
        "took {:?}",
        started.elapsed()
    );
    assert!(error.contains("distilgpt2"), "{error}");
    assert!(error.contains(&cache.path().display().to_string()), "{error}");
    assert!(
        error.contains("HF_HUB_OFFLINE") && error.contains("local model directory"),
        "{error}"
    );
}

#[test]
fn existing_paths_are_returned_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let options = HubOptions {
        offline: true,
        ..Default::default()
    };
    assert_eq!(
        locate(dir.path().to_str().unwrap(), &options).unwrap(),
        dir.path()
    );
    let error = locate("missing/file.gguf", &options).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert!(error.to_string().contains("no such file"), "{error}");
}
