//! The error type of `distill-eval`.

use std::path::PathBuf;

/// A boxed error from a caller-supplied model (a [`crate::latency::Generator`] or a
/// [`crate::perplexity::LogLikelihood`]), kept as the source of [`Error::Model`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in `distill-eval`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A GGUF file whose header could not be read.
    #[error(transparent)]
    Gguf(#[from] distill_gguf::Error),
    /// A file or directory could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A text file holds bytes that are not UTF-8.
    #[error("{}:{line}: not valid UTF-8", path.display())]
    InvalidUtf8 {
        /// The file.
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// The decoding error.
        #[source]
        source: std::str::Utf8Error,
    },
    /// Hypothesis and reference files have different numbers of segments.
    #[error(
        "{} has {hypothesis_lines} lines but {} has {reference_lines}: one segment per line is expected in both",
        hypotheses.display(),
        references.display()
    )]
    LineCountMismatch {
        /// The hypothesis file.
        hypotheses: PathBuf,
        /// Its number of lines.
        hypothesis_lines: usize,
        /// The reference file.
        references: PathBuf,
        /// Its number of lines.
        reference_lines: usize,
    },
    /// In-memory inputs that must line up do not.
    #[error("{what}: expected {expected} items, got {actual}")]
    LengthMismatch {
        /// Which input was wrong.
        what: &'static str,
        /// The length it should have had.
        expected: usize,
        /// The length it had.
        actual: usize,
    },
    /// An input that must not be empty was empty.
    #[error("{0} must not be empty")]
    Empty(&'static str),
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// A safetensors header is not valid JSON of the expected shape.
    #[error("{}: invalid safetensors header", path.display())]
    SafetensorsJson {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A safetensors header is inconsistent (sizes, offsets, dtypes).
    #[error("{}: invalid safetensors header: {reason}", path.display())]
    SafetensorsLayout {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A directory holds no `*.safetensors` file.
    #[error("{}: no *.safetensors file found", path.display())]
    NoSafetensors {
        /// The directory.
        path: PathBuf,
    },
    /// A shard index (`model.safetensors.index.json`) could not be parsed.
    #[error("{}: invalid safetensors index", path.display())]
    SafetensorsIndex {
        /// The index file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A parameter count does not fit in 64 bits.
    #[error("parameter count overflows u64")]
    ParameterOverflow,
    /// A caller-supplied model failed.
    #[error("model failed during {during}")]
    Model {
        /// What was being done (for example `generation` or `scoring`).
        during: &'static str,
        /// The model's error.
        #[source]
        source: BoxError,
    },
    /// A child process could not be started or waited for.
    #[error("child process {program}")]
    Child {
        /// The program that was run.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Peak memory is not available on this platform.
    #[error("peak memory measurement is not supported on this platform")]
    Unsupported,
    /// A report could not be serialised.
    #[error("cannot serialise the report")]
    Json(#[from] serde_json::Error),
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
