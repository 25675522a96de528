//! # distill-teacher
//!
//! Teacher clients (OpenAI, Azure OpenAI, any OpenAI-compatible server) and the
//! generation engine that turns prompts into a distillation dataset.
//!
//! - [`Teacher`]: one request in, one [`Completion`] out (text, finish reason, usage, latency,
//!   per-token logprobs). Implemented by [`OpenAiTeacher`] and [`AzureTeacher`].
//! - [`TeacherConfig`]: configuration from environment-style variables or a TOML file.
//! - [`Engine`]: bounded concurrency, client-side rate limits, retries that honour the server's
//!   wait hints, a failures file, resume without duplicates, cost accounting, progress events.
//! - [`batch`]: the OpenAI Batch API (half price), resumable by batch id.
//!
//! See the crate README for an example and for running the llama.cpp integration test.
#![warn(missing_docs)]

pub mod batch;
mod chat;
pub mod config;
mod convert;
pub mod engine;
mod error;
mod failures;
mod http;
pub mod limiter;
mod openai;
mod output;
pub mod pricing;
pub mod retry;
mod teacher;

pub use chat::MaxTokensField;
pub use config::{AzureAuth, AzureSettings, OpenAiSettings, Provider, ProviderSettings, TeacherConfig};
pub use engine::{Engine, Event, GenerateOptions, Progress, ProgressEvent, StopReason, Summary};
pub use error::{Error, ErrorClass, Result};
pub use http::COGNITIVE_SERVICES_SCOPE;
pub use openai::{AzureTeacher, OpenAiTeacher, discover_model, teacher_from_config};
pub use teacher::{Choice, Completion, GenerationParams, MAX_TOP_LOGPROBS, Teacher, TeacherId};

/// Re-exported for building secrets in configuration.
pub use secrecy::SecretString;
/// Re-exported so callers can cancel a run without depending on `tokio-util` themselves.
pub use tokio_util::sync::CancellationToken;

/// The README's examples, compiled as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
