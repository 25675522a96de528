//! What a run reports while it goes, and how it ended.

use std::path::PathBuf;

use serde::Serialize;

use super::checkpoint::Best;
use super::data::DataStats;
use super::metrics::{EvalRecord, StepRecord};

/// What the trainer reports while it runs (render it, log it, or ignore it).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TrainEvent {
    /// Set-up is done; training starts (or continues) at `start_step`.
    Started {
        /// Steps already done (non-zero after a resume).
        start_step: u64,
        /// Steps the run is planned for.
        total_steps: u64,
        /// Training data after preparation.
        train: DataStats,
        /// Validation data after preparation, if any.
        val: Option<DataStats>,
        /// Trainable parameters of the student.
        parameters: u64,
        /// Where the run computes (`cpu`, `cuda:0`).
        device: String,
    },
    /// An optimizer step finished.
    Step {
        /// Its metrics.
        record: StepRecord,
        /// Steps the run is planned for.
        total_steps: u64,
        /// Estimated seconds to the end.
        eta_seconds: f64,
    },
    /// A step was skipped because its loss or gradient was not finite.
    Skipped {
        /// The step.
        step: u64,
        /// Consecutive skipped steps so far.
        consecutive: u32,
    },
    /// The validation data was evaluated.
    Eval {
        /// The result.
        record: EvalRecord,
        /// Whether it is the best so far.
        improved: bool,
    },
    /// A checkpoint was written.
    Checkpoint {
        /// The step it holds.
        step: u64,
        /// Its directory.
        path: PathBuf,
    },
    /// The run ended.
    Finished(TrainSummary),
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// All planned steps ran.
    Completed,
    /// The validation loss stopped improving.
    EarlyStopped,
    /// The stop flag was raised; the last checkpoint resumes the run.
    Stopped,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct TrainSummary {
    /// How it ended.
    pub outcome: Outcome,
    /// Steps completed.
    pub steps: u64,
    /// Real input tokens trained on.
    pub tokens_seen: u64,
    /// Seconds of training (across resumes).
    pub elapsed_seconds: f64,
    /// Loss of the last step.
    pub final_loss: Option<f64>,
    /// Best validation result.
    pub best: Option<Best>,
    /// The HF model directory (not written when stopped).
    pub final_model: Option<PathBuf>,
    /// The newest checkpoint.
    pub last_checkpoint: Option<PathBuf>,
}
