//! The GGUF reader against files we write, the real SmolLM2 file, and malformed input.

#[path = "support/assets.rs"]
mod assets;

use distill_gguf::{GgmlType, GgufFile, TensorData, Value, quantize_q8_0, write_gguf};
use proptest::prelude::*;

fn sample_file() -> Vec<u8> {
    let metadata = vec![
        ("general.architecture".to_string(), Value::String("llama".into())),
        ("llama.block_count".to_string(), Value::U32(2)),
        (
            "tokenizer.ggml.tokens".to_string(),
            Value::Array(vec![Value::String("a".into()), Value::String("é".into())]),
        ),
        ("llama.rope.freq_base".to_string(), Value::F32(10000.0)),
    ];
    let x: Vec<f32> = (0..64).map(|i| i as f32 / 7.0 - 3.0).collect();
    let tensors = vec![
        TensorData {
            name: "a.weight".into(),
            dims: vec![4, 2],
            kind: GgmlType::F32,
            bytes: x[..8].iter().flat_map(|v| v.to_le_bytes()).collect(),
        },
        TensorData {
            name: "b.weight".into(),
            dims: vec![32, 2],
            kind: GgmlType::Q8_0,
            bytes: quantize_q8_0(&x),
        },
    ];
    let mut out = Vec::new();
    write_gguf(&mut out, &metadata, &tensors).unwrap();
    out
}

fn parse(bytes: &[u8]) -> distill_gguf::Result<GgufFile> {
    GgufFile::parse_header(bytes, bytes.len() as u64)
}

#[test]
fn a_written_file_reads_back() {
    let bytes = sample_file();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let gguf = GgufFile::read_header(&path).unwrap();
    assert_eq!(gguf.architecture().unwrap(), "llama");
    assert_eq!(gguf.get_u64("llama.block_count").unwrap(), 2);
    assert_eq!(gguf.get_strings("tokenizer.ggml.tokens").unwrap(), ["a", "é"]);
    assert_eq!(gguf.parameter_count(), 8 + 64);
    let a = gguf.tensor("a.weight").unwrap().clone();
    assert_eq!(a.shape(), [2, 4]);
    let values = gguf.read_f32(&mut gguf.open().unwrap(), &a).unwrap();
    assert_eq!(values, (0..8).map(|i| i as f32 / 7.0 - 3.0).collect::<Vec<_>>());
}

#[test]
fn truncation_anywhere_is_an_error() {
    let bytes = sample_file();
    let whole = parse(&bytes).unwrap();
    let last = whole.tensors.last().unwrap();
    // The padding after the last tensor is optional; everything before it is not.
    let data_end = whole.data_offset + last.offset + last.byte_size().unwrap();
    for len in 0..data_end as usize {
        if let Ok(parsed) = parse(&bytes[..len]) {
            panic!("parsed a file truncated to {len} bytes: {parsed:?}");
        }
    }
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    let mut bytes = sample_file();
    // Metadata count of 2^62 in a tiny file.
    bytes[16..24].copy_from_slice(&(1u64 << 62).to_le_bytes());
    let err = parse(&bytes).unwrap_err().to_string();
    assert!(err.contains("metadata count"), "{err}");
}

#[test]
fn smollm2_header_matches_the_published_architecture() {
    let gguf = GgufFile::read_header(assets::smollm2_gguf()).unwrap();
    assert_eq!(gguf.architecture().unwrap(), "llama");
    assert_eq!(gguf.get_u64("llama.block_count").unwrap(), 30);
    assert_eq!(gguf.get_u64("llama.embedding_length").unwrap(), 576);
    assert_eq!(gguf.get_u64("llama.attention.head_count").unwrap(), 9);
    assert_eq!(gguf.get_u64("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(gguf.get_strings("tokenizer.ggml.merges").unwrap().len(), 48_900);
    assert_eq!(gguf.parameter_count(), 134_515_008);
    let kinds = |k| gguf.tensors.iter().filter(|t| t.kind == k).count();
    assert_eq!(
        (kinds(GgmlType::Q4_1), kinds(GgmlType::F32), kinds(GgmlType::Q8_0)),
        (210, 61, 1)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse(&bytes);
    }

    #[test]
    fn mutated_valid_files_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = sample_file();
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        if let Ok(gguf) = parse(&bytes) {
            // Whatever parses must describe data inside the file.
            for t in &gguf.tensors {
                prop_assert!(gguf.data_offset + t.offset + t.byte_size().unwrap() <= bytes.len() as u64);
            }
        }
    }
}

#[test]
fn every_supported_type_dequantizes_exactly_as_gguf_py() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dequant");
    for kind in [
        "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k",
    ] {
        let gguf = GgufFile::read_header(dir.join(format!("{kind}.gguf"))).unwrap();
        let info = gguf.tensors[0].clone();
        assert_eq!(info.shape(), [4, 256], "{kind}");
        let ours = gguf.read_f32(&mut gguf.open().unwrap(), &info).unwrap();
        let text = std::fs::read_to_string(dir.join(format!("{kind}.json"))).unwrap();
        let expected: Vec<f64> = text
            .trim_matches(['[', ']', '\n'])
            .split(',')
            .map(|v| v.trim().parse().unwrap())
            .collect();
        assert_eq!(ours.len(), expected.len(), "{kind}");
        for (i, (a, b)) in ours.iter().zip(&expected).enumerate() {
            assert!((f64::from(*a) - b).abs() <= 1e-6, "{kind}[{i}]: {a} vs {b}");
        }
    }
}
