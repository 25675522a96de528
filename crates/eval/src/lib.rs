//! # distill-eval
//!
//! Evaluation of distilled models against their teacher.
#![warn(missing_docs)]

pub mod bleu;
mod error;
pub mod rouge;
pub mod text;

pub use error::{BoxError, Error, Result};
