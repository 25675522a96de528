//! The dataset file a run writes, and the files kept beside it.
//!
//! Live generation and batch mode open their output the same way: an existing, non-empty
//! file is only continued when the caller asked to resume, missing folders are created, and
//! a torn last line left by a killed run is cut by the writer.

use std::path::{Path, PathBuf};

use distill_data::{ExampleWriter, WriterOptions};

use crate::error::{Error, Result};

/// A file beside `output`: `data/x.jsonl` with `failures.jsonl` → `data/x.failures.jsonl`.
pub(crate) fn sidecar_path(output: &Path, suffix: &str) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    output.with_file_name(format!("{stem}.{suffix}"))
}

/// Opens the dataset for appending. Without `resume`, an existing non-empty file is an error
/// rather than something to overwrite.
pub(crate) fn open_output(output: &Path, resume: bool, options: WriterOptions) -> Result<ExampleWriter> {
    if !resume
        && let Ok(meta) = std::fs::metadata(output)
        && meta.len() > 0
    {
        return Err(Error::Options(format!(
            "{} already exists; pass resume to continue it, or choose another output",
            output.display()
        )));
    }
    if let Some(dir) = output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let writer = ExampleWriter::open_with(output, options)?;
    if let Some(torn) = writer.torn_tail() {
        tracing::warn!(
            bytes = torn.len,
            "removed a torn last line left by an interrupted run"
        );
    }
    Ok(writer)
}

/// Removes `path`; a file that is not there is no error.
pub(crate) fn remove_file_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_replace_the_jsonl_suffix() {
        assert_eq!(
            sidecar_path(Path::new("data/x.jsonl"), "batch.json"),
            Path::new("data/x.batch.json")
        );
        assert_eq!(
            sidecar_path(Path::new("out"), "failures.jsonl"),
            Path::new("out.failures.jsonl")
        );
    }

    #[test]
    fn an_existing_output_needs_resume() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/out.jsonl");
        drop(open_output(&path, false, WriterOptions::default()).unwrap());
        // Empty: opening again is fine.
        drop(open_output(&path, false, WriterOptions::default()).unwrap());
        std::fs::write(&path, b"x").unwrap();
        let err = open_output(&path, false, WriterOptions::default()).unwrap_err();
        assert!(err.to_string().contains("pass resume"), "{err}");
    }
}
