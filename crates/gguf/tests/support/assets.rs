//! Locates the offline model assets that `cargo xtask setup` fetched (shared by test crates).

use std::path::PathBuf;

/// The SmolLM2-135M-Instruct Q4_1 GGUF. Panics with the fix when set-up has not run.
#[allow(dead_code)]
pub fn smollm2_gguf() -> PathBuf {
    model("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The Gemma 3 270M Q4_K_M GGUF. Panics with the fix when set-up has not run.
#[allow(dead_code)]
pub fn gemma3_gguf() -> PathBuf {
    model("gemma-3-270m-q4_k_m.gguf")
}

/// A model file in the asset cache. Panics with the fix when set-up has not run.
fn model(file: &str) -> PathBuf {
    let home = std::env::var_os("DISTILL_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"))
                .join("distill")
        });
    let path = home.join("models").join(file);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup` first",
        path.display()
    );
    path
}
