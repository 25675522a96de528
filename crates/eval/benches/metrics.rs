//! Corpus BLEU and ROUGE (1/2/L with the stemmer) on 10,000 pairs.
//!
//! `benches/python_peer.py` times sacrebleu and rouge-score on the same pairs;
//! run both and compare (docs/benchmarks.md, section `distill-eval`). The bench
//! prints its scores once so that they can be checked against the peer's.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use distill_eval::bleu::{Bleu, BleuConfig};
use distill_eval::rouge::{RougeScorer, RougeType, mean_scores};

const N_PAIRS: usize = 10_000;

/// The bench corpus, built exactly as `python_peer.py` builds it.
fn bench_pairs() -> (Vec<String>, Vec<String>) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/pairs.jsonl");
    let text = std::fs::read_to_string(path).expect("tests/fixtures/pairs.jsonl");
    let pool: Vec<(String, String)> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("fixture line"))
        .filter(|p| p["kind"] != "long")
        .map(|p| {
            (
                p["hyp"].as_str().unwrap().to_owned(),
                p["ref"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let n = pool.len();
    (0..N_PAIRS)
        .map(|i| {
            let (a, b) = (&pool[i % n], &pool[(i * 7919 + 13) % n]);
            (format!("{} {}", a.0, b.0), format!("{} {}", a.1, b.1))
        })
        .unzip()
}

fn metrics(c: &mut Criterion) {
    let (hyps, refs) = bench_pairs();
    let refs = vec![refs];
    let bleu = Bleu::new(BleuConfig::default()).unwrap();
    let rouge = RougeScorer::new(&[RougeType::N(1), RougeType::N(2), RougeType::L], true).unwrap();

    let score = bleu.corpus_score(&hyps, &refs).unwrap();
    let mean = mean_scores(&rouge.score_batch(&refs[0], &hyps).unwrap()).unwrap();
    eprintln!("corpus BLEU {:.12} ({})", score.score, score.signature);
    for (t, s) in &mean.scores {
        eprintln!("mean {t} F {:.12}", s.fmeasure);
    }

    let mut group = c.benchmark_group("metrics_10k_pairs");
    group.sample_size(10);
    group.bench_function("corpus_bleu_13a", |b| {
        b.iter(|| bleu.corpus_score(black_box(&hyps), &refs).unwrap())
    });
    group.bench_function("rouge_1_2_L_stemmer", |b| {
        b.iter(|| rouge.score_batch(black_box(&refs[0]), black_box(&hyps)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, metrics);
criterion_main!(benches);
