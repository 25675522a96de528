//! The machine's read bandwidth, the bound on batch-1 decoding: a streaming sum over a buffer
//! far larger than the caches, on one thread and on two (the decoder's pool here), against
//! the decoder's own product reading the same bytes as f32 and as f16 weights, and the same
//! number of weights in each quantized block format. Criterion
//! prints bytes/s; tokens/s × bytes per token over the two-thread figure is the fraction of
//! the bound a decoder reaches (docs/benchmarks.md).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use distill_kernels::quant::{self, BlockFormat, Blocks, Q8Input};
use half::f16;
use rayon::prelude::*;

/// 256 MiB of f32: well past the last-level cache.
const FLOATS: usize = 64 << 20;
/// A weight matrix of the same bytes (in f32): 576 columns, as SmolLM2's hidden size.
const COLS: usize = 576;

fn read(c: &mut Criterion) {
    let data: Vec<f32> = (0..FLOATS).map(|i| (i % 1000) as f32 * 1e-3).collect();
    let mut group = c.benchmark_group("stream_read");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    group.throughput(Throughput::Bytes((FLOATS * 4) as u64));
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        group.bench_function(format!("sum_f32_{threads}_threads"), |b| {
            b.iter(|| pool.install(|| data.par_chunks(1 << 16).map(stream_sum).sum::<f32>()))
        });
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    let x: Vec<f32> = (0..COLS).map(|i| i as f32 * 1e-3).collect();
    let rows = FLOATS / COLS;
    let mut y = vec![0.0f32; rows];
    group.bench_function("matvec_f32_2_threads", |b| {
        b.iter(|| pool.install(|| distill_kernels::matvec(black_box(&data[..rows * COLS]), &x, &mut y)))
    });
    let halves: Vec<f16> = data[..rows * COLS].iter().map(|&v| f16::from_f32(v)).collect();
    drop(data);
    // The same number of weights in half the bytes: throughput counts the bytes read.
    group.throughput(Throughput::Bytes((rows * COLS * 2) as u64));
    group.bench_function("matvec_f16_2_threads", |b| {
        b.iter(|| pool.install(|| distill_kernels::matvec(black_box(&halves[..]), &x, &mut y)))
    });
    drop(halves);
    // Quantized blocks: the same number of weights, far fewer bytes. K-quants need rows of
    // whole 256-blocks, so they take SmolLM2's MLP width (1536) instead.
    for format in BlockFormat::ALL {
        let cols = if format.block_len() == 256 { 1536 } else { COLS };
        let rows = FLOATS / cols;
        // Every byte 0x2c: each f16 scale field reads 0.066, and the codes are arbitrary.
        let bytes = vec![0x2cu8; rows * format.row_bytes(cols).unwrap()];
        let w = Blocks::new(format, cols, &bytes).unwrap();
        let mut input = Q8Input::default();
        input.quantize(&(0..cols).map(|i| i as f32 * 1e-3).collect::<Vec<_>>(), 1);
        let mut y = vec![0.0f32; rows];
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(format!("matvec_{format:?}_2_threads"), |b| {
            b.iter(|| pool.install(|| quant::matvec(black_box(w), &input, &mut y)))
        });
    }
    group.finish();
}

/// The block products' compute ceiling: each format on one thread over a matrix that stays in
/// the L2 cache (2,048 rows, under 1 MB), reported per weight. Against `read`'s figures this
/// tells a compute-bound format (Q4_1 here) from a bandwidth-bound one.
fn in_cache(c: &mut Criterion) {
    let mut group = c.benchmark_group("quant_in_cache");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    for format in BlockFormat::ALL {
        let cols = if format.block_len() == 256 { 1536 } else { COLS };
        let rows = 2048;
        let bytes: Vec<u8> = (0..rows * format.row_bytes(cols).unwrap())
            .map(|i| (i * 7 % 251) as u8 & 0x3f | 0x20)
            .collect();
        let w = Blocks::new(format, cols, &bytes).unwrap();
        let mut input = Q8Input::default();
        input.quantize(&(0..cols).map(|i| i as f32 * 1e-3).collect::<Vec<_>>(), 1);
        let mut y = vec![0.0f32; rows];
        group.throughput(Throughput::Elements((rows * cols) as u64));
        group.bench_function(format!("matvec_{format:?}_1_thread"), |b| {
            // Timed inside the pool, so that no wake-up of its thread is counted.
            b.iter_custom(|iters| {
                pool.install(|| {
                    let started = Instant::now();
                    for _ in 0..iters {
                        quant::matvec(black_box(w), &input, &mut y);
                    }
                    started.elapsed()
                })
            })
        });
    }
    group.finish();
}

/// A sum with 32 independent lanes, so that it vectorises and is bound by reading, not by
/// the latency of one chain of additions.
fn stream_sum(x: &[f32]) -> f32 {
    let mut lanes = [0f32; 32];
    for chunk in x.chunks_exact(32) {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += v;
        }
    }
    lanes.iter().sum::<f32>() + x.chunks_exact(32).remainder().iter().sum::<f32>()
}

criterion_group!(benches, read, in_cache);
criterion_main!(benches);
