//! # distill-azureml
//!
//! Azure ML submission: data and model registration, blob upload, command jobs
//! and their monitoring.
#![warn(missing_docs)]
