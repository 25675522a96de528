//! Errors from reading and writing GGUF files.

use std::path::PathBuf;

/// Everything that can go wrong with a GGUF file. Offsets are byte positions in the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be opened, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
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
    /// A structurally invalid value: a bad type code, an impossible size, a bad string.
    #[error("invalid GGUF at byte {offset}: {reason}")]
    Invalid {
        /// Where the problem was found.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A tensor whose data lies outside the file or whose size overflows.
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
    /// A metadata key that is missing or has the wrong type.
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

/// A `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
