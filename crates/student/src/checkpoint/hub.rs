//! Models from the Hugging Face Hub by id (`distilgpt2`, `HuggingFaceTB/SmolLM2-135M-Instruct`),
//! through hf-hub and its standard cache (`HF_HUB_CACHE`, else `HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`).

use std::fmt;
use std::path::{Path, PathBuf};

use hf_hub::{HFClientBuilder, HFClientSync, HFError};

use crate::error::{Error, Result};

/// How to reach the Hub.
#[derive(Debug, Clone, Default)]
pub struct HubOptions {
    /// Never touch the network; resolve from the cache only (what `HF_HUB_OFFLINE=1` asks for).
    pub offline: bool,
    /// The cache directory, instead of hf-hub's default.
    pub cache_dir: Option<PathBuf>,
    /// A branch, tag or commit; the main branch by default.
    pub revision: Option<String>,
}

/// Files a model directory needs, and those it may have.
const REQUIRED: &[&str] = &["config.json"];
const OPTIONAL: &[&str] = &[
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
];

/// Returns `spec` when it names an existing file or directory; otherwise treats it as a Hub id
/// and returns the local snapshot directory holding its config, weights and tokenizer.
pub fn locate(spec: &str, options: &HubOptions) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    let looks_like_id = !spec.is_empty()
        && spec.split('/').count() <= 2
        && !spec.ends_with(".gguf")
        && spec
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !looks_like_id {
        return Err(Error::NoSuchPath(spec.to_string()));
    }
    download(spec, options)
}

fn download(id: &str, options: &HubOptions) -> Result<PathBuf> {
    let hub_error = |reason: String, source: Option<HFError>| Error::Hub {
        id: id.to_string(),
        reason,
        source: source.map(HubError),
    };
    let setup = |e| hub_error("cannot set up the hf-hub client".into(), Some(e));
    let mut builder = HFClientBuilder::new().retry_max_attempts(2);
    if let Some(dir) = &options.cache_dir {
        builder = builder.cache_dir(dir.clone());
    }
    let client = builder.build().map_err(setup)?;
    let cache = client.cache_dir().to_path_buf();
    let client = HFClientSync::from_inner(client).map_err(setup)?;
    let (owner, name) = match id.split_once('/') {
        Some((owner, name)) => (owner, name),
        // Unprefixed ids such as `distilgpt2` are legacy names without an owner.
        None => ("", id),
    };
    let repo = client.model(owner, name);
    let fetch = |file: &str| {
        repo.download_file()
            .filename(file)
            .maybe_revision(options.revision.clone())
            .local_files_only(options.offline)
            .send()
    };
    let missing = |file: &str, e: HFError| {
        let advice = "pass a local model directory or .gguf file instead";
        match e {
            // The message says all that hf-hub's does.
            HFError::LocalEntryNotFound { .. } if options.offline => hub_error(
                format!(
                    "{file} is not in the Hugging Face cache at {} and offline mode (HF_HUB_OFFLINE) \
                     forbids downloading; {advice}",
                    cache.display()
                ),
                None,
            ),
            e => hub_error(
                format!(
                    "{file} could not be {}, and the cache at {} does not have it; {advice}",
                    if options.offline { "read" } else { "downloaded" },
                    cache.display()
                ),
                Some(e),
            ),
        }
    };
    let mut snapshot = None;
    for file in REQUIRED {
        let path = fetch(file).map_err(|e| missing(file, e))?;
        snapshot = path.parent().map(Path::to_path_buf);
    }
    for file in OPTIONAL {
        let _ = fetch(file);
    }
    match fetch("model.safetensors.index.json") {
        Ok(index) => {
            let text = std::fs::read_to_string(&index).map_err(|source| Error::Io {
                path: index.clone(),
                source,
            })?;
            let json: serde_json::Value = serde_json::from_str(&text).map_err(|source| Error::Json {
                path: index.clone(),
                source,
            })?;
            let mut shards: Vec<&str> = json["weight_map"]
                .as_object()
                .into_iter()
                .flatten()
                .filter_map(|(_, v)| v.as_str())
                .collect();
            shards.sort_unstable();
            shards.dedup();
            for shard in shards {
                fetch(shard).map_err(|e| missing(shard, e))?;
            }
        }
        Err(_) => {
            fetch("model.safetensors").map_err(|e| missing("model.safetensors", e))?;
        }
    }
    snapshot.ok_or_else(|| hub_error("hf-hub returned no directory".into(), None))
}

/// An hf-hub error, shown by the house rule. hf-hub repeats some sources in its messages
/// (`HTTP request error: <the reqwest error> (<url>)`, whose reqwest error names the URL too);
/// this says only what failed and leaves the source to the chain, so each cause prints once.
#[derive(Debug)]
pub struct HubError(pub HFError);

impl HubError {
    /// Whether the Hub (or the cache) says the repository, revision or file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.0,
            HFError::RepoNotFound { .. }
                | HFError::RevisionNotFound { .. }
                | HFError::EntryNotFound { .. }
                | HFError::LocalEntryNotFound { .. }
        )
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            HFError::Request { .. } => f.write_str("the HTTP request failed"),
            HFError::Xet { operation, .. } => write!(f, "Xet {operation} failed"),
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for HubError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.0 {
            HFError::Request { source, .. } => Some(source),
            HFError::Xet { source, .. } => Some(source.as_ref()),
            other => std::error::Error::source(other),
        }
    }
}
