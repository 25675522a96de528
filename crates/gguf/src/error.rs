//! Errors from reading and writing GGUF files.
//!
//! As everywhere in distill, a message leaves its source out and the source is chained
//! (`std::error::Error::source`), so that walking the chain prints each cause once.

use std::path::PathBuf;

/// Everything that can go wrong with a GGUF file. Offsets are byte positions in the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// GGUF bytes could not be written to their destination.
    #[error("cannot write the GGUF data")]
    Write(#[source] std::io::Error),
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file (magic {found:02x?})")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A GGUF version this reader does not know.
    #[error("unsupported GGUF version {0} (supported: 2 and 3)")]
    UnsupportedVersion(u32),
    /// The file ends before a structure that it declares.
    #[error("truncated at byte {offset}: needed {needed} more bytes for {what}")]
    Truncated {
        /// Where reading stopped.
        offset: u64,
        /// How many bytes were missing.
        needed: u64,
        /// What was being read.
        what: &'static str,
    },
    /// A structurally invalid value: a bad type code, an impossible size.
    #[error("invalid GGUF at byte {offset}: {reason}")]
    Invalid {
        /// Where the problem was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A string (a key, a name, a value) that is not UTF-8.
    #[error("invalid GGUF at byte {offset}: {what} is not UTF-8")]
    NotUtf8 {
        /// Where the string starts.
        offset: u64,
        /// What the string is.
        what: &'static str,
        /// The decoding error.
        #[source]
        source: std::string::FromUtf8Error,
    },
    /// A tensor whose data lies outside the file, whose size overflows, or whose bytes do not
    /// match its type and shape.
    #[error("tensor `{name}`: {reason}")]
    BadTensor {
        /// The tensor's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor type that cannot be dequantized here.
    #[error("tensor `{name}` has type {kind:?}, which cannot be dequantized")]
    UnsupportedType {
        /// The tensor's name.
        name: String,
        /// Its type.
        kind: crate::GgmlType,
    },
    /// A metadata key that is not in the file.
    #[error("metadata `{0}`: missing")]
    MissingMetadata(String),
    /// A metadata value of the wrong type, or one that cannot be written.
    #[error("metadata `{key}`: {reason}")]
    Metadata {
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A tensor name that is not in the file.
    #[error("no tensor named `{0}`")]
    MissingTensor(String),
}

/// What kind of failure an [`Error`] is, for callers that treat them differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file could not be opened, read or written (the source says why).
    Io,
    /// The bytes are not a well-formed GGUF file, or not what a writer was asked to write.
    Malformed,
    /// Well-formed, but a version or tensor type this crate does not handle.
    Unsupported,
    /// A metadata key or a tensor that is not in the file.
    Missing,
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { .. } | Error::Write(_) => ErrorKind::Io,
            Error::BadMagic { .. }
            | Error::Truncated { .. }
            | Error::Invalid { .. }
            | Error::NotUtf8 { .. }
            | Error::BadTensor { .. }
            | Error::Metadata { .. } => ErrorKind::Malformed,
            Error::UnsupportedVersion(_) | Error::UnsupportedType { .. } => ErrorKind::Unsupported,
            Error::MissingMetadata(_) | Error::MissingTensor(_) => ErrorKind::Missing,
        }
    }
}

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
