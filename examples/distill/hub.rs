//! Model arguments: a `.gguf` file, an HF directory, or a Hugging Face Hub id.

use std::path::PathBuf;

use anyhow::Context;
use distill::student::checkpoint::hub::{HubOptions, locate};

/// Resolves a `--model`-style argument to a local path, honouring `HF_HUB_OFFLINE`.
pub fn resolve(spec: &str) -> anyhow::Result<PathBuf> {
    let offline =
        std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"));
    locate(
        spec,
        &HubOptions {
            offline,
            ..Default::default()
        },
    )
    .with_context(|| format!("resolving model `{spec}`"))
}
