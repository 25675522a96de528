//! Writing GGUF v3 files: metadata, then tensor infos, then 32-byte-aligned tensor data.

use std::io::{self, Write};

use crate::error::{Error, Result};
use crate::types::{GgmlType, Value};

const ALIGNMENT: u64 = 32;

/// A tensor to be written: ggml-order dimensions and already-encoded bytes.
#[derive(Debug, Clone)]
pub struct TensorData {
    /// The llama.cpp tensor name.
    pub name: String,
    /// Dimensions in ggml order (`dims[0]` fastest).
    pub dims: Vec<u64>,
    /// Storage type of `bytes`.
    pub kind: GgmlType,
    /// Encoded data, `kind.byte_size(elements)` bytes long.
    pub bytes: Vec<u8>,
}

/// Writes a GGUF v3 file to `out`.
///
/// Checks what it is given: a tensor whose byte length does not match its type and shape is
/// [`Error::BadTensor`], a metadata array whose items differ in type is [`Error::Metadata`];
/// failures of `out` itself are [`Error::Write`].
pub fn write_gguf(out: &mut impl Write, metadata: &[(String, Value)], tensors: &[TensorData]) -> Result<()> {
    for (key, value) in metadata {
        check_homogeneous(key, value)?;
    }
    for t in tensors {
        let elements: u64 = t.dims.iter().product();
        if t.kind.byte_size(elements) != Some(t.bytes.len() as u64) {
            return Err(Error::BadTensor {
                name: t.name.clone(),
                reason: format!(
                    "{} bytes do not match {:?} of {:?}",
                    t.bytes.len(),
                    t.kind,
                    t.dims
                ),
            });
        }
    }
    write_checked(out, metadata, tensors).map_err(Error::Write)
}

/// GGUF arrays are homogeneous, nested ones too.
fn check_homogeneous(key: &str, value: &Value) -> Result<()> {
    if let Value::Array(items) = value {
        let code = items.first().map_or(0, Value::type_code);
        if items.iter().any(|v| v.type_code() != code) {
            return Err(Error::Metadata {
                key: key.into(),
                reason: "GGUF arrays must be homogeneous".into(),
            });
        }
        for item in items {
            check_homogeneous(key, item)?;
        }
    }
    Ok(())
}

/// Writes what [`write_gguf`] has checked; only `out` can fail.
fn write_checked(
    out: &mut impl Write,
    metadata: &[(String, Value)],
    tensors: &[TensorData],
) -> io::Result<()> {
    out.write_all(b"GGUF")?;
    out.write_all(&3u32.to_le_bytes())?;
    out.write_all(&(tensors.len() as u64).to_le_bytes())?;
    out.write_all(&(metadata.len() as u64).to_le_bytes())?;
    let mut written = 24u64;
    for (key, value) in metadata {
        written += write_string(out, key)?;
        out.write_all(&value.type_code().to_le_bytes())?;
        written += 4 + write_value(out, value)?;
    }
    let mut offset = 0u64;
    for t in tensors {
        written += write_string(out, &t.name)?;
        out.write_all(&(t.dims.len() as u32).to_le_bytes())?;
        for d in &t.dims {
            out.write_all(&d.to_le_bytes())?;
        }
        out.write_all(&t.kind.code().to_le_bytes())?;
        out.write_all(&offset.to_le_bytes())?;
        written += 4 + 8 * t.dims.len() as u64 + 4 + 8;
        offset = (offset + t.bytes.len() as u64).next_multiple_of(ALIGNMENT);
    }
    pad(out, written)?;
    for t in tensors {
        out.write_all(&t.bytes)?;
        pad(out, t.bytes.len() as u64)?;
    }
    Ok(())
}

fn pad(out: &mut impl Write, len: u64) -> io::Result<()> {
    let padding = len.next_multiple_of(ALIGNMENT) - len;
    out.write_all(&vec![0u8; padding as usize])
}

fn write_string(out: &mut impl Write, s: &str) -> io::Result<u64> {
    out.write_all(&(s.len() as u64).to_le_bytes())?;
    out.write_all(s.as_bytes())?;
    Ok(8 + s.len() as u64)
}

fn write_value(out: &mut impl Write, value: &Value) -> io::Result<u64> {
    Ok(match value {
        Value::U8(v) => out.write_all(&v.to_le_bytes()).map(|_| 1)?,
        Value::I8(v) => out.write_all(&v.to_le_bytes()).map(|_| 1)?,
        Value::U16(v) => out.write_all(&v.to_le_bytes()).map(|_| 2)?,
        Value::I16(v) => out.write_all(&v.to_le_bytes()).map(|_| 2)?,
        Value::U32(v) => out.write_all(&v.to_le_bytes()).map(|_| 4)?,
        Value::I32(v) => out.write_all(&v.to_le_bytes()).map(|_| 4)?,
        Value::F32(v) => out.write_all(&v.to_le_bytes()).map(|_| 4)?,
        Value::Bool(v) => out.write_all(&[u8::from(*v)]).map(|_| 1)?,
        Value::String(s) => write_string(out, s)?,
        Value::U64(v) => out.write_all(&v.to_le_bytes()).map(|_| 8)?,
        Value::I64(v) => out.write_all(&v.to_le_bytes()).map(|_| 8)?,
        Value::F64(v) => out.write_all(&v.to_le_bytes()).map(|_| 8)?,
        Value::Array(items) => {
            // Homogeneous (checked by `write_gguf`); an empty array is written as u8.
            let code = items.first().map_or(0, Value::type_code);
            out.write_all(&code.to_le_bytes())?;
            out.write_all(&(items.len() as u64).to_le_bytes())?;
            let mut n = 12;
            for item in items {
                n += write_value(out, item)?;
            }
            n
        }
    })
}
