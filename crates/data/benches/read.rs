//! Read throughput of `ExampleReader` on a full-format JSONL file with logprobs, against plain
//! `serde_json::from_str::<Example>` over the same lines (already split, in memory).
//!
//! The file is generated here: 500 examples, each a 160-token response with 5 top logprobs
//! per token and token bytes (about 24 MB), from a fixed seed.

use std::hint::black_box;
use std::io::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use distill_data::prompts::SplitMix64;
use distill_data::{
    EncodeOptions, Encoding, Example, ExampleReader, FinishReason, Message, ReaderOptions, TeacherInfo,
    TokenLogprob, TopLogprob, Usage, encode_line,
};

const EXAMPLES: usize = 500;
const TOKENS: usize = 160;
const TOP: usize = 5;

fn word(rng: &mut SplitMix64) -> String {
    const WORDS: [&str; 8] = [" the", " model", " distill", "ation", " é", "😀", " logits", "\n"];
    WORDS[rng.below(WORDS.len() as u64) as usize].to_owned()
}

fn example(i: usize, rng: &mut SplitMix64) -> Example {
    let tokens: Vec<TokenLogprob> = (0..TOKENS)
        .map(|_| {
            let token = word(rng);
            let top_logprobs = (0..TOP)
                .map(|_| {
                    let t = word(rng);
                    TopLogprob {
                        bytes: Some(t.clone().into_bytes()),
                        token: t,
                        logprob: -(rng.below(1 << 20) as f64) / 1e5,
                    }
                })
                .collect();
            TokenLogprob {
                bytes: Some(token.clone().into_bytes()),
                token,
                logprob: -(rng.below(1 << 20) as f64) / 1e5,
                top_logprobs,
            }
        })
        .collect();
    let response: String = tokens.iter().map(|t| t.token.as_str()).collect();
    let mut e = Example::new(
        vec![
            Message::system("You are a helpful assistant."),
            Message::user(format!("Prompt number {i}: explain distillation.")),
        ],
        response,
    );
    e.teacher = Some(TeacherInfo {
        model: "gpt-4o".into(),
        provider: "azure".into(),
        finish_reason: Some(FinishReason::Stop),
        usage: Some(Usage {
            prompt_tokens: 30,
            completion_tokens: TOKENS as u64,
        }),
        latency_ms: Some(900),
        created: Some(1_790_000_000),
    });
    e.logprobs = Some(tokens);
    e
}

fn bench_read(c: &mut Criterion) {
    let mut rng = SplitMix64::new(7);
    let mut bytes = Vec::new();
    for i in 0..EXAMPLES {
        encode_line(
            &example(i, &mut rng),
            Encoding::Full,
            EncodeOptions::default(),
            &mut bytes,
        )
        .unwrap();
    }
    let text = std::str::from_utf8(&bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.jsonl");
    std::fs::File::create(&path).unwrap().write_all(&bytes).unwrap();

    let mut g = c.benchmark_group("read_full_with_logprobs");
    g.throughput(Throughput::BytesDecimal(bytes.len() as u64));
    g.sample_size(20);
    g.bench_function("serde_json_from_str_lines", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(serde_json::from_str::<Example>(l).unwrap());
            }
        })
    });
    g.bench_function("example_reader_memory", |b| {
        b.iter(|| {
            let r = ExampleReader::from_reader(&bytes[..], "bench.jsonl", ReaderOptions::default()).unwrap();
            for e in r {
                black_box(e.unwrap());
            }
        })
    });
    g.bench_function("example_reader_file", |b| {
        b.iter(|| {
            for e in ExampleReader::open(&path).unwrap() {
                black_box(e.unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench_read);
criterion_main!(benches);
