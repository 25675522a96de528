//! # distill
//!
//! Knowledge distillation of language models, in Rust. This facade re-exports the
//! workspace crates so that one dependency brings the whole toolkit; each crate can
//! also be used on its own.
//!
//! | module | crate | what it owns |
//! |---|---|---|
//! | [`data`] | `distill-data` | the dataset format and its safe I/O |
//! | [`teacher`] | `distill-teacher` | teacher clients and the generation engine |
//! | [`student`] | `distill-student` | student models, checkpoints and the trainer (libtorch) |
//! | [`eval`] | `distill-eval` | BLEU, ROUGE, latency, size and reports |
//! | [`azureml`] | `distill-azureml` | Azure ML submission |
#![warn(missing_docs)]

pub use distill_azureml as azureml;
pub use distill_data as data;
pub use distill_eval as eval;
pub use distill_student as student;
pub use distill_teacher as teacher;
