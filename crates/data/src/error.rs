//! The crate's error type.
//!
//! Every error that comes from a file carries a [`Location`] (file, line and, where known,
//! column) and, for content errors, a short excerpt of the offending line, so that a user can
//! find and fix the input without a debugger.
//!
//! An error's message says what failed and where; it leaves its cause out, and the cause is
//! chained as its [`source`](std::error::Error::source). Printing the chain joined with `": "`
//! gives one line with each cause once:
//!
//! ```text
//! data/bad.jsonl:2:28: cannot parse {"prompt": "x", "response": : EOF while parsing a value
//! ```
//!
//! Callers that branch on the kind of failure use [`Error::kind`].

use std::fmt;
use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where in a file something went wrong. Lines and columns are 1-based; the column counts
/// bytes within the line, as serde_json does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: u64,
    /// 1-based byte column within the line, where known.
    pub column: Option<u64>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.path.display(), self.line)?;
        if let Some(c) = self.column {
            write!(f, ":{c}")?;
        }
        Ok(())
    }
}

/// What kind of failure an [`Error`] is, for callers that branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A file, or the folder it should be in, does not exist.
    NotFound,
    /// Another I/O failure: permissions, a full disk, a broken device.
    Io,
    /// A file's content breaks the format: not UTF-8, not JSON, an unknown or mixed encoding,
    /// a broken rule, a duplicate id, a missing field or column, no records at all. Fix the file.
    BadInput,
    /// An example handed to the crate cannot be written: it breaks a rule of the format, its
    /// id is already in the file, or the encoding cannot hold it. Other examples may succeed.
    BadExample,
    /// A configuration value is out of range.
    Config,
}

/// Errors from reading, writing and transforming datasets.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a file.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file has no records at all.
    #[error("{}: the file is empty (no records)", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
    },
    /// A line is not valid UTF-8.
    #[error("{at}: invalid UTF-8 (first bad byte at column {})", at.column.unwrap_or(0))]
    InvalidUtf8 {
        /// Where; the column is the first invalid byte.
        at: Location,
        /// The decoder's error.
        #[source]
        source: std::str::Utf8Error,
    },
    /// A line is longer than the configured limit; it was skipped without being buffered.
    #[error("{at}: line is longer than the limit of {limit} bytes")]
    LineTooLong {
        /// Where.
        at: Location,
        /// The limit in bytes.
        limit: usize,
    },
    /// The last line has no newline and does not parse: the file was cut off mid-record.
    #[error("{at}: truncated last line (no newline and not a complete record): {excerpt}")]
    TruncatedLine {
        /// Where.
        at: Location,
        /// The start of the line.
        excerpt: String,
    },
    /// A line is not valid JSON, or has the wrong types for its encoding.
    #[error("{at}: cannot parse {excerpt}")]
    Json {
        /// Where, with the column serde_json reported.
        at: Location,
        /// The start of the line.
        excerpt: String,
        /// serde_json's error.
        #[source]
        source: JsonError,
    },
    /// A line is a JSON object that matches none of the known encodings.
    #[error("{at}: unrecognised record ({reason}): {excerpt}")]
    UnknownEncoding {
        /// Where.
        at: Location,
        /// Why no encoding matched.
        reason: &'static str,
        /// The start of the line.
        excerpt: String,
    },
    /// A file mixes encodings, which is almost always a mistake (for example a fine-tuning
    /// export appended to a full-format file).
    #[error("{at}: mixed encodings: this line is {found} but line {first_line} is {expected}")]
    MixedEncoding {
        /// Where the second encoding first appears.
        at: Location,
        /// The encoding of the first record.
        expected: crate::Encoding,
        /// The first line that used `expected`.
        first_line: u64,
        /// The encoding of this line.
        found: crate::Encoding,
    },
    /// A record parsed but breaks a rule of the format (for example a chat line with no
    /// assistant message, or more than 20 top logprobs).
    #[error("{at}: invalid record: {reason}")]
    Invalid {
        /// Where.
        at: Location,
        /// What is wrong.
        reason: String,
    },
    /// Two records in one file share an id.
    #[error("{at}: duplicate id {id} (first seen on line {first_line})")]
    DuplicateId {
        /// Where the second copy is.
        at: Location,
        /// The id.
        id: String,
        /// The line of the first copy.
        first_line: u64,
    },
    /// An example breaks a rule of the format before it is written.
    #[error("example {id}: {reason}")]
    InvalidExample {
        /// The example's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// The writer was asked to append an id that the file already holds.
    #[error("{}: example {id} is already in the file", path.display())]
    AlreadyWritten {
        /// The file.
        path: PathBuf,
        /// The id.
        id: String,
    },
    /// An example could not be serialised as JSON.
    #[error("example {id} cannot be serialised")]
    Serialize {
        /// The example's id.
        id: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// An example cannot be written in the requested encoding without losing data.
    #[error("example {id} cannot be written as {encoding} without losing data: {reason}")]
    NotRepresentable {
        /// The example's id.
        id: String,
        /// The target encoding.
        encoding: crate::Encoding,
        /// What would be lost.
        reason: &'static str,
    },
    /// A CSV prompt file could not be read.
    #[error("{}: cannot read CSV", path.display())]
    Csv {
        /// The file.
        path: PathBuf,
        /// The csv crate's error, which carries the record and line.
        #[source]
        source: csv::Error,
    },
    /// A required field or column is missing from a prompt file.
    #[error("{at}: missing {what}")]
    Missing {
        /// Where.
        at: Location,
        /// What is missing, e.g. `field "prompt"`.
        what: String,
    },
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl Error {
    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } => io_kind(source),
            Error::Csv { source, .. } => match source.kind() {
                csv::ErrorKind::Io(e) => io_kind(e),
                _ => ErrorKind::BadInput,
            },
            Error::EmptyFile { .. }
            | Error::InvalidUtf8 { .. }
            | Error::LineTooLong { .. }
            | Error::TruncatedLine { .. }
            | Error::Json { .. }
            | Error::UnknownEncoding { .. }
            | Error::MixedEncoding { .. }
            | Error::Invalid { .. }
            | Error::DuplicateId { .. }
            | Error::Missing { .. } => ErrorKind::BadInput,
            Error::InvalidExample { .. }
            | Error::Serialize { .. }
            | Error::AlreadyWritten { .. }
            | Error::NotRepresentable { .. } => ErrorKind::BadExample,
            Error::Config(_) => ErrorKind::Config,
        }
    }

    /// The location in a file, for errors that have one.
    pub fn location(&self) -> Option<&Location> {
        match self {
            Error::InvalidUtf8 { at, .. }
            | Error::LineTooLong { at, .. }
            | Error::TruncatedLine { at, .. }
            | Error::Json { at, .. }
            | Error::UnknownEncoding { at, .. }
            | Error::MixedEncoding { at, .. }
            | Error::Invalid { at, .. }
            | Error::DuplicateId { at, .. }
            | Error::Missing { at, .. } => Some(at),
            _ => None,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

fn io_kind(e: &std::io::Error) -> ErrorKind {
    match e.kind() {
        std::io::ErrorKind::NotFound => ErrorKind::NotFound,
        _ => ErrorKind::Io,
    }
}

/// serde_json's error for one JSONL line, the source of [`Error::Json`].
///
/// It prints serde_json's message without its " at line L column C" suffix: each line is
/// parsed alone, so that position is always line 1 and would contradict the file position
/// that [`Error::Json`] gives.
#[derive(Debug)]
pub struct JsonError(serde_json::Error);

impl JsonError {
    /// serde_json's error, with the position within the line.
    pub fn get_ref(&self) -> &serde_json::Error {
        &self.0
    }

    /// serde_json's error, with the position within the line.
    pub fn into_inner(self) -> serde_json::Error {
        self.0
    }
}

impl From<serde_json::Error> for JsonError {
    fn from(e: serde_json::Error) -> Self {
        JsonError(e)
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = self.0.to_string();
        let suffix = format!(" at line {} column {}", self.0.line(), self.0.column());
        f.write_str(full.strip_suffix(&suffix).unwrap_or(&full))
    }
}

impl std::error::Error for JsonError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// Writes `e` and its chain of sources on one line, joined with `": "`.
pub(crate) fn write_chain(f: &mut fmt::Formatter<'_>, e: &(dyn std::error::Error + 'static)) -> fmt::Result {
    write!(f, "{e}")?;
    let mut next = e.source();
    while let Some(cause) = next {
        write!(f, ": {cause}")?;
        next = cause.source();
    }
    Ok(())
}

/// Longest excerpt of a bad line kept in an error, in bytes (cut at a char boundary).
pub(crate) const EXCERPT_BYTES: usize = 80;

/// A short, printable excerpt of a line for error messages.
pub(crate) fn excerpt(line: &[u8]) -> String {
    let cut = &line[..line.len().min(EXCERPT_BYTES)];
    let text = String::from_utf8_lossy(cut);
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > EXCERPT_BYTES {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn location_display_has_line_and_column() {
        let l = Location {
            path: "a.jsonl".into(),
            line: 37,
            column: Some(5),
        };
        assert_eq!(l.to_string(), "a.jsonl:37:5");
        let l = Location { column: None, ..l };
        assert_eq!(l.to_string(), "a.jsonl:37");
    }

    #[test]
    fn json_errors_drop_serde_position() {
        let source = serde_json::from_str::<serde_json::Value>("{\"a\": }").unwrap_err();
        let at = Location {
            path: "x.jsonl".into(),
            line: 37,
            column: Some(source.column() as u64),
        };
        let e = Error::Json {
            at,
            excerpt: "{\"a\": }".into(),
            source: source.into(),
        };
        assert_eq!(e.to_string(), "x.jsonl:37:7: cannot parse {\"a\": }");
        assert_eq!(chain(&e), "x.jsonl:37:7: cannot parse {\"a\": }: expected value");
    }

    /// The error and its sources joined with ": ", as a binary prints them.
    fn chain(e: &(dyn std::error::Error + 'static)) -> String {
        struct Chain<'a>(&'a (dyn std::error::Error + 'static));
        impl fmt::Display for Chain<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_chain(f, self.0)
            }
        }
        Chain(e).to_string()
    }

    #[test]
    fn a_malformed_file_names_each_cause_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.jsonl");
        std::fs::write(
            &path,
            "{\"prompt\": \"p\", \"response\": \"r\"}\n{\"prompt\": \"x\", \"response\": \n",
        )
        .unwrap();
        let e = crate::read_file(&path).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::BadInput);
        let mut causes = Vec::new();
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(cause) = next {
            causes.push(cause.to_string());
            next = cause.source();
        }
        assert_eq!(causes.len(), 2, "{causes:?}");
        let line = causes.join(": ");
        assert_eq!(line, chain(&e));
        assert_eq!(
            line,
            format!(
                "{}:2:28: cannot parse {{\"prompt\": \"x\", \"response\": : EOF while parsing a value",
                path.display()
            )
        );
        for cause in &causes {
            assert_eq!(line.matches(cause.as_str()).count(), 1, "{cause:?} in {line:?}");
        }
        assert!(
            !line.contains("line 1"),
            "serde's in-line position contradicts the file's: {line}"
        );
    }

    #[test]
    fn io_errors_chain_their_cause_and_say_not_found() {
        let e = crate::read_file("/nonexistent/distill/x.jsonl").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert_eq!(e.to_string(), "/nonexistent/distill/x.jsonl");
        let source = std::error::Error::source(&e).expect("the io error is chained");
        assert_eq!(chain(&e), format!("/nonexistent/distill/x.jsonl: {source}"));
    }

    #[test]
    fn excerpt_is_bounded_and_printable() {
        let long = vec![b'x'; 500];
        let e = excerpt(&long);
        assert!(e.len() <= EXCERPT_BYTES + '…'.len_utf8());
        assert!(e.ends_with('…'));
        assert_eq!(excerpt(b"a\tb\x00c"), "a b c");
        // A cut through a multi-byte char does not panic.
        let s = "é".repeat(100);
        let _ = excerpt(s.as_bytes());
    }
}
