//! Errors from building, loading, running and saving student models.

use std::path::PathBuf;

/// Everything that can go wrong in distill-student.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A GGUF file could not be read.
    #[error(transparent)]
    Gguf(#[from] distill_gguf::Error),
    /// A GGUF model file is malformed or lacks what loading needs.
    #[error("{}: {error}", path.display())]
    GgufFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (in the message, not chained, so it is printed once).
        error: distill_gguf::Error,
    },
    /// A tokenizer could not be built, loaded, saved or used.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::Error),
    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A `config.json` that does not parse or describes an unusable model.
    #[error("{path}: {reason}")]
    Config {
        /// The file (or GGUF) the configuration came from.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A JSON file that does not parse.
    #[error("{path}: {error}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error (in the message and not chained, so it is printed once).
        error: serde_json::Error,
    },
    /// A safetensors file that does not parse.
    #[error("{path}: {error}")]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The parse error (its message already includes its cause, so it is not chained).
        error: safetensors::SafeTensorError,
    },
    /// A checkpoint that lacks tensors the model needs, or has the wrong shapes.
    #[error("{path}: {reason}")]
    Weights {
        /// The checkpoint.
        path: PathBuf,
        /// Which tensors are missing or mismatched.
        reason: String,
    },
    /// A Hugging Face Hub model that could not be found or fetched.
    #[error("Hugging Face Hub model `{id}`: {reason}")]
    Hub {
        /// The model id.
        id: String,
        /// What went wrong, with the cache path checked.
        reason: String,
    },
    /// An architecture this crate does not implement.
    #[error("unsupported architecture `{0}` (supported: llama, gpt2)")]
    UnsupportedArchitecture(String),
    /// Arguments that do not fit the model, such as token ids beyond the vocabulary.
    #[error("invalid input: {0}")]
    Input(String),
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
