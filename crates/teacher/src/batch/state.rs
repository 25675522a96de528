//! The sidecar state file: which batch a dataset is waiting for.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::output::{remove_file_if_present, sidecar_path};

/// The sidecar state file for `output`: `data/x.jsonl` → `data/x.batch.json`.
pub fn batch_state_path(output: &Path) -> PathBuf {
    sidecar_path(output, "batch.json")
}

/// What the sidecar file remembers about a submitted batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchState {
    /// The uploaded input file.
    pub input_file_id: String,
    /// The batch, once created.
    pub batch_id: Option<String>,
    /// The prompt ids in the batch, in input order.
    pub custom_ids: Vec<String>,
    /// The model the requests name.
    pub model: String,
}

/// The saved state, or `None` when no batch is pending.
pub(crate) fn read_state(path: &Path) -> Result<Option<BatchState>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| Error::Json {
                path: path.to_owned(),
                source,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes to a temporary file, syncs, and renames: the state file is always whole.
pub(crate) fn write_state(path: &Path, state: &BatchState) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(state).map_err(|source| Error::Encode {
        what: "the batch state",
        source,
    })?;
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Forgets the batch: it was collected, or it failed and will never produce output.
pub(crate) fn remove_state(path: &Path) -> Result<()> {
    remove_file_if_present(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = batch_state_path(&dir.path().join("out.jsonl"));
        assert_eq!(path.file_name().unwrap(), "out.batch.json");
        assert_eq!(read_state(&path).unwrap(), None);
        let s = BatchState {
            input_file_id: "file-1".into(),
            batch_id: Some("batch_1".into()),
            custom_ids: vec!["a".into()],
            model: "gpt-4o-mini".into(),
        };
        write_state(&path, &s).unwrap();
        assert_eq!(read_state(&path).unwrap(), Some(s));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(read_state(&path), Err(Error::Json { .. })));
        remove_state(&path).unwrap();
        remove_state(&path).unwrap();
    }
}
