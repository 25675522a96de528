//! Fuzzes distill-data's JSONL reader: any bytes, strict and lenient, with a small line cap
//! so the too-long path is reached. It must never panic; every error must format.
//!
//! Seed corpus: fuzz/corpus/data_reader (made by fuzz/seeds/data_reader.sh).
#![no_main]

use distill_data::{DuplicateIds, ExampleReader, Mode, ReaderOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for mode in [Mode::Strict, Mode::Lenient] {
        for duplicate_ids in [DuplicateIds::Reject, DuplicateIds::Allow] {
            let options = ReaderOptions {
                mode,
                duplicate_ids,
                max_line_bytes: 4096,
                encoding: None,
            };
            let mut reader = ExampleReader::from_reader(data, "fuzz.jsonl", options).expect("valid options");
            for item in reader.by_ref() {
                if let Err(e) = item {
                    let _ = e.to_string();
                }
            }
            let _ = reader.report().to_string();
        }
    }
});
