//! Model size: parameter counts from checkpoint headers, and disk size.
//!
//! A safetensors file starts with an 8-byte little-endian header length and a
//! JSON header that gives every tensor's dtype, shape and byte range. The count
//! reads only that header (bounded, and checked against the file length), never
//! the tensor data.
//!
//! GGUF checkpoints are read by `distill-gguf`; its tensor shapes go through
//! [`parameter_count_from_shapes`], for example
//! `parameter_count_from_shapes(gguf.tensors.iter().map(|t| &t.dims))` with
//! `gguf = distill_gguf::GgufFile::read_header(path)?`.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest safetensors header accepted (the `safetensors` crate's limit).
pub const MAX_SAFETENSORS_HEADER: u64 = 100_000_000;

/// The name of the shard index in a sharded Hugging Face checkpoint.
const INDEX_FILE: &str = "model.safetensors.index.json";

/// The number of parameters (elements) of tensors with these shapes; a shape
/// with no dimensions is a scalar (one element). This is the entry point for
/// formats whose headers another crate parses, such as GGUF (`distill-gguf`
/// tensor dims).
pub fn parameter_count_from_shapes<I, S>(shapes: I) -> Result<u64>
where
    I: IntoIterator<Item = S>,
    S: AsRef<[u64]>,
{
    shapes.into_iter().try_fold(0u64, |total, shape| {
        let elements = shape
            .as_ref()
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .ok_or(Error::ParameterOverflow)?;
        total.checked_add(elements).ok_or(Error::ParameterOverflow)
    })
}

/// Counts the parameters of a GGUF file from its header alone (tensor data is not read).
pub fn gguf_parameter_count(path: &Path) -> Result<u64> {
    let gguf = distill_gguf::GgufFile::read_header(path)?;
    parameter_count_from_shapes(gguf.tensors.iter().map(|t| &t.dims))
}

/// The parameter count of a safetensors checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParameterCount {
    /// Total elements over all tensors.
    pub parameters: u64,
    /// Number of tensors.
    pub tensors: usize,
    /// Elements per dtype name (`F32`, `BF16`, …).
    pub by_dtype: BTreeMap<String, u64>,
    /// The files that were read.
    pub files: Vec<PathBuf>,
}

/// Counts the parameters of a `.safetensors` file, or of a directory: the shards
/// named by `model.safetensors.index.json` if present, else every
/// `*.safetensors` file in it (not recursive). Only headers are read.
pub fn safetensors_parameter_count(path: &Path) -> Result<ParameterCount> {
    let files = if path.is_dir() {
        safetensors_files(path)?
    } else {
        vec![path.to_path_buf()]
    };
    let mut count = ParameterCount {
        parameters: 0,
        tensors: 0,
        by_dtype: BTreeMap::new(),
        files: Vec::new(),
    };
    for file in files {
        let header = read_safetensors_header(&file)?;
        tracing::debug!(file = %file.display(), tensors = header.tensors.len(), "read safetensors header");
        for t in header.tensors {
            count.parameters = count
                .parameters
                .checked_add(t.elements)
                .ok_or(Error::ParameterOverflow)?;
            let by = count.by_dtype.entry(t.dtype).or_insert(0);
            *by = by.checked_add(t.elements).ok_or(Error::ParameterOverflow)?;
            count.tensors += 1;
        }
        count.files.push(file);
    }
    Ok(count)
}

fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join(INDEX_FILE);
    if index.is_file() {
        #[derive(Deserialize)]
        struct Index {
            weight_map: BTreeMap<String, String>,
        }
        let text = std::fs::read_to_string(&index).map_err(|source| Error::Io {
            path: index.clone(),
            source,
        })?;
        let parsed: Index = serde_json::from_str(&text).map_err(|source| Error::SafetensorsIndex {
            path: index.clone(),
            source,
        })?;
        let names: BTreeSet<&String> = parsed.weight_map.values().collect();
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            // Shard names are plain file names; anything else could escape `dir`.
            let p = Path::new(name);
            if p.components().count() != 1 || p.file_name().is_none() {
                return Err(Error::SafetensorsLayout {
                    path: index.clone(),
                    reason: format!("shard name {name:?} is not a plain file name"),
                });
            }
            files.push(dir.join(p));
        }
        if files.is_empty() {
            return Err(Error::NoSafetensors {
                path: dir.to_path_buf(),
            });
        }
        return Ok(files);
    }
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "safetensors") && p.is_file() {
            files.push(p);
        }
    }
    if files.is_empty() {
        return Err(Error::NoSafetensors {
            path: dir.to_path_buf(),
        });
    }
    files.sort();
    Ok(files)
}

/// One tensor of a safetensors header.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HeaderTensor {
    dtype: String,
    elements: u64,
}

struct SafetensorsHeader {
    tensors: Vec<HeaderTensor>,
}

#[derive(Deserialize)]
struct RawTensor {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: [u64; 2],
}

/// Bits per element of each safetensors dtype.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "F4" => 4,
        "F6_E2M3" | "F6_E3M2" => 6,
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        _ => return None,
    })
}

/// Counts the parameters of a whole safetensors file held in memory, validating its header
/// exactly as [`safetensors_parameter_count`] does (for files already read, and for fuzzing).
pub fn safetensors_parameter_count_from_bytes(bytes: &[u8]) -> Result<u64> {
    let path = Path::new("<memory>");
    let file_len = bytes.len() as u64;
    let n = header_length(path, bytes.get(..8), file_len)?;
    let header = &bytes[8..8 + n as usize];
    let parsed = parse_safetensors_header(path, header, file_len - 8 - n)?;
    parsed
        .tensors
        .iter()
        .try_fold(0u64, |sum, t| sum.checked_add(t.elements))
        .ok_or(Error::ParameterOverflow)
}

/// Reads and validates the header of one safetensors file.
fn read_safetensors_header(path: &Path) -> Result<SafetensorsHeader> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len_bytes = [0u8; 8];
    let read = file.read_exact(&mut len_bytes).ok().map(|()| &len_bytes[..]);
    let n = header_length(path, read, file_len)?;
    // Bounded by the checks in `header_length`, so this cannot over-allocate.
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(io)?;
    parse_safetensors_header(path, &header, file_len - 8 - n)
}

/// The header length from the file's first 8 bytes, checked against the file and the limit.
fn header_length(path: &Path, first8: Option<&[u8]>, file_len: u64) -> Result<u64> {
    let layout = |reason: String| Error::SafetensorsLayout {
        path: path.to_path_buf(),
        reason,
    };
    let first8: [u8; 8] = first8
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| layout(format!("file is {file_len} bytes, too short")))?;
    let n = u64::from_le_bytes(first8);
    if n > MAX_SAFETENSORS_HEADER || n > file_len - 8 {
        return Err(layout(format!(
            "header length {n} exceeds the file ({file_len} bytes) or the limit"
        )));
    }
    Ok(n)
}

/// Validates a header's JSON: known dtypes, offsets that match each shape and tile the
/// `data_len` bytes of the data section exactly.
fn parse_safetensors_header(path: &Path, header: &[u8], data_len: u64) -> Result<SafetensorsHeader> {
    let layout = |reason: String| Error::SafetensorsLayout {
        path: path.to_path_buf(),
        reason,
    };
    let raw: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(header).map_err(|source| Error::SafetensorsJson {
            path: path.to_path_buf(),
            source,
        })?;

    let mut tensors = Vec::with_capacity(raw.len());
    let mut ranges = Vec::with_capacity(raw.len());
    for (name, value) in raw {
        if name == "__metadata__" {
            continue;
        }
        let t: RawTensor = serde_json::from_value(value).map_err(|source| Error::SafetensorsJson {
            path: path.to_path_buf(),
            source,
        })?;
        let bits = dtype_bits(&t.dtype)
            .ok_or_else(|| layout(format!("tensor {name}: unknown dtype {}", t.dtype)))?;
        let elements = parameter_count_from_shapes([&t.shape])?;
        let [start, end] = t.data_offsets;
        let bytes = elements
            .checked_mul(bits)
            .ok_or(Error::ParameterOverflow)?
            .div_ceil(8);
        if end < start || end - start != bytes {
            return Err(layout(format!(
                "tensor {name}: {} {:?} needs {bytes} bytes but its offsets {start}..{end} give {}",
                t.dtype,
                t.shape,
                end.saturating_sub(start)
            )));
        }
        ranges.push((start, end, name));
        tensors.push(HeaderTensor {
            dtype: t.dtype,
            elements,
        });
    }
    // The byte ranges must tile the data section exactly, as the format requires.
    ranges.sort();
    let mut expected = 0;
    for (start, end, name) in &ranges {
        if *start != expected {
            return Err(layout(format!(
                "tensor {name}: data starts at {start}, expected {expected}"
            )));
        }
        expected = *end;
    }
    if expected != data_len {
        return Err(layout(format!(
            "tensors cover {expected} bytes but the data section has {data_len}"
        )));
    }
    Ok(SafetensorsHeader { tensors })
}

/// The size on disk of a file, or the total of the files under a directory
/// (apparent sizes, following symbolic links as a Hugging Face cache needs;
/// each file is counted once even if linked several times).
pub fn disk_size(path: &Path) -> Result<u64> {
    let mut seen = HashSet::new();
    disk_size_inner(path, &mut seen)
}

fn disk_size_inner(path: &Path, seen: &mut HashSet<(u64, u64)>) -> Result<u64> {
    let meta = std::fs::metadata(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !seen.insert(file_identity(&meta, path)) {
        return Ok(0);
    }
    if meta.is_file() {
        return Ok(meta.len());
    }
    if !meta.is_dir() {
        return Ok(0);
    }
    let mut total = 0u64;
    let entries = std::fs::read_dir(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        total = total.saturating_add(disk_size_inner(&entry.path(), seen)?);
    }
    Ok(total)
}

#[cfg(unix)]
fn file_identity(meta: &std::fs::Metadata, _: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn file_identity(_: &std::fs::Metadata, path: &Path) -> (u64, u64) {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.canonicalize()
        .unwrap_or_else(|_| path.to_path_buf())
        .hash(&mut h);
    (0, h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_safetensors(path: &Path, header: &str, data_len: usize) {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data_len, 0);
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn shapes() {
        assert_eq!(
            parameter_count_from_shapes([vec![2u64, 3], vec![], vec![0, 5]]).unwrap(),
            7
        );
        assert!(matches!(
            parameter_count_from_shapes([vec![u64::MAX, 2]]),
            Err(Error::ParameterOverflow)
        ));
    }

    #[test]
    fn header_is_validated() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.safetensors");
        let ok = r#"{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"b":{"dtype":"BF16","shape":[3],"data_offsets":[24,30]}}"#;
        write_safetensors(&p, ok, 30);
        let c = safetensors_parameter_count(&p).unwrap();
        assert_eq!((c.parameters, c.tensors), (9, 2));
        assert_eq!(c.by_dtype["BF16"], 3);

        // Wrong byte count for the shape, a gap, trailing data, a huge length.
        for (header, data) in [
            (r#"{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}}"#, 20),
            (r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, 8),
            (r#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, 9),
            (r#"{"w":{"dtype":"X9","shape":[1],"data_offsets":[0,4]}}"#, 4),
            (r#"{"w":{"dtype":"F32","shape":[1]}}"#, 4),
        ] {
            write_safetensors(&p, header, data);
            assert!(safetensors_parameter_count(&p).is_err(), "{header}");
        }
        let mut bytes = u64::MAX.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&p, bytes).unwrap();
        assert!(matches!(
            safetensors_parameter_count(&p),
            Err(Error::SafetensorsLayout { .. })
        ));
        std::fs::write(&p, b"abc").unwrap();
        assert!(safetensors_parameter_count(&p).is_err());
    }

    #[test]
    fn disk_size_of_tree() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), [0u8; 10]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/b"), [0u8; 5]).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("sub/link")).unwrap();
        assert_eq!(disk_size(dir.path()).unwrap(), 15);
        assert_eq!(disk_size(&dir.path().join("sub/b")).unwrap(), 5);
        assert!(disk_size(&dir.path().join("missing")).is_err());
    }
}
