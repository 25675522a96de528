//! Trainer checkpoints: `checkpoints/step-NNNNNNNN/` holding the weights, the optimizer moments and
//! the trainer state. A checkpoint is written into a temporary directory, synced, and renamed, so
//! a crash leaves either the whole checkpoint or none of it; the newest complete one is resumed,
//! and only by a run with the same [`Fingerprint`].

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::Tensor;

use super::batch::DataPosition;
use super::config::TrainConfig;
use super::data::Sequence;
use super::error::{Error, Result};
use super::optim::LossScaler;

const STATE_FILE: &str = "trainer_state.json";
const MODEL_FILE: &str = "model.safetensors";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";
const PREFIX: &str = "step-";
const TMP_PREFIX: &str = ".tmp-";

/// Version of the checkpoint layout.
pub const STATE_VERSION: u32 = 1;

/// The best validation result so far.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    /// The step it was measured after.
    pub step: u64,
    /// Validation loss (teacher-token cross-entropy).
    pub val_loss: f64,
}

/// Everything besides tensors that a resumed run needs to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Layout version ([`STATE_VERSION`]).
    pub version: u32,
    /// Optimizer steps completed.
    pub step: u64,
    /// The next batch to read.
    pub position: DataPosition,
    /// Total steps the schedule was planned for.
    pub total_steps: u64,
    /// Loss scaler (f16).
    pub scaler: LossScaler,
    /// Best validation result so far.
    pub best: Option<Best>,
    /// Evaluations since the best one (early stopping).
    pub evals_since_best: u32,
    /// Consecutive skipped (non-finite) steps.
    pub bad_steps: u32,
    /// Real input tokens trained on so far.
    pub tokens_seen: u64,
    /// Seconds of training so far (for throughput and ETA across restarts).
    pub elapsed_seconds: f64,
    /// Settings that must not change across a resume (see [`Fingerprint`]).
    pub fingerprint: Fingerprint,
}

/// The settings that decide a run's trajectory; a resume with other values would not continue
/// the same run, so it is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// Hash of the training sequences (ids, tokens, soft targets).
    pub data_hash: String,
    /// Seed.
    pub seed: u64,
    /// The training configuration, less the fields that may change on resume (JSON).
    pub config: serde_json::Value,
}

impl Fingerprint {
    /// The fingerprint of a run of `config` on the training sequences `train`.
    pub fn new(config: &TrainConfig, train: &[Sequence]) -> Self {
        Self {
            data_hash: data_hash(train),
            seed: config.seed,
            config: fingerprint_config(config),
        }
    }

    /// Refuses a checkpoint (in `dir`) saved by a run with another fingerprint than this one.
    pub fn check_resumable(&self, saved: &Fingerprint, dir: &Path) -> Result<()> {
        let refuse = |reason: String| {
            Err(Error::Checkpoint {
                path: dir.into(),
                reason,
            })
        };
        if saved.data_hash != self.data_hash {
            return refuse("it was trained on different data (the tokenized dataset's hash differs)".into());
        }
        if saved.seed != self.seed {
            return refuse("it was trained with other settings (seed); resume with the same settings".into());
        }
        if saved.config != self.config {
            return refuse(format!(
                "it was trained with other settings ({}); resume with the same settings",
                config_diff(&saved.config, &self.config)
            ));
        }
        Ok(())
    }
}

/// SHA-256 of the sequences, soft and span targets included: equal hashes mean equal training data.
pub fn data_hash(sequences: &[Sequence]) -> String {
    let mut h = Sha256::new();
    h.update(b"distill-train-data-v1\0");
    for s in sequences {
        h.update((s.id.len() as u64).to_le_bytes());
        h.update(s.id.as_bytes());
        h.update((s.input_ids.len() as u64).to_le_bytes());
        for v in s.input_ids.iter().chain(&s.targets) {
            h.update(v.to_le_bytes());
        }
        h.update((s.first_target as u64).to_le_bytes());
        h.update((s.soft.len() as u64).to_le_bytes());
        for entries in &s.soft {
            h.update((entries.len() as u64).to_le_bytes());
            for (id, lp) in entries {
                h.update(id.to_le_bytes());
                h.update(lp.to_bits().to_le_bytes());
            }
        }
        // Spans are hashed only where there are some, so hashes of runs without them stay.
        if !s.spans.is_empty() {
            h.update((s.spans.len() as u64).to_le_bytes());
        }
        for span in &s.spans {
            h.update(
                [span.start as u64, span.len as u64, span.teacher_top.len() as u64]
                    .map(u64::to_le_bytes)
                    .concat(),
            );
            h.update(span.teacher_logprob.to_bits().to_le_bytes());
            for p in &span.teacher_top {
                h.update(p.to_bits().to_le_bytes());
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The configuration as JSON, less what may change between a run and its resume.
fn fingerprint_config(config: &TrainConfig) -> serde_json::Value {
    let mut v = serde_json::to_value(config).expect("config serialises");
    if let Some(map) = v.as_object_mut() {
        for key in [
            "dataset",
            "val_dataset",
            "student_model",
            "teacher_model",
            "output_dir",
            "epochs",
            "max_steps",
            "save_every",
            "keep_checkpoints",
            "eval_every",
            "early_stopping_patience",
            "resume",
            "device",
            "max_bad_steps",
        ] {
            map.remove(key);
        }
        // Off by default: a run without on-policy batches keeps the fingerprint it had before
        // on-policy distillation existed.
        if config.on_policy == 0.0 {
            for key in ["on_policy", "on_policy_max_new_tokens", "on_policy_temperature"] {
                map.remove(key);
            }
        }
    }
    v
}

/// The top-level keys whose values differ, for the resume error.
fn config_diff(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return "configuration".into();
    };
    let keys: BTreeSet<&str> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(String::as_str)
        .collect();
    if keys.is_empty() {
        "configuration".into()
    } else {
        keys.into_iter().collect::<Vec<_>>().join(", ")
    }
}

/// A checkpoint on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointDir {
    /// Its directory.
    pub path: PathBuf,
    /// The step it holds.
    pub step: u64,
}

/// The name of step `step`'s checkpoint directory.
pub fn dir_name(step: u64) -> String {
    format!("{PREFIX}{step:08}")
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(Error::io(path))
}

fn sync_dir(path: &Path) -> Result<()> {
    // Directory fsync makes the rename durable; it is not supported everywhere, and a failure
    // only weakens durability, never atomicity.
    if let Ok(d) = File::open(path) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes a checkpoint for `step` under `root` (`output_dir/checkpoints`) and returns its path.
pub fn save(
    root: &Path,
    state: &TrainerState,
    weights: &[(String, Tensor)],
    optimizer: &[(String, Tensor)],
) -> Result<PathBuf> {
    std::fs::create_dir_all(root).map_err(Error::io(root))?;
    let name = dir_name(state.step);
    let tmp = root.join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(Error::io(&tmp))?;
    }
    std::fs::create_dir_all(&tmp).map_err(Error::io(&tmp))?;
    let model = tmp.join(MODEL_FILE);
    write_tensors(&model, weights)?;
    let opt = tmp.join(OPTIMIZER_FILE);
    write_tensors(&opt, optimizer)?;
    let state_path = tmp.join(STATE_FILE);
    let json = serde_json::to_vec_pretty(state).map_err(|source| Error::Json {
        path: state_path.clone(),
        source,
    })?;
    std::fs::write(&state_path, json).map_err(Error::io(&state_path))?;
    for f in [&model, &opt, &state_path] {
        sync_file(f)?;
    }
    sync_dir(&tmp)?;
    let target = root.join(&name);
    if target.exists() {
        std::fs::remove_dir_all(&target).map_err(Error::io(&target))?;
    }
    std::fs::rename(&tmp, &target).map_err(Error::io(&target))?;
    sync_dir(root)?;
    Ok(target)
}

/// Writes f32 tensors as safetensors (exact bits; names sorted).
fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().to_device(tch::Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&cpu, path)?;
    Ok(())
}

/// Reads a safetensors file into a name → tensor map.
pub fn read_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>> {
    let named = Tensor::read_safetensors(path).map_err(|source| Error::Tensors {
        path: path.into(),
        source,
    })?;
    Ok(named.into_iter().collect())
}

/// The complete checkpoints under `root`, oldest first. Temporary directories left by a crash
/// are not checkpoints.
pub fn list(root: &Path) -> Result<Vec<CheckpointDir>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(root)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(Error::io(root))?;
        let name = entry.file_name();
        let Some(step) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        let path = entry.path();
        if path.join(STATE_FILE).is_file() {
            out.push(CheckpointDir { path, step });
        }
    }
    out.sort_by_key(|c| c.step);
    Ok(out)
}

/// Removes temporary directories that a killed run left behind.
pub fn remove_partial(root: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TMP_PREFIX))
        {
            let path = entry.path();
            std::fs::remove_dir_all(&path).map_err(Error::io(&path))?;
        }
    }
    Ok(())
}

/// Keeps the newest `keep` checkpoints and the one at `best` (if any); deletes the rest.
pub fn prune(root: &Path, keep: usize, best: Option<u64>) -> Result<()> {
    let all = list(root)?;
    let cut = all.len().saturating_sub(keep.max(1));
    for c in &all[..cut] {
        if Some(c.step) != best {
            std::fs::remove_dir_all(&c.path).map_err(Error::io(&c.path))?;
        }
    }
    Ok(())
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Loaded {
    /// The trainer state.
    pub state: TrainerState,
    /// f32 weights by HF name.
    pub weights: BTreeMap<String, Tensor>,
    /// Optimizer moments (`m.<name>`, `v.<name>`).
    pub optimizer: BTreeMap<String, Tensor>,
}

/// The newest complete checkpoint under `root` (after removing what a killed run left behind),
/// read back, when the run `fingerprint` describes may continue it; `None` when there is none.
pub fn load_resumable(root: &Path, fingerprint: &Fingerprint) -> Result<Option<(CheckpointDir, Loaded)>> {
    remove_partial(root)?;
    let Some(newest) = list(root)?.pop() else {
        return Ok(None);
    };
    let loaded = load(&newest.path)?;
    fingerprint.check_resumable(&loaded.state.fingerprint, &newest.path)?;
    Ok(Some((newest, loaded)))
}

/// Reads the checkpoint in `dir`.
pub fn load(dir: &Path) -> Result<Loaded> {
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(Error::io(&state_path))?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: state_path.clone(),
        source,
    })?;
    if state.version != STATE_VERSION {
        return Err(Error::Checkpoint {
            path: state_path,
            reason: format!(
                "layout version {} (this build reads {STATE_VERSION})",
                state.version
            ),
        });
    }
    Ok(Loaded {
        state,
        weights: read_tensors(&dir.join(MODEL_FILE))?,
        optimizer: read_tensors(&dir.join(OPTIMIZER_FILE))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(step: u64) -> TrainerState {
        TrainerState {
            version: STATE_VERSION,
            step,
            position: DataPosition {
                epoch: 0,
                batch: step,
            },
            total_steps: 10,
            scaler: LossScaler::new(false),
            best: None,
            evals_since_best: 0,
            bad_steps: 0,
            tokens_seen: 0,
            elapsed_seconds: 0.0,
            fingerprint: Fingerprint {
                data_hash: "x".into(),
                seed: 1,
                config: serde_json::Value::Null,
            },
        }
    }

    #[test]
    fn save_list_prune_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("checkpoints");
        let w = Tensor::from_slice(&[1.5f32, f32::MIN_POSITIVE, -0.0]);
        for step in [3, 6, 9, 12] {
            save(
                &root,
                &state(step),
                &[("w".into(), w.shallow_clone())],
                &[("m.w".into(), w.shallow_clone())],
            )
            .unwrap();
        }
        // A crash in the middle of writing leaves a temporary directory, which is not a checkpoint.
        std::fs::create_dir_all(root.join(".tmp-step-00000015-1")).unwrap();
        assert_eq!(
            list(&root).unwrap().iter().map(|c| c.step).collect::<Vec<_>>(),
            [3, 6, 9, 12]
        );
        prune(&root, 2, Some(3)).unwrap();
        assert_eq!(
            list(&root).unwrap().iter().map(|c| c.step).collect::<Vec<_>>(),
            [3, 9, 12]
        );
        remove_partial(&root).unwrap();
        assert!(!root.join(".tmp-step-00000015-1").exists());
        let loaded = load(&root.join(dir_name(12))).unwrap();
        assert_eq!(loaded.state, state(12));
        let back = Vec::<f32>::try_from(&loaded.weights["w"]).unwrap();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            [1.5f32, f32::MIN_POSITIVE, -0.0].map(f32::to_bits)
        );
    }
}
