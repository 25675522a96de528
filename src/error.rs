//! The facade's error type: the crates' errors, chained, plus what the lab itself checks.

use std::path::PathBuf;

/// What can go wrong in the facade's adapters and the lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing a dataset failed.
    #[error(transparent)]
    Data(#[from] distill_data::Error),
    /// The teacher or the generation engine failed.
    #[error(transparent)]
    Teacher(#[from] distill_teacher::Error),
    /// Loading, running, training or saving a model failed.
    #[error(transparent)]
    Student(#[from] distill_student::Error),
    /// Training failed.
    #[error(transparent)]
    Train(#[from] distill_student::train::Error),
    /// Scoring or reporting failed.
    #[error(transparent)]
    Eval(#[from] distill_eval::Error),
    /// A file or directory could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file of the run could not be written or read back.
    #[error("{}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// The run directory holds a run of another configuration; resuming it would mix the two.
    #[error(
        "{} holds a run with another configuration (differs in: {differs}); choose another run directory or remove it",
        dir.display()
    )]
    RunDirMismatch {
        /// The run directory.
        dir: PathBuf,
        /// The settings that differ.
        differs: String,
    },
    /// The input cannot be used as asked (too few prompts, no test split, …).
    #[error("{0}")]
    Input(String),
    /// The teacher's spend reached the run's cost budget before every prompt was answered.
    #[error(
        "the teacher's spend reached the cost budget of ${max:.2} (${spent:.4} this session); the same command continues, and may spend up to the budget again"
    )]
    BudgetReached {
        /// Dollars spent in this session.
        spent: f64,
        /// The budget.
        max: f64,
    },
    /// A stage stopped before its end because it was asked to stop; the run directory resumes it.
    #[error("stopped during {0}; run the same command again to continue")]
    Interrupted(&'static str),
}

/// A `Result` with the facade's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The `Io` error for `path`, for `map_err`.
pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

/// The `Json` error for `path`, for `map_err`.
pub(crate) fn json(path: impl Into<PathBuf>) -> impl FnOnce(serde_json::Error) -> Error {
    let path = path.into();
    move |source| Error::Json { path, source }
}
