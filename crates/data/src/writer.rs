//! The crash-safe append writer that the teacher uses.
//!
//! ## Guarantees
//!
//! - **One record, one `write`.** Each example is serialised to a buffer ending in `\n`, and
//!   the whole buffer is handed to the OS in one `write_all` on a file opened with `O_APPEND`.
//!   A record is complete exactly when its `\n` is on disk.
//! - **Torn tails are cut, never merged.** A process killed mid-write (`kill -9`, OOM) can leave
//!   a last line with no `\n`. [`ExampleWriter::open`] detects it, reports it as a [`TornTail`]
//!   (also as a `tracing` warning), and truncates the file back to the last `\n` before
//!   anything is appended, so the next record never joins the fragment.
//! - **Earlier records are never rewritten.** The writer only appends, and only truncates the
//!   torn fragment past the last newline. If a write fails (disk full), the partial line is cut
//!   off again before the error is returned.
//! - **Resume.** [`ExampleWriter::completed_ids`] lists every id already in the file; the
//!   writer refuses to append an id twice ([`Error::AlreadyWritten`]).
//!
//! ## fsync policy
//!
//! Surviving `kill -9` needs no fsync: once `write` returns, the data is in the kernel's page
//! cache and reaches the disk even if the process dies. fsync only matters for a power loss
//! or kernel crash. [`SyncPolicy::EveryRecord`] (the default) calls `fdatasync` after each
//! record, because a teacher record costs a paid API call and takes far longer than an fsync.
//! [`SyncPolicy::Every`] batches, and [`SyncPolicy::OnClose`] syncs only in
//! [`ExampleWriter::sync`] and on drop. When the file is created, its directory is synced too,
//! so that the file itself survives a power loss.
//!
//! Only one writer may append to a file at a time; the writer takes no lock.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Location, Result, excerpt};
use crate::example::Example;
use crate::lines::LineReader;

/// Default cap on one line, for reading and writing: 64 MiB, room for a 16k-token response
/// with 20 top logprobs per token.
pub const DEFAULT_MAX_LINE_BYTES: usize = 64 << 20;

/// When the writer calls `fdatasync`. See the [module docs](self) for what each guarantees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncPolicy {
    /// After every record (default): a record is durable once `append` returns.
    #[default]
    EveryRecord,
    /// After every `n` records; up to `n - 1` records can be lost on power loss (not on a
    /// process kill).
    Every(u32),
    /// Only on [`ExampleWriter::sync`] and on drop.
    OnClose,
}

/// Options for [`ExampleWriter::open_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterOptions {
    /// When to fsync.
    pub sync: SyncPolicy,
    /// The longest line the writer will write or accept on reopen, in bytes.
    pub max_line_bytes: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            sync: SyncPolicy::default(),
            max_line_bytes: DEFAULT_MAX_LINE_BYTES,
        }
    }
}

/// A fragment left by an interrupted write, found and removed by [`ExampleWriter::open`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Byte offset where the fragment started (the new file length).
    pub offset: u64,
    /// How many bytes were cut off.
    pub len: u64,
    /// The start of the fragment, for the report.
    pub excerpt: String,
}

/// Appends examples to a full-format JSONL file, safely across crashes and restarts.
#[derive(Debug)]
pub struct ExampleWriter {
    path: PathBuf,
    file: File,
    options: WriterOptions,
    ids: HashSet<String>,
    len: u64,
    unsynced: u32,
    torn: Option<TornTail>,
    buf: Vec<u8>,
}

impl ExampleWriter {
    /// Opens (or creates) `path` for appending with default options. See [`Self::open_with`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, WriterOptions::default())
    }

    /// Opens (or creates) `path` for appending. A torn last line is cut off and reported in
    /// [`Self::torn_tail`]; every complete line must be a full-format record, otherwise this
    /// fails with the line's location and leaves the file untouched.
    pub fn open_with(path: impl AsRef<Path>, options: WriterOptions) -> Result<Self> {
        if options.max_line_bytes == 0 {
            return Err(Error::Config("max_line_bytes must be positive".into()));
        }
        let path = path.as_ref().to_path_buf();
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if !existed {
            sync_parent_dir(&path)?;
        }
        let mut len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        let end = complete_prefix_len(&file, len).map_err(|e| Error::io(&path, e))?;
        let ids = scan_ids(&path, &file, end, options.max_line_bytes)?;
        let mut torn = None;
        if end < len {
            let mut head = vec![0u8; (len - end).min(crate::error::EXCERPT_BYTES as u64 + 1) as usize];
            (&file)
                .seek(SeekFrom::Start(end))
                .map_err(|e| Error::io(&path, e))?;
            (&file).read_exact(&mut head).map_err(|e| Error::io(&path, e))?;
            let t = TornTail {
                offset: end,
                len: len - end,
                excerpt: excerpt(&head),
            };
            tracing::warn!(
                path = %path.display(),
                offset = t.offset,
                bytes = t.len,
                "cutting off a torn last line left by an interrupted write"
            );
            file.set_len(end).map_err(|e| Error::io(&path, e))?;
            file.sync_all().map_err(|e| Error::io(&path, e))?;
            len = end;
            torn = Some(t);
        }
        Ok(ExampleWriter {
            path,
            file,
            options,
            ids,
            len,
            unsynced: 0,
            torn,
            buf: Vec::new(),
        })
    }

    /// The torn fragment that [`Self::open`] cut off, if there was one.
    pub fn torn_tail(&self) -> Option<&TornTail> {
        self.torn.as_ref()
    }

    /// Ids of every record in the file, including those appended through this writer.
    pub fn completed_ids(&self) -> &HashSet<String> {
        &self.ids
    }

    /// Whether the file already holds `id`.
    pub fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one example as one line and syncs according to the [`SyncPolicy`].
    ///
    /// Fails without writing anything if the example breaks a format rule
    /// ([`Example::check`]), its id is already in the file, or its line would exceed
    /// `max_line_bytes`.
    pub fn append(&mut self, example: &Example) -> Result<()> {
        example.check().map_err(|reason| Error::InvalidExample {
            id: example.id.clone(),
            reason,
        })?;
        if self.ids.contains(&example.id) {
            return Err(Error::AlreadyWritten {
                path: self.path.clone(),
                id: example.id.clone(),
            });
        }
        self.buf.clear();
        serde_json::to_writer(&mut self.buf, example).map_err(|source| Error::Serialize {
            id: example.id.clone(),
            source,
        })?;
        if self.buf.len() > self.options.max_line_bytes {
            return Err(Error::InvalidExample {
                id: example.id.clone(),
                reason: format!(
                    "the record is {} bytes, over the line limit of {}",
                    self.buf.len(),
                    self.options.max_line_bytes
                ),
            });
        }
        self.buf.push(b'\n');
        if let Err(e) = self.file.write_all(&self.buf) {
            // Cut any partial line so the file stays whole; report the write error.
            let _ = self.file.set_len(self.len);
            return Err(Error::io(&self.path, e));
        }
        self.len += self.buf.len() as u64;
        self.ids.insert(example.id.clone());
        self.unsynced += 1;
        let due = match self.options.sync {
            SyncPolicy::EveryRecord => true,
            SyncPolicy::Every(n) => self.unsynced >= n.max(1),
            SyncPolicy::OnClose => false,
        };
        if due {
            self.sync()?;
        }
        Ok(())
    }

    /// Flushes every appended record to stable storage now.
    pub fn sync(&mut self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))?;
        self.unsynced = 0;
        Ok(())
    }
}

impl Drop for ExampleWriter {
    fn drop(&mut self) {
        if self.unsynced > 0 {
            // Best effort: drop cannot report errors; call `sync` to see them.
            let _ = self.file.sync_data();
        }
    }
}

/// The length of the file up to and including its last `\n`.
fn complete_prefix_len(file: &File, len: u64) -> std::io::Result<u64> {
    const CHUNK: u64 = 64 * 1024;
    let mut f = file;
    let mut end = len;
    let mut buf = vec![0u8; CHUNK as usize];
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let n = (end - start) as usize;
        f.seek(SeekFrom::Start(start))?;
        f.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(start + i as u64 + 1);
        }
        end = start;
    }
    Ok(0)
}

#[derive(Deserialize)]
struct Head {
    format_version: Option<u32>,
    id: Option<String>,
}

/// Collects the ids of the first `end` bytes, checking that each line is a full record head.
fn scan_ids(path: &Path, file: &File, end: u64, cap: usize) -> Result<HashSet<String>> {
    let mut f = file;
    f.seek(SeekFrom::Start(0)).map_err(|e| Error::io(path, e))?;
    let mut lines = LineReader::new(BufReader::with_capacity(256 * 1024, f.take(end)), cap);
    let mut ids = HashSet::new();
    let mut buf = Vec::new();
    while let Some(info) = lines.next_line(&mut buf).map_err(|e| Error::io(path, e))? {
        let at = |column| Location {
            path: path.to_path_buf(),
            line: info.number,
            column,
        };
        if info.too_long {
            return Err(Error::LineTooLong {
                at: at(None),
                limit: cap,
            });
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let head: Head = serde_json::from_slice(&buf).map_err(|source| Error::Json {
            at: at(Some(source.column() as u64)),
            excerpt: excerpt(&buf),
            source: source.into(),
        })?;
        match head {
            Head {
                format_version: Some(crate::FORMAT_VERSION),
                id: Some(id),
            } => {
                ids.insert(id);
            }
            _ => {
                return Err(Error::Invalid {
                    at: at(None),
                    reason: "not a full-format record (format_version 1 with an id); the writer \
                             appends only to full-format files"
                        .into(),
                });
            }
        }
    }
    Ok(ids)
}

fn sync_parent_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Directories can be opened and fsynced on Unix; elsewhere this is not needed or possible.
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::Message;

    fn ex(i: usize) -> Example {
        Example::new(vec![Message::user(format!("prompt {i}"))], format!("answer {i}"))
    }

    #[test]
    fn appends_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        {
            let mut w = ExampleWriter::open(&p).unwrap();
            assert!(w.completed_ids().is_empty());
            w.append(&ex(0)).unwrap();
            w.append(&ex(1)).unwrap();
            assert!(matches!(w.append(&ex(1)), Err(Error::AlreadyWritten { .. })));
        }
        let w = ExampleWriter::open(&p).unwrap();
        assert!(w.torn_tail().is_none());
        assert_eq!(w.completed_ids().len(), 2);
        assert!(w.contains(&ex(0).id));
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 2);
    }

    #[test]
    fn torn_tail_is_cut_and_not_merged() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        let mut w = ExampleWriter::open_with(
            &p,
            WriterOptions {
                sync: SyncPolicy::OnClose,
                ..Default::default()
            },
        )
        .unwrap();
        w.append(&ex(0)).unwrap();
        drop(w);
        let whole = std::fs::read(&p).unwrap();
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"format_version\":1,\"id\":\"abc\",\"mess")
            .unwrap();
        drop(f);
        let mut w = ExampleWriter::open(&p).unwrap();
        let t = w.torn_tail().unwrap().clone();
        assert_eq!(t.offset, whole.len() as u64);
        assert!(t.excerpt.starts_with("{\"format_version\""));
        assert_eq!(w.completed_ids().len(), 1);
        w.append(&ex(1)).unwrap();
        drop(w);
        let text = std::fs::read_to_string(&p).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        for l in lines {
            serde_json::from_str::<Example>(l).unwrap();
        }
    }

    #[test]
    fn corrupt_complete_line_is_an_error_and_file_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, "{\"prompt\":\"a\",\"response\":\"b\"}\n").unwrap();
        let e = ExampleWriter::open(&p).unwrap_err();
        assert!(matches!(e, Error::Invalid { ref at, .. } if at.line == 1), "{e}");
        std::fs::write(&p, "not json\n{").unwrap();
        let e = ExampleWriter::open(&p).unwrap_err();
        assert!(matches!(e, Error::Json { ref at, .. } if at.line == 1), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"not json\n{");
    }

    #[test]
    fn refuses_invalid_and_oversized_examples() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        let mut w = ExampleWriter::open_with(
            &p,
            WriterOptions {
                max_line_bytes: 200,
                ..Default::default()
            },
        )
        .unwrap();
        let mut e = ex(0);
        e.response = "x".repeat(300);
        assert!(matches!(w.append(&e), Err(Error::InvalidExample { .. })));
        e.messages.clear();
        assert!(matches!(w.append(&e), Err(Error::InvalidExample { .. })));
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    }

    #[test]
    fn only_fragment_file_is_cut_to_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out.jsonl");
        std::fs::write(&p, "{\"format_ver").unwrap();
        let w = ExampleWriter::open(&p).unwrap();
        assert_eq!(w.torn_tail().unwrap().len, 12);
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
    }
}
