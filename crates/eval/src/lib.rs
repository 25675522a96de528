//! # distill-eval
//!
//! Evaluation of distilled models against their teacher.
#![warn(missing_docs)]
