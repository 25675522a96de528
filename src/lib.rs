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
//! | [`gguf`] | `distill-gguf` | GGUF reading, writing and dequantization |
//! | [`kernels`] | `distill-kernels` | f32 CPU kernels for decoding |
//! | [`serve`] | `distill-serve` | an OpenAI-compatible server with continuous batching |
//!
//! Beside the re-exports, the facade holds what joins the crates:
//! - [`local_teacher`]: a local model as a [`teacher::Teacher`], batched on the CPU decoder;
//! - [`evaluate`]: a model's answers, speed and size against a teacher's stored answers;
//! - [`lab`]: the whole lab, end to end and resumable.
#![warn(missing_docs)]

mod error;
pub mod evaluate;
pub mod lab;
pub mod local_teacher;

pub use error::{Error, Result};

pub use distill_azureml as azureml;
pub use distill_data as data;
pub use distill_eval as eval;
pub use distill_gguf as gguf;
pub use distill_kernels as kernels;
pub use distill_serve as serve;
pub use distill_student as student;
pub use distill_teacher as teacher;

/// An error and its causes on one line, joined by `: `, as a command line reports them.
///
/// Every error in the workspace leaves its source out of its own message and returns it from
/// `source()`, so a plain join prints each cause once.
pub fn error_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = Vec::new();
    let mut next = Some(error);
    while let Some(cause) = next {
        parts.push(cause.to_string());
        next = cause.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::error_line;

    #[test]
    fn each_cause_is_printed_once_in_chain_order() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let data = distill_data::Error::Io {
            path: "d.jsonl".into(),
            source: io(),
        };
        assert_eq!(error_line(&data), "d.jsonl: no such file");
        let context = anyhow::Error::new(data).context("reading the dataset");
        assert_eq!(
            error_line(context.as_ref()),
            "reading the dataset: d.jsonl: no such file"
        );
        let chained = anyhow::Error::new(io()).context("opening d.jsonl");
        assert_eq!(error_line(chained.as_ref()), "opening d.jsonl: no such file");
    }
}
