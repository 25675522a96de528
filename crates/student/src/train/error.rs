//! Errors from preparing data for, running and resuming a training run.
//!
//! As everywhere in distill, a message leaves its source out and the source is chained
//! (`std::error::Error::source`), so that walking the chain prints each cause once. Callers that
//! treat failures differently match on [`Error::kind`].

use std::path::PathBuf;

/// Everything that can go wrong in the trainer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file (trainer state, arguments) that does not parse or could not be written.
    #[error("{}", path.display())]
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
    /// A student or teacher model path that does not exist.
    #[error("{}: no such file or directory (give a local HF directory or a .gguf file)", .0.display())]
    ModelNotFound(PathBuf),
    /// A setting that cannot work (bad value, or a combination the device does not support).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// An example that cannot be turned into training data.
    #[error("{}: example `{id}`: {reason}", path.display())]
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
        "{}: example `{id}`, response token {position}: teacher token {token:?} is not in the student's \
         vocabulary; soft labels from the dataset need a teacher with the student's tokenizer",
        path.display()
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
    #[error("{}: {reason}", path.display())]
    Checkpoint {
        /// The checkpoint directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A safetensors file of a checkpoint or of the teacher cache that cannot be read.
    #[error("{}: cannot read the tensors", path.display())]
    Tensors {
        /// The file.
        path: PathBuf,
        /// libtorch's error.
        #[source]
        source: tch::TchError,
    },
    /// A checkpoint whose tensors do not fit the model or the optimizer of this run.
    #[error("{}: the checkpoint does not fit this run", path.display())]
    CheckpointTensors {
        /// The checkpoint directory.
        path: PathBuf,
        /// The tensor that is missing or misshapen.
        #[source]
        source: TensorMismatch,
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

/// A saved tensor that does not fit where it is restored to.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorMismatch {
    /// No tensor of this name was saved.
    #[error("missing `{0}`")]
    Missing(String),
    /// The saved tensor has another shape.
    #[error("`{name}` has shape {found:?}, expected {expected:?}")]
    Shape {
        /// The tensor's name.
        name: String,
        /// The saved shape.
        found: Vec<i64>,
        /// The shape it is restored into.
        expected: Vec<i64>,
    },
}

/// What kind of failure an [`Error`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file or directory could not be read or written, for another reason than not existing.
    Io,
    /// A model or dataset file that does not exist.
    NotFound,
    /// A setting that cannot work.
    Config,
    /// Data that cannot be trained on: a malformed dataset, an example the student cannot
    /// spell, a teacher with another vocabulary, nothing left after filtering.
    Data,
    /// The model or its tokenizer could not be loaded, run or saved (the source says why).
    Model,
    /// A checkpoint (or the teacher cache) that cannot be read back or resumed from.
    Checkpoint,
    /// Too many steps in a row had a non-finite loss or gradient.
    Diverged,
    /// libtorch failed.
    Torch,
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        let io_kind = |e: &std::io::Error| match e.kind() {
            std::io::ErrorKind::NotFound => ErrorKind::NotFound,
            _ => ErrorKind::Io,
        };
        let model_kind = |kind: crate::ErrorKind| match kind {
            crate::ErrorKind::NotFound => ErrorKind::NotFound,
            crate::ErrorKind::Io => ErrorKind::Io,
            crate::ErrorKind::Torch => ErrorKind::Torch,
            _ => ErrorKind::Model,
        };
        match self {
            Error::Io { source, .. } => io_kind(source),
            Error::Data(e) if caused_by_a_missing_file(e) => ErrorKind::NotFound,
            Error::Data(_)
            | Error::Example { .. }
            | Error::UnmappedToken { .. }
            | Error::VocabMismatch { .. }
            | Error::NoData(_) => ErrorKind::Data,
            Error::Model(e) => model_kind(e.kind()),
            Error::Tokenizer(e) => model_kind(e.kind()),
            Error::Torch(_) => ErrorKind::Torch,
            Error::ModelNotFound(_) => ErrorKind::NotFound,
            Error::Config(_) => ErrorKind::Config,
            Error::Json { .. }
            | Error::Checkpoint { .. }
            | Error::Tensors { .. }
            | Error::CheckpointTensors { .. } => ErrorKind::Checkpoint,
            Error::Diverged { .. } => ErrorKind::Diverged,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

/// Whether an I/O "not found" error is somewhere in the chain of `error`.
fn caused_by_a_missing_file(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(e) = next {
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound)
        {
            return true;
        }
        next = e.source();
    }
    false
}

/// A `Result` with the trainer's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
