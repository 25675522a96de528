//! # distill-gguf
//!
//! A safe reader and writer for GGUF, the llama.cpp/Ollama model format, with no
//! dependency on libtorch. distill-student builds models from it; distill-eval counts
//! parameters from its header; the fuzz targets exercise it without linking torch.
//!
//! ```no_run
//! let gguf = distill_gguf::GgufFile::read_header("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! println!("{} parameters", gguf.parameter_count());
//! let info = gguf.tensor("token_embd.weight").unwrap().clone();
//! let weights: Vec<f32> = gguf.read_f32(&mut gguf.open()?, &info)?;
//! # Ok::<(), distill_gguf::Error>(())
//! ```
#![warn(missing_docs)]

mod dequant;
mod error;
mod reader;
mod types;
mod writer;

pub use dequant::{dequantize, quantize_q8_0};
pub use error::{Error, ErrorKind, Result};
pub use reader::{GgufFile, TensorInfo};
pub use types::{GgmlType, Value};
pub use writer::{TensorData, write_gguf};

/// The README's example, compiled as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
