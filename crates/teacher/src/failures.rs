//! The failures file: one JSON line per prompt that a run gave up on.
//!
//! It sits beside the dataset ([`failures_path`]) and lists exactly the prompts of the run
//! that wrote it: it is emptied when a run starts, because a resumed run retries earlier
//! failures and some of them end up in the dataset. Each record is one write, so a killed
//! run leaves whole lines.

use std::io::Write;
use std::path::{Path, PathBuf};

use distill_data::{Prompt, Role};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::output::{remove_file_if_present, sidecar_path};

/// The failures file for `output`: `data/x.jsonl` → `data/x.failures.jsonl`.
pub fn failures_path(output: &Path) -> PathBuf {
    sidecar_path(output, "failures.jsonl")
}

/// One line of the failures file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The prompt id.
    pub id: String,
    /// The last user message.
    pub prompt: String,
    /// The full prompt.
    pub messages: Vec<distill_data::Message>,
    /// Why it failed (the last error).
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
}

impl FailureRecord {
    /// The record for `prompt`, which failed after `attempts` attempts.
    pub fn new(prompt: &Prompt, reason: String, attempts: u32) -> Self {
        FailureRecord {
            id: prompt.id.clone(),
            prompt: prompt
                .messages
                .iter()
                .rev()
                .find(|m| m.role == Role::User)
                .map(|m| m.content.clone())
                .unwrap_or_default(),
            messages: prompt.messages.clone(),
            reason,
            attempts,
        }
    }
}

/// The failures file of one run; created at the first failure.
#[derive(Debug)]
pub(crate) struct FailureLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    count: usize,
}

impl FailureLog {
    /// Removes the previous run's file for `output`: its prompts are retried by this run, so
    /// keeping it would list prompts that end up in the dataset.
    pub(crate) fn start(output: &Path) -> Result<Self> {
        let path = failures_path(output);
        remove_file_if_present(&path)?;
        Ok(FailureLog {
            path,
            file: None,
            count: 0,
        })
    }

    /// Appends a record for `prompt` and returns it.
    pub(crate) fn record(&mut self, prompt: &Prompt, reason: String, attempts: u32) -> Result<FailureRecord> {
        let record = FailureRecord::new(prompt, reason, attempts);
        let mut line = serde_json::to_vec(&record).map_err(|source| Error::Encode {
            what: "a failure record",
            source,
        })?;
        line.push(b'\n');
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        let file = match self.file.take() {
            Some(f) => f,
            None => std::fs::File::create(&self.path).map_err(io)?,
        };
        let file = self.file.insert(file);
        // One write per record keeps lines whole if the process dies.
        file.write_all(&line).map_err(io)?;
        self.count += 1;
        tracing::warn!(id = %record.id, attempts, reason = %record.reason, "prompt failed");
        Ok(record)
    }

    /// Records written by this run.
    pub(crate) fn count(&self) -> usize {
        self.count
    }

    /// The file, when this run wrote any record.
    pub(crate) fn written(&self) -> Option<PathBuf> {
        (self.count > 0).then(|| self.path.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_file_sits_next_to_the_output() {
        assert_eq!(
            failures_path(Path::new("data/x.jsonl")),
            Path::new("data/x.failures.jsonl")
        );
        assert_eq!(failures_path(Path::new("out")), Path::new("out.failures.jsonl"));
    }

    #[test]
    fn a_run_lists_only_its_own_failures() {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.jsonl");
        std::fs::write(failures_path(&output), "stale\n").unwrap();
        let mut log = FailureLog::start(&output).unwrap();
        assert!(!failures_path(&output).exists());
        assert_eq!(log.written(), None);
        let p = Prompt::from_text(Some("sys"), "the question");
        let rec = log.record(&p, "HTTP 500: boom".into(), 3).unwrap();
        assert_eq!((rec.prompt.as_str(), rec.attempts), ("the question", 3));
        log.record(&Prompt::from_text(None, "another"), "x".into(), 1)
            .unwrap();
        assert_eq!(log.count(), 2);
        let text = std::fs::read_to_string(log.written().unwrap()).unwrap();
        let back: Vec<FailureRecord> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(back[0], rec);
        assert_eq!(back.len(), 2);
    }
}
