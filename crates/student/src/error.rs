//! Errors from building, loading, running and saving student models.
//!
//! As everywhere in distill, a message leaves its source out and the source is chained
//! (`std::error::Error::source`), so that walking the chain prints each cause once. Callers that
//! treat failures differently match on [`Error::kind`].

use std::fmt;
use std::path::PathBuf;

use crate::checkpoint::hub::HubError;

/// Everything that can go wrong in distill-student.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A path that is neither a file, a directory nor a Hub id.
    #[error("{0}: no such file or directory")]
    NoSuchPath(String),
    /// A GGUF file could not be read (the GGUF error names the file where it concerns one).
    #[error(transparent)]
    Gguf(#[from] distill_gguf::Error),
    /// A GGUF model file is malformed or lacks what loading needs.
    #[error("{}", path.display())]
    GgufFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: distill_gguf::Error,
    },
    /// A tokenizer could not be built, loaded, saved or used.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::Error),
    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A `config.json` that describes an unusable model.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file (or GGUF) the configuration came from.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A JSON file that does not parse.
    #[error("{}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors file that does not parse or could not be encoded.
    #[error("{}", path.display())]
    Safetensors {
        /// The file.
        path: PathBuf,
        /// The safetensors error.
        #[source]
        source: SafetensorsError,
    },
    /// A checkpoint that lacks tensors the model needs, or has the wrong shapes.
    #[error("{}: {reason}", path.display())]
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
        /// hf-hub's error, where it says more than `reason`.
        #[source]
        source: Option<HubError>,
    },
    /// An architecture this crate does not implement.
    #[error("unsupported architecture `{0}` (supported: llama, gpt2)")]
    UnsupportedArchitecture(String),
    /// A model, file or operation this crate does not support (pickled weights, GGUF export of a
    /// tokenizer that is not byte-level BPE, layer selection on GPT-2, …).
    #[error("{0}")]
    Unsupported(String),
    /// Arguments that do not fit the model, such as token ids beyond the vocabulary.
    #[error("invalid input: {0}")]
    Input(String),
}

/// What kind of failure an [`Error`] (or a [`crate::tokenizer::Error`]) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file or directory could not be read or written, for another reason than not existing.
    Io,
    /// The model (a file, a directory, a Hub id or a file inside one) does not exist.
    NotFound,
    /// A file that is not what it should be: malformed GGUF, JSON, safetensors or configuration,
    /// missing or misshapen tensors, tokenizer metadata that does not fit together.
    Malformed,
    /// Something well-formed that this crate does not implement.
    Unsupported,
    /// Arguments that do not fit the model or the tokenizer.
    Input,
    /// The Hugging Face Hub could not be reached or refused the request.
    Network,
    /// libtorch failed.
    Torch,
}

impl ErrorKind {
    /// The kind of an I/O error: [`ErrorKind::NotFound`] or [`ErrorKind::Io`].
    pub(crate) fn of_io(error: &std::io::Error) -> Self {
        if error.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        }
    }

    /// The kind of a GGUF error, for a model or tokenizer read from the file.
    pub(crate) fn of_gguf(error: &distill_gguf::Error) -> Self {
        match (error.kind(), error) {
            (_, distill_gguf::Error::Io { source, .. }) => Self::of_io(source),
            (distill_gguf::ErrorKind::Io, _) => ErrorKind::Io,
            (distill_gguf::ErrorKind::Unsupported, _) => ErrorKind::Unsupported,
            // A model file without a key or tensor that loading needs is a malformed model file.
            _ => ErrorKind::Malformed,
        }
    }
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } => ErrorKind::of_io(source),
            Error::NoSuchPath(_) => ErrorKind::NotFound,
            Error::Gguf(e) | Error::GgufFile { source: e, .. } => ErrorKind::of_gguf(e),
            Error::Tokenizer(e) => e.kind(),
            Error::Torch(_) => ErrorKind::Torch,
            Error::Config { .. } | Error::Json { .. } | Error::Safetensors { .. } | Error::Weights { .. } => {
                ErrorKind::Malformed
            }
            Error::Hub { source, .. } => match source {
                Some(e) if !e.is_not_found() => ErrorKind::Network,
                _ => ErrorKind::NotFound,
            },
            Error::UnsupportedArchitecture(_) | Error::Unsupported(_) => ErrorKind::Unsupported,
            Error::Input(_) => ErrorKind::Input,
        }
    }
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A safetensors error, shown by the house rule: safetensors' own message repeats its source
/// (`invalid JSON in header: <the JSON error>`), so this one says only what failed and leaves
/// the source to the chain.
#[derive(Debug)]
pub struct SafetensorsError(pub safetensors::SafeTensorError);

impl fmt::Display for SafetensorsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use safetensors::SafeTensorError as E;
        match &self.0 {
            E::InvalidHeader(_) => f.write_str("invalid UTF-8 in header"),
            E::InvalidHeaderDeserialization(_) => f.write_str("invalid JSON in header"),
            E::JsonError(_) => f.write_str("JSON error"),
            E::IoError(_) => f.write_str("I/O error"),
            other => other.fmt(f),
        }
    }
}

impl std::error::Error for SafetensorsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

impl From<safetensors::SafeTensorError> for SafetensorsError {
    fn from(error: safetensors::SafeTensorError) -> Self {
        Self(error)
    }
}
