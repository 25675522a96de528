#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

pub mod accuracy;
pub mod bleu;
pub mod bootstrap;
pub mod chrf;
mod error;
pub mod latency;
pub mod memory;
pub mod perplexity;
pub mod report;
pub mod rouge;
pub mod size;
pub mod stats;
pub mod text;
pub mod texts;

pub use error::{BoxError, Error, Result};
