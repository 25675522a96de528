//! Locates the offline model assets that `cargo xtask setup` fetched (shared by test crates).

use std::path::PathBuf;

/// The SmolLM2-135M-Instruct Q4_1 GGUF. Panics with the fix when set-up has not run.
pub fn smollm2_gguf() -> PathBuf {
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
    let path = home.join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup` first",
        path.display()
    );
    path
}
