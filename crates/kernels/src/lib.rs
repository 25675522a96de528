//! f32 CPU kernels for decoding one sequence or a small batch: matrix-vector (and few-vector)
//! products split across the threads of the current rayon pool, and the small vector
//! operations between them.
//!
//! Decoding one token reads every weight once, so it is bound by memory bandwidth, and a
//! libtorch op costs microseconds of dispatch whatever its size. These kernels read row-major
//! matrices front to back, one row at a time (one sequential stream per thread, which reads
//! fastest on the machines measured in docs/benchmarks.md), and write into buffers the caller
//! allocates once. Call them inside `ThreadPool::install` to choose the threads.
//!
//! The matrix products read weights stored as f32, f16 or bf16 ([`Weight`]): 16-bit weights
//! are widened to f32 in registers, so a product reads half the bytes and computes in f32.
//!
//! Weights kept in ggml's quantized blocks are multiplied by [`quant`]'s products.
#![warn(missing_docs)]

pub mod quant;

use half::{bf16, f16};
use rayon::prelude::*;

/// A weight format the matrix products read: `f32`, `half::f16` or `half::bf16`.
pub trait Weight: sealed::Sealed + Copy + Send + Sync + 'static {
    /// The slice as its format.
    fn rows(w: &[Self]) -> Rows<'_>;
}

/// Weights of one of the formats.
#[derive(Debug, Clone, Copy)]
pub enum Rows<'a> {
    /// 32-bit floats.
    F32(&'a [f32]),
    /// IEEE half precision.
    F16(&'a [f16]),
    /// bfloat16.
    Bf16(&'a [bf16]),
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

impl Weight for f32 {
    fn rows(w: &[Self]) -> Rows<'_> {
        Rows::F32(w)
    }
}

impl Weight for f16 {
    fn rows(w: &[Self]) -> Rows<'_> {
        Rows::F16(w)
    }
}

impl Weight for bf16 {
    fn rows(w: &[Self]) -> Rows<'_> {
        Rows::Bf16(w)
    }
}

/// `y[r] = w[r, :] · x` for a row-major `w` of `y.len()` rows and `x.len()` columns, split into
/// row blocks across the current rayon pool.
pub fn matvec<W: Weight>(w: &[W], x: &[f32], y: &mut [f32]) {
    let cols = x.len();
    assert_eq!(w.len(), y.len() * cols, "matrix is not rows × cols");
    // Blocks small enough to balance two busy threads, large enough that scheduling is noise.
    let threads = rayon::current_num_threads().max(1);
    let block = y.len().div_ceil(threads * 4).max(64);
    y.par_chunks_mut(block)
        .zip(w.par_chunks(block * cols))
        .for_each(|(ys, ws)| matvec_serial(ws, x, ys));
}

/// `W x` for each of `batch` inputs at once, reading each weight row once for all of them:
/// `xs` holds the inputs one after another (`batch × cols`), and `out` receives the results
/// output-major (`rows × batch`: output `r` of every input together). Split into row blocks
/// across the current rayon pool like [`matvec`].
pub fn matmat<W: Weight>(w: &[W], xs: &[f32], batch: usize, out: &mut [f32]) {
    let cols = xs.len() / batch.max(1);
    let rows = out.len() / batch.max(1);
    assert_eq!(xs.len(), batch * cols, "inputs are not batch × cols");
    assert_eq!(out.len(), batch * rows, "outputs are not rows × batch");
    assert_eq!(w.len(), rows * cols, "matrix is not rows × cols");
    let threads = rayon::current_num_threads().max(1);
    let block = rows.div_ceil(threads * 4).max(16);
    out.par_chunks_mut(block * batch)
        .zip(w.par_chunks(block * cols))
        .for_each(|(outs, ws)| matmat_serial(ws, xs, batch, outs));
}

/// Whether this CPU runs the `avx2` kernels (checked once, then cached by the standard library).
#[cfg(target_arch = "x86_64")]
fn avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

/// Whether this CPU runs the 16-bit `avx2` kernels (which also need F16C for f16).
#[cfg(target_arch = "x86_64")]
fn avx2_fma_f16c() -> bool {
    avx2_fma() && std::arch::is_x86_feature_detected!("f16c")
}

/// [`matmat`] on the calling thread.
fn matmat_serial<W: Weight>(w: &[W], xs: &[f32], batch: usize, out: &mut [f32]) {
    let cols = xs.len() / batch;
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (each arm): the CPU supports the features the function is compiled for.
        match W::rows(w) {
            Rows::F32(w) if avx2_fma() => return unsafe { avx2::matmat(w, xs, batch, out) },
            Rows::F16(w) if avx2_fma_f16c() => return unsafe { avx2::matmat_f16(w, xs, batch, out) },
            Rows::Bf16(w) if avx2_fma() => return unsafe { avx2::matmat_bf16(w, xs, batch, out) },
            _ => {}
        }
    }
    for (row, out) in w.chunks_exact(cols).zip(out.chunks_exact_mut(batch)) {
        for (o, x) in out.iter_mut().zip(xs.chunks_exact(cols)) {
            *o = dot_weights(row, x);
        }
    }
}

/// [`matvec`] on the calling thread.
fn matvec_serial<W: Weight>(w: &[W], x: &[f32], y: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY (each arm): the CPU supports the features the function is compiled for.
        match W::rows(w) {
            Rows::F32(w) if avx2_fma() => return unsafe { avx2::matvec(w, x, y) },
            Rows::F16(w) if avx2_fma_f16c() => return unsafe { avx2::matvec_f16(w, x, y) },
            Rows::Bf16(w) if avx2_fma() => return unsafe { avx2::matvec_bf16(w, x, y) },
            _ => {}
        }
    }
    for (row, out) in w.chunks_exact(x.len()).zip(y.iter_mut()) {
        *out = dot_weights(row, x);
    }
}

/// `row · x` for weights of any format, portably.
fn dot_weights<W: Weight>(row: &[W], x: &[f32]) -> f32 {
    match W::rows(row) {
        Rows::F32(row) => dot_portable(row, x),
        Rows::F16(row) => dot_widened(row, x, f16::to_f32),
        Rows::Bf16(row) => dot_widened(row, x, bf16::to_f32),
    }
}

/// A dot product of weights widened one by one, with eight partial sums.
fn dot_widened<T: Copy>(row: &[T], x: &[f32], widen: impl Fn(T) -> f32) -> f32 {
    let mut sums = [0f32; 8];
    let (r8, x8) = (row.chunks_exact(8), x.chunks_exact(8));
    let tail: f32 = r8
        .remainder()
        .iter()
        .zip(x8.remainder())
        .map(|(&w, x)| widen(w) * x)
        .sum();
    for (w, x) in r8.zip(x8) {
        for i in 0..8 {
            sums[i] += widen(w[i]) * x[i];
        }
    }
    sums.iter().sum::<f32>() + tail
}

/// `a · b`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if avx2_fma() {
        // SAFETY: the CPU supports the features the function is compiled for.
        return unsafe { avx2::dot(a, b) };
    }
    dot_portable(a, b)
}

/// A dot product with eight independent partial sums, which the compiler can vectorise.
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    dot_widened(a, b, |v| v)
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Eight f32 weights.
    ///
    /// # Safety
    /// `p` points at eight readable floats.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_f32(p: *const f32) -> __m256 {
        // SAFETY: the caller's promise.
        unsafe { _mm256_loadu_ps(p) }
    }

    /// An f32 weight as it is (the tails of [`load_f32`]'s rows).
    fn same(w: f32) -> f32 {
        w
    }

    /// Eight f16 weights widened to f32.
    ///
    /// # Safety
    /// `p` points at eight readable halves.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn load_f16(p: *const half::f16) -> __m256 {
        // SAFETY: the caller's promise.
        unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
    }

    /// Eight bf16 weights widened to f32 (a bf16 is the top half of an f32).
    ///
    /// # Safety
    /// `p` points at eight readable halves.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn load_bf16(p: *const half::bf16) -> __m256 {
        // SAFETY: the caller's promise.
        unsafe {
            let halves = _mm256_cvtepu16_epi32(_mm_loadu_si128(p as *const __m128i));
            _mm256_castsi256_ps(_mm256_slli_epi32::<16>(halves))
        }
    }

    /// `matvec`, `dot`, `matmat` and `row_times` over weights of type `$ty`, read eight at a
    /// time with `$load` (widening 16-bit ones to f32) and one by one with `$widen` (the tails).
    ///
    /// `dot` keeps four 8-lane accumulators to hide the latency of the fused multiply-adds.
    /// `matmat` takes each weight row against up to eight inputs at a time (`row_times`, the
    /// `N` accumulators in registers): one load of the row feeds one fused multiply-add per
    /// input, so the products are bound by arithmetic rather than by loads. Columns beyond a
    /// multiple of 8 are summed plainly.
    macro_rules! widening_products {
        ($features:literal, $ty:ty, $load:ident, $widen:path, $matvec:ident, $dot:ident, $matmat:ident, $row_times:ident) => {
            #[target_feature(enable = $features)]
            pub(super) fn $matvec(w: &[$ty], x: &[f32], y: &mut [f32]) {
                for (row, out) in w.chunks_exact(x.len()).zip(y.iter_mut()) {
                    *out = $dot(row, x);
                }
            }

            #[target_feature(enable = $features)]
            pub(super) fn $dot(row: &[$ty], x: &[f32]) -> f32 {
                let n = row.len().min(x.len());
                let (pw, px) = (row.as_ptr(), x.as_ptr());
                let mut acc = [_mm256_setzero_ps(); 4];
                let mut i = 0;
                // SAFETY: every load reads 8 values at an offset below `n - 7` of both slices.
                unsafe {
                    while i + 32 <= n {
                        for (k, sum) in acc.iter_mut().enumerate() {
                            let (w, x) = ($load(pw.add(i + 8 * k)), _mm256_loadu_ps(px.add(i + 8 * k)));
                            *sum = _mm256_fmadd_ps(w, x, *sum);
                        }
                        i += 32;
                    }
                    while i + 8 <= n {
                        acc[0] = _mm256_fmadd_ps($load(pw.add(i)), _mm256_loadu_ps(px.add(i)), acc[0]);
                        i += 8;
                    }
                }
                let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                horizontal_sum(sum)
                    + row[i..n]
                        .iter()
                        .zip(&x[i..n])
                        .map(|(&w, x)| $widen(w) * x)
                        .sum::<f32>()
            }

            #[target_feature(enable = $features)]
            pub(super) fn $matmat(w: &[$ty], xs: &[f32], batch: usize, out: &mut [f32]) {
                let cols = xs.len() / batch;
                for (row, out) in w.chunks_exact(cols).zip(out.chunks_exact_mut(batch)) {
                    for (group, outs) in xs.chunks(8 * cols).zip(out.chunks_mut(8)) {
                        match outs.len() {
                            8 => $row_times::<8>(row, group, outs),
                            7 => $row_times::<7>(row, group, outs),
                            6 => $row_times::<6>(row, group, outs),
                            5 => $row_times::<5>(row, group, outs),
                            4 => $row_times::<4>(row, group, outs),
                            3 => $row_times::<3>(row, group, outs),
                            2 => $row_times::<2>(row, group, outs),
                            _ => $row_times::<1>(row, group, outs),
                        }
                    }
                }
            }

            #[target_feature(enable = $features)]
            fn $row_times<const N: usize>(row: &[$ty], inputs: &[f32], outs: &mut [f32]) {
                let cols = row.len();
                let full = cols - cols % 8;
                assert!(inputs.len() >= N * cols && outs.len() >= N);
                let mut acc = [_mm256_setzero_ps(); N];
                let mut i = 0;
                while i < full {
                    // SAFETY: `i + 8 <= full <= cols`: within the row and each of the N inputs.
                    unsafe {
                        _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().wrapping_add(i + 1024) as *const i8);
                        let weights = $load(row.as_ptr().add(i));
                        for (b, sum) in acc.iter_mut().enumerate() {
                            let x = _mm256_loadu_ps(inputs.as_ptr().add(b * cols + i));
                            *sum = _mm256_fmadd_ps(weights, x, *sum);
                        }
                    }
                    i += 8;
                }
                for (b, (o, sum)) in outs.iter_mut().zip(acc).enumerate() {
                    let x = &inputs[b * cols..(b + 1) * cols];
                    let tail: f32 = row[full..]
                        .iter()
                        .zip(&x[full..])
                        .map(|(&w, x)| $widen(w) * x)
                        .sum();
                    *o = horizontal_sum(sum) + tail;
                }
            }
        };
    }

    widening_products!("avx2,fma", f32, load_f32, same, matvec, dot, matmat, row_times);
    widening_products!(
        "avx2,fma,f16c",
        half::f16,
        load_f16,
        half::f16::to_f32,
        matvec_f16,
        dot_f16,
        matmat_f16,
        row_times_f16
    );
    widening_products!(
        "avx2,fma",
        half::bf16,
        load_bf16,
        half::bf16::to_f32,
        matvec_bf16,
        dot_bf16,
        matmat_bf16,
        row_times_bf16
    );

    #[target_feature(enable = "avx2,fma")]
    fn horizontal_sum(v: __m256) -> f32 {
        let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
        _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
    }
}

/// `out = weight ⊙ x / sqrt(mean(x²) + eps)`, as transformers' `LlamaRMSNorm` in f32.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) {
    let mean_square = dot(x, x) / x.len() as f32;
    let scale = 1.0 / (mean_square + eps).sqrt();
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * scale);
    }
}

/// `out = weight ⊙ (x − mean(x)) / sqrt(var(x) + eps) + bias`, as `torch.nn.LayerNorm`.
pub fn layer_norm(x: &[f32], (weight, bias): (&[f32], &[f32]), eps: f32, out: &mut [f32]) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let variance = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let scale = 1.0 / (variance + eps).sqrt();
    for (((o, &v), &w), &b) in out.iter_mut().zip(x).zip(weight).zip(bias) {
        *o = (v - mean) * scale * w + b;
    }
}

/// GELU with the tanh approximation (GPT-2's `gelu_new`), in place.
pub fn gelu_tanh(x: &mut [f32]) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for v in x {
        let inner = SQRT_2_OVER_PI * (*v + 0.044_715 * *v * *v * *v);
        *v = 0.5 * *v * (1.0 + inner.tanh());
    }
}

/// `x += y`.
pub fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// `out = silu(gate) ⊙ up`.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
}

/// Rotates each `head_dim`-wide head of `x` in place by the rotary angles whose `cos` and `sin`
/// are given per frequency (`head_dim / 2` each): HF's `x · cos + rotate_half(x) · sin`.
pub fn rotate_heads(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in x.chunks_exact_mut(2 * half) {
        let (x1, x2) = head.split_at_mut(half);
        for i in 0..half {
            let (a, b) = (x1[i], x2[i]);
            x1[i] = a * cos[i] - b * sin[i];
            x2[i] = b * cos[i] + a * sin[i];
        }
    }
}

/// Where a cache of keys and values keeps each head: position after position, `stride` floats
/// apart, with KV head `g` at `g · head_dim` within a position.
#[derive(Debug, Clone, Copy)]
pub struct CacheLayout {
    /// Cached positions.
    pub len: usize,
    /// Floats from one position to the next (`kv_heads · head_dim`).
    pub stride: usize,
    /// Floats per head.
    pub head_dim: usize,
}

/// Grouped-query attention of one new position over a cache: query head `h` (of
/// `q.len() / head_dim`) attends to KV head `h / (heads / kv_heads)`, and writes
/// `softmax(K q / sqrt(head_dim)) V` to its `head_dim` floats of `out`. `scores` is scratch of
/// at least `heads · len` floats. Heads run in parallel on the current rayon pool.
pub fn attention(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    layout: CacheLayout,
    scores: &mut [f32],
    out: &mut [f32],
) {
    let CacheLayout {
        len,
        stride,
        head_dim,
    } = layout;
    let heads = q.len() / head_dim;
    let group = heads / (stride / head_dim);
    out.par_chunks_mut(head_dim)
        .zip(scores[..heads * len].par_chunks_mut(len))
        .enumerate()
        .with_min_len(heads.div_ceil(rayon::current_num_threads()))
        .for_each(|(head, (out, scores))| {
            let query = &q[head * head_dim..(head + 1) * head_dim];
            let offset = (head / group) * head_dim;
            attend(query, (keys, values), (len, stride, offset), scores, out);
        });
}

/// Attention of one query head over `len` cached positions, each head's keys and values at
/// `offset` within positions `stride` floats apart.
fn attend(
    q: &[f32],
    cache: (&[f32], &[f32]),
    layout: (usize, usize, usize),
    scores: &mut [f32],
    out: &mut [f32],
) {
    let (keys, values) = cache;
    let (len, stride, offset) = layout;
    let width = q.len();
    let scale = 1.0 / (width as f32).sqrt();
    let scores = &mut scores[..len];
    for (t, s) in scores.iter_mut().enumerate() {
        let at = t * stride + offset;
        *s = dot(q, &keys[at..at + width]) * scale;
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut total = 0.0;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        total += *s;
    }
    out.fill(0.0);
    for (t, &p) in scores.iter().enumerate() {
        let at = t * stride + offset;
        let weight = p / total;
        for (o, &v) in out.iter_mut().zip(&values[at..at + width]) {
            *o += weight * v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive_dot(a: &[f32], b: &[f32]) -> f64 {
        a.iter().zip(b).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum()
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 2000) as f32 / 1000.0 - 1.0)
            .collect()
    }

    #[test]
    fn dot_and_matvec_agree_with_f64_sums_for_every_tail_length() {
        for cols in [1, 7, 8, 31, 32, 33, 64, 100, 576] {
            let x = values(cols, 1);
            let w = values(cols * 70, 2);
            let mut y = vec![0.0; 70];
            matvec(&w, &x, &mut y);
            for (r, &got) in y.iter().enumerate() {
                let want = naive_dot(&w[r * cols..(r + 1) * cols], &x);
                assert!((f64::from(got) - want).abs() <= 1e-4, "cols {cols} row {r}");
                assert!((f64::from(dot_portable(&w[r * cols..(r + 1) * cols], &x)) - want).abs() <= 1e-4);
            }
        }
    }

    /// 16-bit weights: each product equals the f64 sum over the widened weights (so the only
    /// rounding of the format is the weights' own), in `matvec`, in `matmat` at every batch
    /// size, and on the portable path.
    #[test]
    fn sixteen_bit_weights_multiply_as_their_widened_values() {
        fn check<W: Weight>(narrow: fn(f32) -> W, widen: fn(W) -> f32) {
            for cols in [1, 7, 8, 33, 64, 100, 576] {
                let rows = 40;
                let w: Vec<W> = values(cols * rows, 5).into_iter().map(narrow).collect();
                let wide: Vec<f32> = w.iter().map(|&v| widen(v)).collect();
                let xs = values(cols * 8, 6);
                let mut y = vec![0.0; rows];
                matvec(&w, &xs[..cols], &mut y);
                for batch in 1..=8 {
                    let mut out = vec![0.0; rows * batch];
                    matmat(&w, &xs[..cols * batch], batch, &mut out);
                    for r in 0..rows {
                        let row = &wide[r * cols..(r + 1) * cols];
                        for b in 0..batch {
                            let want = naive_dot(row, &xs[b * cols..(b + 1) * cols]);
                            let got = f64::from(out[r * batch + b]);
                            assert!(
                                (got - want).abs() <= 1e-4,
                                "cols {cols} batch {batch} row {r} input {b}"
                            );
                        }
                        if batch == 1 {
                            let want = naive_dot(row, &xs[..cols]);
                            assert!(
                                (f64::from(y[r]) - want).abs() <= 1e-4,
                                "matvec cols {cols} row {r}"
                            );
                            let portable = f64::from(dot_weights(&w[r * cols..(r + 1) * cols], &xs[..cols]));
                            assert!((portable - want).abs() <= 1e-4, "portable cols {cols} row {r}");
                        }
                    }
                }
            }
        }
        check(f16::from_f32, f16::to_f32);
        check(bf16::from_f32, bf16::to_f32);
    }

    #[test]
    fn matmat_gives_each_input_its_products() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        // Batches below, at and above the 8-input group, columns with and without a tail.
        for (batch, cols) in [(1, 40), (3, 43), (8, 64), (11, 7)] {
            let rows = 300;
            let (w, xs) = (values(rows * cols, 5), values(batch * cols, 6));
            let mut out = vec![f32::NAN; rows * batch];
            pool.install(|| matmat(&w, &xs, batch, &mut out));
            for (b, x) in xs.chunks_exact(cols).enumerate() {
                for r in 0..rows {
                    let want = naive_dot(&w[r * cols..(r + 1) * cols], x);
                    let got = f64::from(out[r * batch + b]);
                    assert!(
                        (got - want).abs() <= 1e-4,
                        "batch {batch} cols {cols}: input {b} row {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn matmat_gives_an_input_the_same_bits_in_any_batch() {
        // Batch-invariant decoding relies on it: each input's products are summed in one order
        // whatever the batch size (one batch of one included).
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        for cols in [5, 8, 13, 32, 37, 64, 100, 576] {
            let rows = 70;
            let w = values(rows * cols, 7);
            for batch in 1..=11 {
                let xs = values(batch * cols, 8);
                let mut out = vec![f32::NAN; rows * batch];
                pool.install(|| matmat(&w, &xs, batch, &mut out));
                for (b, x) in xs.chunks_exact(cols).enumerate() {
                    let mut alone = vec![f32::NAN; rows];
                    pool.install(|| matmat(&w, x, 1, &mut alone));
                    for (r, want) in alone.iter().enumerate() {
                        assert_eq!(
                            out[r * batch + b].to_bits(),
                            want.to_bits(),
                            "cols {cols} batch {batch}: input {b} row {r}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn matvec_splits_large_outputs_across_threads() {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let (rows, cols) = (1000, 48);
        let (w, x) = (values(rows * cols, 3), values(cols, 4));
        let mut y = vec![f32::NAN; rows];
        pool.install(|| matvec(&w, &x, &mut y));
        for (r, &got) in y.iter().enumerate() {
            let want = naive_dot(&w[r * cols..(r + 1) * cols], &x);
            assert!((f64::from(got) - want).abs() <= 1e-4, "row {r}");
        }
    }

    #[test]
    fn attention_weights_each_position_by_its_softmax_score() {
        // Two positions, two KV heads of width 2, four query heads: heads 2 and 3 read KV head 1.
        let keys = [9.0, 9.0, 1.0, 0.0, 9.0, 9.0, 0.0, 1.0];
        let values = [9.0, 9.0, 10.0, 0.0, 9.0, 9.0, 0.0, 20.0];
        let ln3 = 2.0f32.sqrt() * 3.0_f32.ln();
        let q = [0.0, 0.0, 0.0, 0.0, ln3, 0.0, 0.0, ln3];
        let layout = CacheLayout {
            len: 2,
            stride: 4,
            head_dim: 2,
        };
        let mut out = [0.0; 8];
        attention(&q, &keys, &values, layout, &mut [0.0; 8], &mut out);
        // Head 2 scores ln 3 and 0 (weights 3/4, 1/4); head 3 the reverse.
        let want = [7.5, 5.0, 2.5, 15.0];
        for (got, want) in out[4..].iter().zip(want) {
            assert!((got - want).abs() < 1e-5, "{out:?}");
        }
        // Heads 0 and 1 read KV head 0 (values 9, 9 at both positions) with equal scores.
        assert!(out[..4].iter().all(|v| (v - 9.0).abs() < 1e-5), "{out:?}");
    }

    #[test]
    fn layer_norm_centres_scales_and_shifts() {
        let mut out = [0.0; 4];
        layer_norm(
            &[1.0, 2.0, 3.0, 4.0],
            (&[1.0, 1.0, 2.0, 2.0], &[0.0, 0.0, 0.0, 1.0]),
            0.0,
            &mut out,
        );
        let unit = 1.0 / 1.25f32.sqrt();
        let want = [-1.5 * unit, -0.5 * unit, 2.0 * 0.5 * unit, 2.0 * 1.5 * unit + 1.0];
        for (got, want) in out.iter().zip(want) {
            assert!((got - want).abs() < 1e-6, "{out:?}");
        }
    }

    #[test]
    fn gelu_tanh_matches_known_values() {
        let mut x = [0.0, 1.0, -1.0, 3.0];
        gelu_tanh(&mut x);
        // torch.nn.functional.gelu(torch.tensor([0., 1., -1., 3.]), approximate="tanh")
        let want = [0.0, 0.841_192, -0.158_808, 2.996_363];
        for (got, want) in x.iter().zip(want) {
            assert!((got - want).abs() < 1e-5, "{x:?}");
        }
    }

    #[test]
    fn rotation_by_a_quarter_turn_swaps_the_halves() {
        let mut x = [1.0, 2.0, 3.0, 4.0];
        rotate_heads(&mut x, &[0.0, 1.0], &[1.0, 0.0]);
        assert_eq!(x, [-3.0, 2.0, 1.0, 4.0]);
    }
}
