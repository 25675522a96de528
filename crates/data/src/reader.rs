//! The streaming reader: JSONL in any of the three encodings, in constant memory.
//!
//! [`ExampleReader`] is an iterator of `Result<Example>`. It reads one line at a time into a
//! reused buffer capped at [`ReaderOptions::max_line_bytes`], so memory does not grow with
//! the file (the optional duplicate-id check keeps 16 bytes per record).
//!
//! - **Strict** mode (the default) stops at the first bad line and yields its error, which
//!   names the file, line, column and an excerpt.
//! - **Lenient** mode skips bad lines, counts them, and keeps the first
//!   [`MAX_REPORTED_ERRORS`] in the [`ReadReport`], available at any time from
//!   [`ExampleReader::report`].
//!
//! The encoding is detected from the first record (or fixed with [`ReaderOptions::encoding`]);
//! a later line in another encoding is a [`Error::MixedEncoding`].

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::encoding::{self, DecodeError, Encoding};
use crate::error::{Error, Location, Result, excerpt};
use crate::example::Example;
use crate::lines::{LineInfo, LineReader};
use crate::writer::DEFAULT_MAX_LINE_BYTES;

/// How many skipped-line errors a lenient [`ReadReport`] keeps (it counts them all).
pub const MAX_REPORTED_ERRORS: usize = 100;

/// What to do with bad lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Stop at the first bad line with its error.
    #[default]
    Strict,
    /// Skip bad lines, count them, and report them in [`ReadReport`].
    Lenient,
}

/// What to do when two records share an id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DuplicateIds {
    /// Treat the second as a bad line (default). Costs 16 bytes of memory per record.
    #[default]
    Reject,
    /// Accept duplicates, in truly constant memory.
    Allow,
}

/// Options for [`ExampleReader`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaderOptions {
    /// Strict or lenient.
    pub mode: Mode,
    /// Longest line read, in bytes; longer lines are bad lines and are skipped without being
    /// buffered.
    pub max_line_bytes: usize,
    /// The duplicate-id policy.
    pub duplicate_ids: DuplicateIds,
    /// Require this encoding instead of detecting it from the first record.
    pub encoding: Option<Encoding>,
}

impl Default for ReaderOptions {
    fn default() -> Self {
        ReaderOptions {
            mode: Mode::Strict,
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
            duplicate_ids: DuplicateIds::Reject,
            encoding: None,
        }
    }
}

impl ReaderOptions {
    /// Default options in lenient mode.
    pub fn lenient() -> Self {
        ReaderOptions {
            mode: Mode::Lenient,
            ..Self::default()
        }
    }
}

/// A summary of what a reader has read so far.
#[derive(Debug, Default)]
pub struct ReadReport {
    /// Lines read, including blank and bad ones.
    pub lines: u64,
    /// Examples yielded.
    pub examples: u64,
    /// Blank lines, which are ignored.
    pub blank_lines: u64,
    /// Bad lines skipped (lenient mode).
    pub bad_lines: u64,
    /// The first [`MAX_REPORTED_ERRORS`] bad-line errors.
    pub errors: Vec<Error>,
    /// Whether the file started with a UTF-8 byte-order mark, which is skipped.
    pub bom: bool,
    /// The file's encoding, once known.
    pub encoding: Option<Encoding>,
}

impl fmt::Display for ReadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} examples from {} lines", self.examples, self.lines)?;
        if let Some(e) = self.encoding {
            write!(f, " ({e})")?;
        }
        if self.bom {
            write!(f, "; skipped a byte-order mark")?;
        }
        if self.bad_lines > 0 {
            write!(
                f,
                "; skipped {} bad line{}",
                self.bad_lines,
                if self.bad_lines == 1 { "" } else { "s" }
            )?;
            for e in &self.errors {
                f.write_str("\n  ")?;
                crate::error::write_chain(f, e)?;
            }
            let more = self.bad_lines - self.errors.len() as u64;
            if more > 0 {
                write!(f, "\n  … and {more} more")?;
            }
        }
        Ok(())
    }
}

/// Streams examples from JSONL. See the [module docs](self).
pub struct ExampleReader<R> {
    lines: LineReader<R>,
    path: PathBuf,
    options: ReaderOptions,
    buf: Vec<u8>,
    first_line: Option<(Encoding, u64)>,
    seen: HashMap<u128, u64>,
    report: ReadReport,
    done: bool,
}

impl ExampleReader<BufReader<File>> {
    /// Opens `path` with default (strict) options.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, ReaderOptions::default())
    }

    /// Opens `path` with `options`.
    pub fn open_with(path: impl AsRef<Path>, options: ReaderOptions) -> Result<Self> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Self::from_reader(BufReader::with_capacity(256 * 1024, file), path, options)
    }
}

impl<R: BufRead> ExampleReader<R> {
    /// Reads from any buffered reader; `path` names it in errors.
    pub fn from_reader(reader: R, path: impl Into<PathBuf>, options: ReaderOptions) -> Result<Self> {
        if options.max_line_bytes == 0 {
            return Err(Error::Config("max_line_bytes must be positive".into()));
        }
        Ok(ExampleReader {
            lines: LineReader::new(reader, options.max_line_bytes),
            path: path.into(),
            options,
            buf: Vec::new(),
            first_line: options.encoding.map(|e| (e, 0)),
            seen: HashMap::new(),
            report: ReadReport {
                encoding: options.encoding,
                ..ReadReport::default()
            },
            done: false,
        })
    }

    /// What has been read so far; complete once the iterator has returned `None`.
    pub fn report(&self) -> &ReadReport {
        &self.report
    }

    /// Consumes the reader and returns its report.
    pub fn into_report(self) -> ReadReport {
        self.report
    }

    /// The file's encoding, once the first record has been read (or as given in the options).
    pub fn encoding(&self) -> Option<Encoding> {
        self.first_line.map(|(e, _)| e)
    }

    /// Reads every example, in order. In lenient mode, bad lines are skipped and counted in the
    /// returned report.
    pub fn read_all(mut self) -> Result<(Vec<Example>, ReadReport)> {
        let mut out = Vec::new();
        for e in self.by_ref() {
            out.push(e?);
        }
        Ok((out, self.report))
    }

    fn at(&self, line: u64, column: Option<u64>) -> Location {
        Location {
            path: self.path.clone(),
            line,
            column,
        }
    }

    /// Decodes the line in `self.buf`; `skip` is how many leading bytes (a BOM) to ignore.
    fn decode(&mut self, info: LineInfo, skip: usize) -> Result<Example> {
        if info.too_long {
            return Err(Error::LineTooLong {
                at: self.at(info.number, None),
                limit: self.options.max_line_bytes,
            });
        }
        // Validated once here; serde_json's `from_str` then skips its own UTF-8 checks.
        let line = match std::str::from_utf8(&self.buf[skip..]) {
            Ok(l) => l,
            Err(source) => {
                let at = self.at(info.number, Some((source.valid_up_to() + 1 + skip) as u64));
                return Err(Error::InvalidUtf8 { at, source });
            }
        };
        let encoding = match self.first_line {
            Some((e, _)) => e,
            None => match encoding::detect(line) {
                Ok(e) => e,
                Err(err) => return Err(self.decode_error(err, info, skip, None)),
            },
        };
        let example = match encoding::decode(line, encoding) {
            Ok(e) => e,
            Err(err) => return Err(self.decode_error(err, info, skip, Some(encoding))),
        };
        if let Err(reason) = example.check() {
            return Err(Error::Invalid {
                at: self.at(info.number, None),
                reason,
            });
        }
        if self.first_line.is_none() {
            self.first_line = Some((encoding, info.number));
            self.report.encoding = Some(encoding);
        }
        if self.options.duplicate_ids == DuplicateIds::Reject {
            let key = id_key(&example.id);
            if let Some(&first_line) = self.seen.get(&key) {
                let at = self.at(info.number, None);
                return Err(Error::DuplicateId {
                    at,
                    id: example.id,
                    first_line,
                });
            }
            self.seen.insert(key, info.number);
        }
        Ok(example)
    }

    fn decode_error(
        &self,
        err: DecodeError,
        info: LineInfo,
        skip: usize,
        expected: Option<Encoding>,
    ) -> Error {
        let line = &self.buf[skip..];
        match err {
            DecodeError::Json(source) => {
                if !info.terminated && source.is_eof() {
                    return Error::TruncatedLine {
                        at: self.at(info.number, None),
                        excerpt: excerpt(line),
                    };
                }
                let column = Some((source.column() + skip) as u64);
                Error::Json {
                    at: self.at(info.number, column),
                    excerpt: excerpt(line),
                    source: source.into(),
                }
            }
            DecodeError::Unknown(reason) => Error::UnknownEncoding {
                at: self.at(info.number, None),
                reason,
                excerpt: excerpt(line),
            },
            DecodeError::Invalid(reason) => Error::Invalid {
                at: self.at(info.number, None),
                reason,
            },
            DecodeError::Mixed(found) => match self.first_line {
                // Line 0 marks an encoding fixed by the options rather than by a record.
                Some((expected, 0)) => Error::Invalid {
                    at: self.at(info.number, None),
                    reason: format!("this line is {found}, but the reader was asked for {expected}"),
                },
                _ => Error::MixedEncoding {
                    at: self.at(info.number, None),
                    expected: expected.unwrap_or(found),
                    first_line: self.first_line.map_or(0, |(_, l)| l),
                    found,
                },
            },
        }
    }

    /// Handles a bad line: strict mode yields it and stops, lenient mode records it.
    fn bad(&mut self, e: Error) -> Option<Result<Example>> {
        match self.options.mode {
            Mode::Strict => {
                self.done = true;
                Some(Err(e))
            }
            Mode::Lenient => {
                tracing::debug!(error = %e, "skipping bad line");
                self.report.bad_lines += 1;
                if self.report.errors.len() < MAX_REPORTED_ERRORS {
                    self.report.errors.push(e);
                }
                None
            }
        }
    }
}

impl<R: BufRead> Iterator for ExampleReader<R> {
    type Item = Result<Example>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let info = match self.lines.next_line(&mut self.buf) {
                Ok(Some(info)) => info,
                Ok(None) => {
                    self.done = true;
                    if self.report.examples == 0 && self.report.bad_lines == 0 {
                        return Some(Err(Error::EmptyFile {
                            path: self.path.clone(),
                        }));
                    }
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(Error::io(&self.path, e)));
                }
            };
            self.report.lines += 1;
            let mut skip = 0;
            if info.number == 1 && self.buf.starts_with(b"\xEF\xBB\xBF") {
                // Azure OpenAI's fine-tuning docs require a BOM, so files made for it have one.
                tracing::debug!(path = %self.path.display(), "skipping a UTF-8 byte-order mark");
                self.report.bom = true;
                skip = 3;
            }
            if self.buf[skip..].iter().all(u8::is_ascii_whitespace) && !info.too_long {
                self.report.blank_lines += 1;
                continue;
            }
            match self.decode(info, skip) {
                Ok(e) => {
                    self.report.examples += 1;
                    return Some(Ok(e));
                }
                Err(e) => {
                    if let Some(r) = self.bad(e) {
                        return Some(r);
                    }
                }
            }
        }
        None
    }
}

/// A 128-bit key for an id (SHA-256 prefix), so the duplicate check stores 16 bytes per record
/// whatever the id's length.
pub(crate) fn id_key(id: &str) -> u128 {
    let h = Sha256::digest(id.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    u128::from_le_bytes(b)
}

/// Reads a whole file strictly. A convenience for small files and tests.
pub fn read_file(path: impl AsRef<Path>) -> Result<Vec<Example>> {
    Ok(ExampleReader::open(path)?.read_all()?.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(input: &[u8], options: ReaderOptions) -> (Vec<Result<Example>>, ReadReport) {
        let mut r = ExampleReader::from_reader(input, "t.jsonl", options).unwrap();
        let items: Vec<_> = r.by_ref().collect();
        (items, r.into_report())
    }

    const LAB: &str = "{\"prompt\":\"p\",\"response\":\"r\"}";

    #[test]
    fn reads_lab_lines_and_skips_blanks() {
        let input = format!("{LAB}\n\n{}\n", LAB.replace("\"p\"", "\"q\""));
        let (items, rep) = read(input.as_bytes(), ReaderOptions::default());
        assert_eq!(items.len(), 2);
        assert!(items.iter().all(Result::is_ok));
        assert_eq!((rep.lines, rep.examples, rep.blank_lines), (3, 2, 1));
        assert_eq!(rep.encoding, Some(Encoding::Lab));
    }

    #[test]
    fn empty_and_blank_files_are_errors() {
        for input in [&b""[..], b"\n  \n"] {
            let (items, _) = read(input, ReaderOptions::default());
            assert!(matches!(items[..], [Err(Error::EmptyFile { .. })]));
        }
    }

    #[test]
    fn leading_bom_is_skipped_and_reported_but_not_elsewhere() {
        let input = format!("\u{feff}{LAB}\n");
        let (items, rep) = read(input.as_bytes(), ReaderOptions::default());
        assert_eq!(items.len(), 1);
        assert!(items[0].is_ok());
        assert!(rep.bom);
        assert!(rep.to_string().contains("skipped a byte-order mark"));
        let input = format!("{LAB}\n\u{feff}{}\n", LAB.replace("\"p\"", "\"q\""));
        let (items, _) = read(input.as_bytes(), ReaderOptions::default());
        assert!(matches!(&items[1], Err(Error::Json { at, .. }) if at.line == 2));
    }

    #[test]
    fn invalid_utf8_names_column() {
        let input = b"{\"prompt\":\"\xff\",\"response\":\"r\"}\n";
        let (items, _) = read(input, ReaderOptions::default());
        match &items[..] {
            [Err(Error::InvalidUtf8 { at, .. })] => assert_eq!((at.line, at.column), (1, Some(12))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn truncated_last_line_is_named() {
        let input = format!("{LAB}\n{{\"prompt\":\"p2\",\"resp");
        let (items, _) = read(input.as_bytes(), ReaderOptions::default());
        assert!(items[0].is_ok());
        assert!(
            matches!(&items[1], Err(Error::TruncatedLine { at, .. }) if at.line == 2),
            "{items:?}"
        );
        // A last line without newline that is complete is fine.
        let (items, _) = read(LAB.as_bytes(), ReaderOptions::default());
        assert!(items[0].is_ok());
    }

    #[test]
    fn wrong_types_give_json_error_with_excerpt() {
        let input = format!("{LAB}\n{{\"prompt\":1,\"response\":\"r\"}}\n");
        let (items, _) = read(input.as_bytes(), ReaderOptions::default());
        let e = items[1].as_ref().unwrap_err();
        assert!(
            matches!(e, Error::Json { at, .. } if at.line == 2 && at.column.is_some()),
            "{e}"
        );
        let msg = e.to_string();
        assert!(msg.starts_with("t.jsonl:2:"), "{msg}");
        assert!(msg.contains("{\"prompt\":1"), "{msg}");
    }

    #[test]
    fn mixed_encodings_are_reported() {
        let chat = r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#;
        let input = format!("{LAB}\n{chat}\n");
        let (items, _) = read(input.as_bytes(), ReaderOptions::default());
        let e = items[1].as_ref().unwrap_err();
        match e {
            Error::MixedEncoding {
                at,
                expected,
                found,
                first_line,
            } => {
                assert_eq!(
                    (at.line, *expected, *found, *first_line),
                    (2, Encoding::Lab, Encoding::Chat, 1)
                );
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("mixed encodings"), "{e}");
    }

    #[test]
    fn duplicate_ids_rejected_unless_allowed() {
        let input = format!("{LAB}\n{LAB}\n");
        let (items, _) = read(input.as_bytes(), ReaderOptions::default());
        assert!(matches!(&items[1], Err(Error::DuplicateId { first_line: 1, at, .. }) if at.line == 2));
        let opts = ReaderOptions {
            duplicate_ids: DuplicateIds::Allow,
            ..Default::default()
        };
        let (items, _) = read(input.as_bytes(), opts);
        assert!(items.iter().all(Result::is_ok));
    }

    #[test]
    fn long_lines_are_capped_and_skipped_in_lenient_mode() {
        let long = format!("{{\"prompt\":\"{}\",\"response\":\"r\"}}", "x".repeat(10_000));
        let input = format!("{long}\n{LAB}\n");
        let opts = ReaderOptions {
            max_line_bytes: 1000,
            ..ReaderOptions::lenient()
        };
        let (items, rep) = read(input.as_bytes(), opts);
        assert_eq!(items.len(), 1);
        assert_eq!(rep.bad_lines, 1);
        assert!(matches!(&rep.errors[0], Error::LineTooLong { limit: 1000, at } if at.line == 1));
        let opts = ReaderOptions {
            max_line_bytes: 1000,
            ..Default::default()
        };
        let (items, _) = read(input.as_bytes(), opts);
        assert!(matches!(items[..], [Err(Error::LineTooLong { .. })]));
    }

    #[test]
    fn forced_encoding_rejects_others() {
        let opts = ReaderOptions {
            encoding: Some(Encoding::Full),
            ..Default::default()
        };
        let (items, _) = read(format!("{LAB}\n").as_bytes(), opts);
        let e = items[0].as_ref().unwrap_err();
        assert!(matches!(e, Error::Invalid { at, .. } if at.line == 1), "{e}");
        assert!(
            e.to_string()
                .contains("is lab prompt/response, but the reader was asked for full distill"),
            "{e}"
        );
    }

    #[test]
    fn report_lists_skipped_lines() {
        let input = format!("{LAB}\nnope\n");
        let (_, rep) = read(input.as_bytes(), ReaderOptions::lenient());
        let text = rep.to_string();
        assert!(
            text.contains("1 examples from 2 lines (lab prompt/response); skipped 1 bad line\n  t.jsonl:2:"),
            "{text}"
        );
    }
}
