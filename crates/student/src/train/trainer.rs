//! The [`Trainer`]: what a run holds. Building it is in `build.rs` (load, prepare, resume), the
//! loop and its step in `run.rs`, the files a run writes in `outputs.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use distill_data::Example;
use tch::Device;

use super::batch::BatchSettings;
use super::checkpoint::TrainerState;
use super::config::TrainConfig;
use super::data::{DataStats, Sequence};
use super::error::Result;
use super::events::{TrainEvent, TrainSummary};
use super::loss::SoftObjective;
use super::optim::AdamW;
use crate::Pretrained;

/// The inputs of a run, for callers that build them in memory (tests, benchmarks, other tools).
#[derive(Debug)]
pub struct Parts {
    /// The student and its tokenizer.
    pub student: Pretrained,
    /// A teacher model: with the student's vocabulary it gives logits online; with another it
    /// scores the answers as text, and the student aligns its top-k on bytes.
    pub teacher: Option<Pretrained>,
    /// Training examples.
    pub train: Vec<Example>,
    /// Validation examples.
    pub val: Vec<Example>,
}

/// A prepared training run.
#[derive(Debug)]
pub struct Trainer {
    pub(super) config: TrainConfig,
    /// Where the run trains, resolved once from `config` when the trainer is built.
    pub(super) device: Device,
    pub(super) student: Pretrained,
    pub(super) teacher: Option<Pretrained>,
    /// A teacher model with another vocabulary: it scores answers as text (see
    /// [`super::on_policy`]).
    pub(super) foreign_teacher: Option<Pretrained>,
    /// The prompt messages of the training examples, by id, for the foreign teacher.
    pub(super) prompts: HashMap<String, Vec<distill_data::Message>>,
    pub(super) train: Vec<Sequence>,
    pub(super) train_stats: DataStats,
    pub(super) val: Vec<Sequence>,
    pub(super) val_stats: Option<DataStats>,
    pub(super) optimizer: AdamW,
    pub(super) state: TrainerState,
    pub(super) objective: Option<SoftObjective>,
    pub(super) batching: BatchSettings,
    pub(super) pad: i64,
    /// The batches of one epoch: `(epoch, batches)`.
    pub(super) plan: (u64, Vec<Vec<usize>>),
    pub(super) resumed_from: Option<u64>,
    pub(super) last_checkpoint: Option<PathBuf>,
}

impl Trainer {
    /// The current state (step, data position, best validation result …).
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// The student being trained.
    pub fn student(&self) -> &Pretrained {
        &self.student
    }

    /// The prepared training sequences.
    pub fn train_sequences(&self) -> &[Sequence] {
        &self.train
    }

    /// The lengths of the training sequences, which batching plans from.
    pub(super) fn lengths(&self) -> Vec<usize> {
        self.train.iter().map(Sequence::len).collect()
    }

    /// `output_dir/checkpoints`.
    pub(super) fn checkpoints_dir(&self) -> PathBuf {
        self.config.output_dir.join("checkpoints")
    }
}

/// Runs a whole configuration: load, prepare, train, write outputs.
pub fn train(
    config: TrainConfig,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainSummary> {
    Trainer::from_config(config)?.run(stop, on_event)
}
