//! The files a run writes besides its metrics: `training_args.json`, the checkpoints, the loss
//! curve and the final model (see the table in the [module docs](super)).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tch::Tensor;

use super::checkpoint as ckpt;
use super::config::{MixedPrecision, TrainConfig};
use super::data::DataStats;
use super::error::{Error, Result};
use super::events::TrainEvent;
use super::metrics::{MetricsLog, loss_curve_svg};
use super::trainer::Trainer;

/// Where a run writes its final model: `output_dir/final_model`.
pub fn final_model_dir(output_dir: &Path) -> PathBuf {
    output_dir.join("final_model")
}

/// `training_args.json`: the configuration and what set-up found.
#[derive(Debug, Serialize)]
struct TrainingArgs<'a> {
    config: &'a TrainConfig,
    train_data: &'a DataStats,
    val_data: Option<&'a DataStats>,
    parameters: u64,
    layers: i64,
    vocab_hash: &'a str,
    device: &'a str,
    total_steps: u64,
    resumed_from: Option<u64>,
}

impl Trainer {
    /// Writes `training_args.json` for a run of `total_steps` on a model of `parameters`.
    pub(super) fn write_training_args(&self, total_steps: u64, parameters: u64, device: &str) -> Result<()> {
        let args = TrainingArgs {
            config: &self.config,
            train_data: &self.train_stats,
            val_data: self.val_stats.as_ref(),
            parameters,
            layers: self.student.model.config.layer_count(),
            vocab_hash: self.student.tokenizer.vocab_hash(),
            device,
            total_steps,
            resumed_from: self.resumed_from,
        };
        let path = self.config.output_dir.join("training_args.json");
        let json = serde_json::to_string_pretty(&args).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, json).map_err(Error::io(&path))
    }

    /// Saves a checkpoint of the current step and prunes the old ones.
    pub(super) fn save_checkpoint(&mut self, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<()> {
        let root = self.checkpoints_dir();
        let (moments, _) = self.optimizer.state();
        let path = ckpt::save(&root, &self.state, &self.optimizer.values(), &moments)?;
        ckpt::prune(
            &root,
            self.config.keep_checkpoints,
            self.state.best.map(|b| b.step),
        )?;
        tracing::info!(step = self.state.step, path = %path.display(), "checkpoint saved");
        on_event(&TrainEvent::Checkpoint {
            step: self.state.step,
            path: path.clone(),
        });
        self.last_checkpoint = Some(path);
        Ok(())
    }

    /// Writes `loss_curve.svg` from the run's metrics.
    pub(super) fn write_loss_curve(&self, metrics: &MetricsLog) -> Result<()> {
        let path = self.config.output_dir.join("loss_curve.svg");
        std::fs::write(&path, loss_curve_svg(metrics.records())).map_err(Error::io(&path))
    }

    /// Writes [`final_model_dir`] (weights, config, tokenizer) through a temporary directory.
    pub(super) fn write_final_model(&mut self) -> Result<PathBuf> {
        let dir = final_model_dir(&self.config.output_dir);
        let tmp = self.config.output_dir.join(".final_model.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(Error::io(&tmp))?;
        }
        if self.config.precision == MixedPrecision::Bf16 {
            // The f32 masters are the real weights.
            let values: BTreeMap<String, Tensor> = self.optimizer.values().into_iter().collect();
            self.student.model.vs.float();
            let _guard = tch::no_grad_guard();
            for (name, mut var) in self.student.model.vs.variables() {
                if let Some(v) = values.get(&name) {
                    var.copy_(v);
                }
            }
        }
        self.student.save_hf(&tmp)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(Error::io(&dir))?;
        if self.config.precision == MixedPrecision::Bf16 {
            self.student.model.vs.bfloat16();
        }
        tracing::info!(path = %dir.display(), "final model written");
        Ok(dir)
    }
}
