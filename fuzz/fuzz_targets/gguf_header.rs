//! The GGUF header parser, and dequantization of whatever tensors it accepts, on arbitrary bytes.
#![no_main]

use distill_gguf::{GgufFile, dequantize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = GgufFile::parse_header(data, data.len() as u64) else {
        return;
    };
    for info in &gguf.tensors {
        let start = (gguf.data_offset + info.offset) as usize;
        let size = info.byte_size().expect("accepted tensors have a size") as usize;
        let bytes = &data[start..start + size];
        let mut out = vec![0f32; info.element_count() as usize];
        let _ = dequantize(info.kind, bytes, &mut out);
    }
});
