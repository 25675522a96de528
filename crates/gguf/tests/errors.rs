//! Errors keep their causes out of their messages and chain them: walking `source()` prints
//! each cause exactly once, and `kind()` tells the failures apart.

#[path = "support/chain.rs"]
mod chain;

use std::error::Error as _;
use std::io::{self, Write};

use chain::chain_line;
use distill_gguf::{Error, ErrorKind, GgmlType, GgufFile, TensorData, Value, write_gguf};

#[test]
fn a_missing_file_names_the_file_once_and_chains_the_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("missing.gguf");
    let error = GgufFile::read_header(&path).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Io);
    let io = error.source().unwrap().downcast_ref::<io::Error>().unwrap();
    assert_eq!(io.kind(), io::ErrorKind::NotFound);
    assert_eq!(chain_line(&error), format!("{}: {io}", path.display()));
}

#[test]
fn a_key_that_is_not_utf8_chains_the_decoding_error() {
    let metadata = [("general.architecture".to_string(), Value::String("llama".into()))];
    let mut bytes = Vec::new();
    write_gguf(&mut bytes, &metadata, &[]).unwrap();
    // Header (24 bytes), then the key's 8-byte length, then its first byte.
    bytes[32] = 0xff;
    let error = GgufFile::parse_header(&bytes[..], bytes.len() as u64).unwrap_err();
    assert!(matches!(error, Error::NotUtf8 { offset: 32, .. }), "{error}");
    assert_eq!(error.kind(), ErrorKind::Malformed);
    assert!(error.source().unwrap().source().is_none());
    let line = chain_line(&error);
    assert!(
        line.starts_with("invalid GGUF at byte 32: metadata key is not UTF-8: "),
        "{line}"
    );
}

/// A writer that fails on every write.
struct Broken;

impl Write for Broken {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::other("disk on fire"))
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[test]
fn writing_checks_its_input_before_it_writes_and_chains_the_writers_error() {
    let tensor = TensorData {
        name: "a.weight".into(),
        dims: vec![4],
        kind: GgmlType::F32,
        bytes: vec![0; 15],
    };
    let mut out = Vec::new();
    let error = write_gguf(&mut out, &[], &[tensor]).unwrap_err();
    assert!(
        matches!(error, Error::BadTensor { ref name, .. } if name == "a.weight"),
        "{error}"
    );
    assert_eq!(error.kind(), ErrorKind::Malformed);
    assert!(out.is_empty(), "nothing is written for a bad tensor");

    let mixed = [(
        "tokenizer.ggml.tokens".to_string(),
        Value::Array(vec![Value::String("a".into()), Value::U32(1)]),
    )];
    let error = write_gguf(&mut out, &mixed, &[]).unwrap_err();
    assert!(
        matches!(error, Error::Metadata { ref key, .. } if key == "tokenizer.ggml.tokens"),
        "{error}"
    );

    let error = write_gguf(&mut Broken, &[], &[]).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Io);
    assert_eq!(chain_line(&error), "cannot write the GGUF data: disk on fire");
}
