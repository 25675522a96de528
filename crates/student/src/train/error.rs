//! Errors from preparing data for, running and resuming a training run.

use std::path::PathBuf;

/// Everything that can go wrong in the trainer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (trainer state, arguments) that does not parse or could not be written.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The dataset could not be read.
    #[error(transparent)]
    Data(#[from] distill_data::Error),
    /// Loading, running or saving the model failed.
    #[error(transparent)]
    Model(#[from] crate::Error),
    /// The tokenizer failed.
    #[error(transparent)]
    Tokenizer(#[from] crate::tokenizer::Error),
    /// libtorch reported an error.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// A setting that cannot work (bad value, or a combination the device does not support).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An example that cannot be turned into training data.
    #[error("{path}: example `{id}`: {reason}")]
    Example {
        /// The dataset file.
        path: PathBuf,
        /// The example's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A teacher token that is not in the student's vocabulary.
    #[error(
        "{path}: example `{id}`, response token {position}: teacher token {token:?} is not in the student's \
         vocabulary; soft labels from the dataset need a teacher with the student's tokenizer"
    )]
    UnmappedToken {
        /// The dataset file.
        path: PathBuf,
        /// The example's id.
        id: String,
        /// Index of the token in the response.
        position: usize,
        /// The token as the teacher spelled it.
        token: String,
    },
    /// Teacher and student tokenizers differ.
    #[error(
        "{what}: the teacher's vocabulary hash {teacher} differs from the student's {student}; \
         soft labels need the same tokenizer"
    )]
    VocabMismatch {
        /// Where the teacher's hash came from (a dataset example or a teacher model).
        what: String,
        /// The teacher's vocabulary hash.
        teacher: String,
        /// The student's vocabulary hash.
        student: String,
    },
    /// No training data is left after filtering.
    #[error("{0}")]
    NoData(String),
    /// A checkpoint that cannot be resumed from.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Too many consecutive steps had a non-finite loss or gradient.
    #[error("aborting at step {step}: {count} consecutive steps had a non-finite loss or gradient")]
    Diverged {
        /// The step that failed last.
        step: u64,
        /// How many failed in a row.
        count: u32,
    },
}

/// A `Result` with the trainer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
