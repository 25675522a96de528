//! The distillation trainer.
//!
//! [`train`] runs a [`TrainConfig`] end to end: it reads a distill-data dataset, tokenizes it
//! through the student's chat template ([`data`]), batches it by length with a seeded, resumable
//! order ([`batch`]), trains with hard and soft labels ([`loss`]) under AdamW ([`optim`]), writes
//! atomic checkpoints it can resume from exactly ([`checkpoint`]), and leaves in `output_dir`:
//!
//! | path | what |
//! |---|---|
//! | `final_model/` ([`final_model_dir`]) | the student as an HF directory (config, safetensors, tokenizer) |
//! | `checkpoints/step-NNNNNNNN/` | the newest `keep_checkpoints` checkpoints, and the best one |
//! | `training_args.json` | the configuration and data statistics |
//! | `metrics.jsonl` | one line per step (loss parts, lr, tokens/s) and per evaluation |
//! | `loss_curve.svg` | training and validation loss |
//! | `teacher_scores.jsonl` | with a teacher model of another vocabulary: its scores of the data's answers, reused by a restart or resume |
//!
//! Progress comes through a callback of [`TrainEvent`]s; a raised stop flag ends the run after
//! the current step with a checkpoint. Nothing here prints or reads the environment.
//!
//! Soft labels need teacher probabilities: either the top-k logprobs stored in the dataset, or
//! a local teacher model. A teacher model with the student's tokenizer (checked by vocabulary
//! hash) gives full-vocabulary logits online; one with another tokenizer scores the dataset's
//! answers once, as text, keeping its top-k ([`on_policy`]). On-policy distillation (GKD)
//! lets the student answer a share of the batches itself, for the teacher to score. Stored top-k from a teacher with the student's vocabulary (the same
//! [`data::TEACHER_VOCAB_HASH_KEY`], or none and every token spelled by the student) is mapped
//! token for token; from any other teacher, the student tokenizes the teacher's text and the
//! two are aligned on byte spans ([`align`]): soft labels where a student token spells exactly
//! one teacher token, hard labels elsewhere.

pub mod align;
pub mod batch;
mod build;
pub mod checkpoint;
pub mod config;
pub mod data;
mod error;
pub mod events;
pub mod loss;
pub mod metrics;
pub mod on_policy;
pub mod optim;
mod outputs;
mod run;
pub mod setup;
mod trainer;

pub use config::{
    DeviceChoice, KeepLayers, LossConfig, LossKind, LrSchedule, MixedPrecision, OptimConfig, TopKMode,
    TrainConfig,
};
pub use error::{Error, ErrorKind, Result, TensorMismatch};
pub use events::{Outcome, TrainEvent, TrainSummary};
pub use outputs::final_model_dir;
pub use trainer::{Parts, Trainer, train};
