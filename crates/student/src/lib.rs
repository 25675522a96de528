//! # distill-student
//!
//! Student models on libtorch (through `tch`): architectures, checkpoint I/O,
//! tokenizers, generation and the distillation trainer.
#![warn(missing_docs)]

pub mod alloc;
pub mod batching;
pub mod checkpoint;
mod error;
pub mod generate;
pub mod model;
mod pretrained;
pub mod shrink;
pub mod tokenizer;
pub mod train;

pub use checkpoint::{InferenceDtype, LoadedModel};
pub use error::{Error, ErrorKind, Result, SafetensorsError};
pub use generate::{GenerationConfig, generate};
pub use model::{CausalLm, ForwardInput, KvCache, LlamaConfig, Precision};
pub use pretrained::{Pretrained, Reply};
pub use tch;

/// The README's example, compiled as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

/// The libtorch version tch binds; torch-sys refuses any other at build time (see
/// `docs/facts.md` for the pin).
pub const LIBTORCH_VERSION: &str = "2.11.0";

/// Facts about the libtorch this crate was linked against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    /// Whether a CUDA device is usable.
    pub cuda: bool,
    /// Number of visible CUDA devices.
    pub cuda_devices: i64,
    /// Threads libtorch uses for intra-op parallelism on the CPU.
    pub cpu_threads: i32,
}

impl Runtime {
    /// Queries the linked libtorch.
    pub fn query() -> Self {
        Self {
            cuda: tch::Cuda::is_available(),
            cuda_devices: tch::Cuda::device_count(),
            cpu_threads: tch::get_num_threads(),
        }
    }
}
