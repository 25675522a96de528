//! # distill-data
//!
//! The dataset format shared by the whole workspace: the teacher writes it, the trainer and
//! the evaluator read it, and Azure OpenAI receives its fine-tuning export. It depends on
//! serde and nothing heavier: no tch, no HTTP, no async.
//!
//! ## Map
//!
//! | module | what |
//! |---|---|
//! | [`example`] | [`Example`] and its parts ([`Message`], [`TeacherInfo`], [`TokenLogprob`], …), [`Example::id_for`] |
//! | [`encoding`] | the three JSONL encodings (lab, chat fine-tuning, full) and [`encode_line`] |
//! | [`reader`] | [`ExampleReader`], the streaming reader (strict or lenient, any encoding) |
//! | [`writer`] | [`ExampleWriter`], the crash-safe append writer used by the teacher |
//! | [`finetune`] | OpenAI / Azure OpenAI chat fine-tuning export and [`validate_finetune_file`] |
//! | [`ops`] | dedup, split, filter, stats; file-level convert, merge and split |
//! | [`prompts`] | [`PromptSource`] and the prompt file formats; deterministic [`pick`] |
//! | [`error`] | [`Error`], with file, line and column for bad input |
//!
//! The on-disk format is specified in `docs/dataset-format.md`.
#![warn(missing_docs)]

pub mod encoding;
pub mod error;
pub mod example;
pub mod finetune;
mod lines;
pub mod ops;
pub mod prompts;
pub mod reader;
pub mod writer;

pub use encoding::{EncodeOptions, Encoding, encode_line};
pub use error::{Error, ErrorKind, JsonError, Location, Result};
pub use example::{
    Example, FORMAT_VERSION, FinishReason, MAX_TOP_LOGPROBS, Message, Metadata, Role, Split, TeacherInfo,
    TokenLogprob, TopLogprob, Usage,
};
pub use finetune::{FinetuneReport, FinetuneTarget, export_finetune, validate_finetune_file};
pub use prompts::{Prompt, PromptSource, pick, shuffle};
pub use reader::{DuplicateIds, ExampleReader, Mode, ReadReport, ReaderOptions, read_file};
pub use writer::{DEFAULT_MAX_LINE_BYTES, ExampleWriter, SyncPolicy, TornTail, WriterOptions};

// Runs the README's example as a doctest.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
