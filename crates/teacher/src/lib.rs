//! # distill-teacher
//!
//! Teacher clients (OpenAI, Azure OpenAI, any OpenAI-compatible server) and the
//! generation engine that turns prompts into a distillation dataset.
#![warn(missing_docs)]
