//! The offline model assets that `cargo xtask setup` fetched.

use std::path::PathBuf;

/// The asset cache: `$DISTILL_HOME`, else `$XDG_CACHE_HOME/distill`, else `~/.cache/distill`
/// (the same rule as `cargo xtask assets`).
pub fn home() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|d| !d.is_empty()).map(PathBuf::from);
    var("DISTILL_HOME").unwrap_or_else(|| {
        var("XDG_CACHE_HOME")
            .unwrap_or_else(|| var("HOME").unwrap_or_default().join(".cache"))
            .join("distill")
    })
}

/// SmolLM2-135M-Instruct, the embedded teacher.
pub fn smollm2_gguf() -> PathBuf {
    home().join("models").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}
