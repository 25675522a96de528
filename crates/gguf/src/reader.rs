//! Reading a GGUF header: metadata and tensor infos, every size checked against the file length.
//!
//! Layout (GGUF v2/v3, little-endian): magic `GGUF`, version u32, tensor count u64, metadata
//! count u64, the metadata key/value pairs, the tensor infos, padding to `general.alignment`
//! (default 32), then the tensor data. Nothing is allocated before the bytes that justify it
//! are known to exist, so a hostile header cannot make the reader allocate more than the file.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::types::{GgmlType, Value};

const MAGIC: [u8; 4] = *b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal but never deeper than this in real files.
const MAX_NESTING: u32 = 4;

/// One tensor's description from the header.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    /// The llama.cpp tensor name, for example `blk.0.attn_q.weight`.
    pub name: String,
    /// Dimensions in ggml order: `dims[0]` varies fastest (the reverse of PyTorch's shape).
    pub dims: Vec<u64>,
    /// Storage type.
    pub kind: GgmlType,
    /// Offset of the data from the start of the data section.
    pub offset: u64,
}

impl TensorInfo {
    /// Number of elements (saturating; infos read by [`GgufFile`] never overflow).
    pub fn element_count(&self) -> u64 {
        self.dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d))
    }

    /// The shape in PyTorch order (slowest dimension first).
    pub fn shape(&self) -> Vec<u64> {
        self.dims.iter().rev().copied().collect()
    }

    /// Bytes of data. Always `Some` for infos read by [`GgufFile`], which checks this.
    pub fn byte_size(&self) -> Option<u64> {
        let elements = self.dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
        self.kind.byte_size(elements)
    }
}

/// A parsed GGUF header. Tensor data stays on disk until asked for.
#[derive(Debug, Clone)]
pub struct GgufFile {
    /// Where the file was read from (empty for in-memory parses).
    pub path: PathBuf,
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, Value)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    /// Length of the whole file.
    pub file_len: u64,
}

impl GgufFile {
    /// Reads the header of the GGUF file at `path`, without reading tensor data.
    pub fn read_header(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut parsed = Self::parse_header(BufReader::with_capacity(1 << 16, file), file_len)?;
        parsed.path = path.to_path_buf();
        Ok(parsed)
    }

    /// Parses a header from `reader`, whose total length is `file_len` bytes.
    pub fn parse_header(reader: impl Read, file_len: u64) -> Result<Self> {
        let mut r = Bounded {
            inner: reader,
            pos: 0,
            len: file_len,
        };
        let magic: [u8; 4] = r.array("magic")?;
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let version = r.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::UnsupportedVersion(version));
        }
        let tensor_count = r.u64("tensor count")?;
        let kv_count = r.u64("metadata count")?;
        // Each metadata pair takes at least 12 bytes, each tensor info at least 28.
        r.ensure_plausible(kv_count, 12, "metadata count")?;
        r.ensure_plausible(tensor_count, 28, "tensor count")?;

        let mut metadata = Vec::with_capacity(kv_count as usize);
        for _ in 0..kv_count {
            let key = r.string("metadata key")?;
            let code = r.u32("metadata type")?;
            let value = r.value(code, 0)?;
            metadata.push((key, value));
        }
        let mut tensors = Vec::with_capacity(tensor_count as usize);
        for _ in 0..tensor_count {
            tensors.push(r.tensor_info()?);
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a.is_power_of_two() => a,
                _ => return Err(r.invalid(format!("general.alignment {v:?} is not a power of two"))),
            },
        };
        let data_offset = r.pos.div_ceil(alignment) * alignment;
        let file = Self {
            path: PathBuf::new(),
            version,
            metadata,
            tensors,
            data_offset,
            file_len,
        };
        file.check_tensor_extents(alignment)?;
        Ok(file)
    }

    /// Every tensor's data must start on the alignment (as llama.cpp requires) and end inside the file.
    fn check_tensor_extents(&self, alignment: u64) -> Result<()> {
        for t in &self.tensors {
            let bad = |reason: String| Error::BadTensor {
                name: t.name.clone(),
                reason,
            };
            if t.offset % alignment != 0 {
                return Err(bad(format!(
                    "offset {} is not a multiple of the alignment {alignment}",
                    t.offset
                )));
            }
            let end = self
                .data_offset
                .checked_add(t.offset)
                .zip(t.byte_size())
                .and_then(|(start, size)| start.checked_add(size))
                .ok_or_else(|| bad("offset overflows".into()))?;
            if end > self.file_len {
                return Err(bad(format!(
                    "data ends at byte {end}, past the end of the file ({})",
                    self.file_len
                )));
            }
        }
        Ok(())
    }

    /// A metadata value by key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A required string value.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.require(key)?
            .as_str()
            .ok_or_else(|| wrong_type(key, "a string"))
    }

    /// A required unsigned integer value.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.require(key)?
            .as_u64()
            .ok_or_else(|| wrong_type(key, "an unsigned integer"))
    }

    /// A required number.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.require(key)?
            .as_f64()
            .ok_or_else(|| wrong_type(key, "a number"))
    }

    /// A required array of strings.
    pub fn get_strings(&self, key: &str) -> Result<Vec<&str>> {
        let items = self
            .require(key)?
            .as_array()
            .ok_or_else(|| wrong_type(key, "an array"))?;
        items
            .iter()
            .map(|v| v.as_str().ok_or_else(|| wrong_type(key, "an array of strings")))
            .collect()
    }

    fn require(&self, key: &str) -> Result<&Value> {
        self.get(key).ok_or_else(|| Error::MissingMetadata(key.into()))
    }

    /// The architecture named by `general.architecture` (for example `llama`).
    pub fn architecture(&self) -> Result<&str> {
        self.get_str("general.architecture")
    }

    /// A tensor's info by name.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Total number of parameters (elements over all tensors), from the header alone.
    pub fn parameter_count(&self) -> u64 {
        self.tensors.iter().map(TensorInfo::element_count).sum()
    }

    /// Reads one tensor's raw bytes from `file` (the file this header came from).
    pub fn read_tensor_bytes(&self, file: &mut File, info: &TensorInfo) -> Result<Vec<u8>> {
        let io = |source| Error::Io {
            path: self.path.clone(),
            source,
        };
        file.seek(SeekFrom::Start(self.data_offset + info.offset))
            .map_err(io)?;
        let size = info
            .byte_size()
            .filter(|&s| s <= self.file_len)
            .ok_or_else(|| Error::BadTensor {
                name: info.name.clone(),
                reason: "size overflows or exceeds the file".into(),
            })?;
        let mut bytes = vec![0u8; size as usize];
        file.read_exact(&mut bytes).map_err(io)?;
        Ok(bytes)
    }

    /// Reads and dequantizes one tensor to f32 (ggml order: `dims[0]` fastest).
    pub fn read_f32(&self, file: &mut File, info: &TensorInfo) -> Result<Vec<f32>> {
        let bytes = self.read_tensor_bytes(file, info)?;
        let mut out = vec![0f32; info.element_count() as usize];
        crate::dequant::dequantize(info.kind, &bytes, &mut out).map_err(|kind| Error::UnsupportedType {
            name: info.name.clone(),
            kind,
        })?;
        Ok(out)
    }

    /// Opens the file this header was read from, for [`Self::read_f32`].
    pub fn open(&self) -> Result<File> {
        File::open(&self.path).map_err(|source| Error::Io {
            path: self.path.clone(),
            source,
        })
    }
}

fn wrong_type(key: &str, expected: &str) -> Error {
    Error::Metadata {
        key: key.into(),
        reason: format!("expected {expected}"),
    }
}

/// A reader that knows how many bytes remain, so every length is checked before allocation.
struct Bounded<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Bounded<R> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn invalid(&self, reason: String) -> Error {
        Error::Invalid {
            offset: self.pos,
            reason,
        }
    }

    fn ensure_available(&self, needed: u64, what: &'static str) -> Result<()> {
        if needed > self.remaining() {
            return Err(Error::Truncated {
                offset: self.pos,
                needed: needed - self.remaining(),
                what,
            });
        }
        Ok(())
    }

    /// Rejects a count whose items could not fit in what remains of the file.
    fn ensure_plausible(&self, count: u64, min_item_bytes: u64, what: &'static str) -> Result<()> {
        match count.checked_mul(min_item_bytes) {
            Some(bytes) if bytes <= self.remaining() => Ok(()),
            _ => Err(self.invalid(format!(
                "{what} {count} cannot fit in the {} bytes left",
                self.remaining()
            ))),
        }
    }

    fn bytes(&mut self, n: u64, what: &'static str) -> Result<Vec<u8>> {
        self.ensure_available(n, what)?;
        let mut buf = vec![0u8; n as usize];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<()> {
        self.ensure_available(buf.len() as u64, what)?;
        self.inner.read_exact(buf).map_err(|_| Error::Truncated {
            offset: self.pos,
            needed: buf.len() as u64,
            what,
        })?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N]> {
        let mut buf = [0u8; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    fn string(&mut self, what: &'static str) -> Result<String> {
        let len = self.u64(what)?;
        let start = self.pos;
        let bytes = self.bytes(len, what)?;
        String::from_utf8(bytes).map_err(|source| Error::NotUtf8 {
            offset: start,
            what,
            source,
        })
    }

    fn value(&mut self, code: u32, depth: u32) -> Result<Value> {
        Ok(match code {
            0 => Value::U8(u8::from_le_bytes(self.array("u8")?)),
            1 => Value::I8(i8::from_le_bytes(self.array("i8")?)),
            2 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            3 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            4 => Value::U32(self.u32("u32")?),
            5 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            6 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            7 => match self.array::<1>("bool")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.invalid(format!("bool byte {b}"))),
            },
            8 => Value::String(self.string("string value")?),
            9 => {
                if depth >= MAX_NESTING {
                    return Err(self.invalid("arrays nested too deeply".into()));
                }
                let item_code = self.u32("array type")?;
                let count = self.u64("array length")?;
                self.ensure_plausible(count, min_value_bytes(item_code), "array length")?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(item_code, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64("u64")?),
            11 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            12 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
            other => return Err(self.invalid(format!("unknown metadata type {other}"))),
        })
    }

    fn tensor_info(&mut self) -> Result<TensorInfo> {
        let name = self.string("tensor name")?;
        let n_dims = self.u32("tensor dimension count")?;
        if n_dims == 0 || n_dims > MAX_DIMS {
            return Err(self.invalid(format!("tensor `{name}` has {n_dims} dimensions")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(self.u64("tensor dimension")?);
        }
        let code = self.u32("tensor type")?;
        let kind = GgmlType::from_code(code)
            .ok_or_else(|| self.invalid(format!("tensor `{name}` has unknown type {code}")))?;
        let offset = self.u64("tensor offset")?;
        let elements = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        match elements.and_then(|n| kind.byte_size(n)) {
            Some(_) => Ok(TensorInfo {
                name,
                dims,
                kind,
                offset,
            }),
            None => Err(Error::BadTensor {
                name,
                reason: format!("dimensions {dims:?} overflow or do not fill whole {kind:?} blocks"),
            }),
        }
    }
}

/// The fewest bytes one value of a type code can take (strings: their 8-byte length).
fn min_value_bytes(code: u32) -> u64 {
    match code {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8..=12 => 8,
        _ => 1,
    }
}
