//! # distill-data
//!
//! The dataset format shared by the whole workspace.
#![warn(missing_docs)]
