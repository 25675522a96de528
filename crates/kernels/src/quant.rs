//! Products over weights kept in ggml's quantized blocks (Q8_0, Q4_0, Q4_1, Q5_0, Q4_K, Q5_K,
//! Q6_K), read as a GGUF file stores them: a product reads 4.5 to 8.5 bits per weight instead
//! of 32.
//!
//! As in llama.cpp, the input is quantized too, to 8 bits per group of 32 values with one f32
//! scale ([`Q8Input`]), so that a product multiplies small integers. Every format decodes a
//! group of 32 weights as `w = a · u + b`, with `u` a small code (unsigned except Q8_0's) and
//! `a`, `b` the group's scale and offset (one pair per 16 weights in Q6_K). With the input
//! `x ≈ dx · q`, a group contributes `dx · (a · Σ u q + b · Σ q)`: the integer sums `Σ u q`
//! are what AVX2's `maddubs` computes 32 at a time, and each input group's `dx · Σ q` is
//! computed once, when it is quantized. Quantizing the input costs at most half a step per
//! value, `|x - dx q| <= dx / 2`, so a product is off by at most `Σ |w| · dx / 2` per group.
//!
//! Within a group the products sum the same way for any number of inputs, so a batched
//! product ([`matmat`]) gives each input the bits [`matvec`] gives it alone.

use std::ops::Range;

use half::f16;
use rayon::prelude::*;

/// A ggml block format the products read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum BlockFormat {
    /// 32 signed 8-bit codes and an f16 scale: 8.5 bits per weight.
    Q8_0,
    /// 32 4-bit codes, an f16 scale, offset −8 steps: 4.5 bits per weight.
    Q4_0,
    /// 32 4-bit codes, an f16 scale and an f16 offset: 5 bits per weight.
    Q4_1,
    /// 32 5-bit codes, an f16 scale, offset −16 steps: 5.5 bits per weight.
    Q5_0,
    /// 256 4-bit codes in 8 groups with 6-bit scales and offsets: 4.5 bits per weight.
    Q4_K,
    /// 256 5-bit codes in 8 groups with 6-bit scales and offsets: 5.5 bits per weight.
    Q5_K,
    /// 256 6-bit codes in 16 groups of 16 with 8-bit scales: 6.5625 bits per weight.
    Q6_K,
}

impl BlockFormat {
    /// Every format, for tests and listings.
    pub const ALL: [BlockFormat; 7] = [
        BlockFormat::Q8_0,
        BlockFormat::Q4_0,
        BlockFormat::Q4_1,
        BlockFormat::Q5_0,
        BlockFormat::Q4_K,
        BlockFormat::Q5_K,
        BlockFormat::Q6_K,
    ];

    /// Weights per block.
    pub fn block_len(self) -> usize {
        match self {
            BlockFormat::Q4_K | BlockFormat::Q5_K | BlockFormat::Q6_K => 256,
            _ => 32,
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            BlockFormat::Q8_0 => 34,
            BlockFormat::Q4_0 => 18,
            BlockFormat::Q4_1 => 20,
            BlockFormat::Q5_0 => 22,
            BlockFormat::Q4_K => 144,
            BlockFormat::Q5_K => 176,
            BlockFormat::Q6_K => 210,
        }
    }

    /// Bytes of a row of `cols` weights, `None` unless `cols` is a whole number of blocks.
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        cols.is_multiple_of(self.block_len())
            .then(|| cols / self.block_len() * self.block_bytes())
    }

    /// Groups of 32 per block.
    fn groups(self) -> usize {
        self.block_len() / GROUP
    }
}

/// Values per quantization group of the input, and per group of weights.
pub const GROUP: usize = 32;

/// A row-major matrix in one block format: each row is `cols / block_len` blocks.
#[derive(Debug, Clone, Copy)]
pub struct Blocks<'a> {
    format: BlockFormat,
    cols: usize,
    bytes: &'a [u8],
}

impl<'a> Blocks<'a> {
    /// Rows of `cols` weights in `format`, `None` unless `cols` is a whole number of blocks and
    /// `bytes` a whole number of rows.
    pub fn new(format: BlockFormat, cols: usize, bytes: &'a [u8]) -> Option<Self> {
        let row = format.row_bytes(cols).filter(|&r| r > 0)?;
        bytes
            .len()
            .is_multiple_of(row)
            .then_some(Self { format, cols, bytes })
    }

    /// The format.
    pub fn format(&self) -> BlockFormat {
        self.format
    }

    /// Weights per row.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows.
    pub fn rows(&self) -> usize {
        self.bytes.len() / self.row_bytes()
    }

    /// The blocks as stored.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    fn row_bytes(&self) -> usize {
        self.cols / self.format.block_len() * self.format.block_bytes()
    }

    /// Row `r` decoded to f32 into `out` (`cols` floats): an embedding lookup.
    ///
    /// # Panics
    /// If `r` is not a row or `out` is not `cols` long.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        assert_eq!(out.len(), self.cols, "a row is cols wide");
        let row = &self.bytes[r * self.row_bytes()..(r + 1) * self.row_bytes()];
        let (groups, size) = (self.format.groups(), self.format.block_bytes());
        for (g, out) in out.chunks_exact_mut(GROUP).enumerate() {
            let group = decode_group(self.format, &row[g / groups * size..][..size], g % groups);
            for (j, o) in out.iter_mut().enumerate() {
                let half = j / 16;
                *o = group.scale[half] * f32::from(group.codes[j]) + group.offset[half];
            }
        }
    }
}

/// Inputs quantized to 8 bits per group of [`GROUP`] values, for the products: the codes, each
/// group's scale, and each half-group's scale times its codes' sum. Reuse one across products
/// to allocate once.
#[derive(Debug, Default, Clone)]
pub struct Q8Input {
    codes: Vec<i8>,
    scales: Vec<f32>,
    sums: Vec<[f32; 2]>,
    batch: usize,
    cols: usize,
}

impl Q8Input {
    /// Quantizes `batch` inputs laid one after another in `xs` (each a whole number of groups
    /// long) as ggml's `quantize_row_q8_0` does: a group's scale is its largest magnitude over
    /// 127, and each value rounds to the nearest step.
    ///
    /// # Panics
    /// If `xs` is not `batch` inputs of whole groups.
    pub fn quantize(&mut self, xs: &[f32], batch: usize) {
        let cols = xs.len() / batch.max(1);
        assert!(
            batch > 0 && xs.len() == batch * cols && cols.is_multiple_of(GROUP),
            "inputs are not batch × whole groups"
        );
        let groups = xs.len() / GROUP;
        self.codes.resize(xs.len(), 0);
        self.scales.resize(groups, 0.0);
        self.sums.resize(groups, [0.0; 2]);
        (self.batch, self.cols) = (batch, cols);
        let parts = xs.chunks_exact(GROUP).zip(self.codes.chunks_exact_mut(GROUP));
        for ((x, codes), (scale, sums)) in parts.zip(self.scales.iter_mut().zip(&mut self.sums)) {
            let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
            for (c, v) in codes.iter_mut().zip(x) {
                *c = (v * inverse).round() as i8;
            }
            let half_sum = |h: &[i8]| h.iter().map(|&c| i32::from(c)).sum::<i32>() as f32 * d;
            *scale = d;
            *sums = [half_sum(&codes[..16]), half_sum(&codes[16..])];
        }
    }

    /// Input `b`: its codes, group scales and half-group sums.
    fn input(&self, b: usize) -> Input<'_> {
        let groups = self.cols / GROUP;
        Input {
            codes: &self.codes[b * self.cols..(b + 1) * self.cols],
            scales: &self.scales[b * groups..(b + 1) * groups],
            sums: &self.sums[b * groups..(b + 1) * groups],
        }
    }
}

/// One quantized input.
#[derive(Clone, Copy)]
struct Input<'a> {
    codes: &'a [i8],
    scales: &'a [f32],
    sums: &'a [[f32; 2]],
}

/// `y[r] = w[r, :] · x` for the quantized input `x` (one input), split into row blocks across
/// the current rayon pool.
///
/// # Panics
/// If the shapes disagree.
pub fn matvec(w: Blocks<'_>, x: &Q8Input, y: &mut [f32]) {
    assert_eq!(x.batch, 1, "matvec takes one input");
    matmat(w, x, y);
}

/// `W x` for each quantized input at once, reading each weight row once for all of them:
/// `out` receives the results output-major (`rows × batch`), like [`crate::matmat`].
///
/// # Panics
/// If the shapes disagree.
pub fn matmat(w: Blocks<'_>, xs: &Q8Input, out: &mut [f32]) {
    let batch = xs.batch;
    assert_eq!(xs.cols, w.cols, "inputs are not cols wide");
    assert_eq!(out.len(), w.rows() * batch, "outputs are not rows × batch");
    let threads = rayon::current_num_threads().max(1);
    let block = w.rows().div_ceil(threads * 4).max(16);
    let row_bytes = w.row_bytes();
    let isa = Isa::detect();
    out.par_chunks_mut(block * batch)
        .zip(w.bytes.par_chunks(block * row_bytes))
        .for_each(|(outs, rows)| {
            // Eight inputs at a time over the block's rows (a few kilobytes, read again from
            // the cache for each further eight).
            for first in (0..batch).step_by(8) {
                let count = (batch - first).min(8);
                rows_times(isa, w.format, rows, row_bytes, xs, first..first + count, outs);
            }
        });
}

/// The instruction set the products run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Isa {
    /// AVX2, FMA, F16C and AVX-512 VNNI with AVX512VL.
    #[cfg(target_arch = "x86_64")]
    Vnni,
    /// AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Plain Rust.
    Portable,
}

impl Isa {
    /// The best this CPU runs (the standard library caches the detection).
    fn detect() -> Isa {
        #[cfg(target_arch = "x86_64")]
        if crate::avx2_fma_f16c() {
            let vnni = std::arch::is_x86_feature_detected!("avx512vnni")
                && std::arch::is_x86_feature_detected!("avx512vl");
            return if vnni { Isa::Vnni } else { Isa::Avx2 };
        }
        Isa::Portable
    }
}

/// Rows of `row_bytes` bytes each against the inputs `inputs` (at most 8), on `isa`: row `r`'s
/// product with input `b` goes to `outs[r * xs.batch + b]`.
fn rows_times(
    isa: Isa,
    format: BlockFormat,
    rows: &[u8],
    row_bytes: usize,
    xs: &Q8Input,
    inputs: Range<usize>,
    outs: &mut [f32],
) {
    match isa {
        // SAFETY (each arm): `isa` was detected on this CPU: it supports the features the
        // function is compiled for.
        #[cfg(target_arch = "x86_64")]
        Isa::Vnni => return unsafe { vnni::rows_times(format, rows, row_bytes, xs, inputs, outs) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => return unsafe { avx2::rows_times(format, rows, row_bytes, xs, inputs, outs) },
        Isa::Portable => {}
    }
    for (row, outs) in rows.chunks_exact(row_bytes).zip(outs.chunks_exact_mut(xs.batch)) {
        for b in inputs.clone() {
            outs[b] = dot_portable(format, row, xs.input(b));
        }
    }
}

/// A group of 32 weights decoded: `w[j] = scale[j / 16] · codes[j] + offset[j / 16]`.
struct Group {
    codes: [i8; GROUP],
    scale: [f32; 2],
    offset: [f32; 2],
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The 6-bit scale and offset of group `j` from a K-quant's 12 packed scale bytes.
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// A group's scale and offset (the same for both halves except in Q6_K).
fn group_affine(format: BlockFormat, block: &[u8], g: usize) -> ([f32; 2], [f32; 2]) {
    let same = |a: f32, b: f32| ([a, a], [b, b]);
    match format {
        BlockFormat::Q8_0 => same(half_at(block, 0), 0.0),
        BlockFormat::Q4_0 => {
            let d = half_at(block, 0);
            same(d, -8.0 * d)
        }
        BlockFormat::Q4_1 => same(half_at(block, 0), half_at(block, 2)),
        BlockFormat::Q5_0 => {
            let d = half_at(block, 0);
            same(d, -16.0 * d)
        }
        BlockFormat::Q4_K | BlockFormat::Q5_K => {
            let (scale, min) = scale_min_k4(g, &block[4..16]);
            same(
                half_at(block, 0) * f32::from(scale),
                -half_at(block, 2) * f32::from(min),
            )
        }
        BlockFormat::Q6_K => {
            let d = half_at(block, 208);
            let (half, gg) = (g / 4, g % 4);
            let scale = |s: usize| d * f32::from(block[192 + 8 * half + 2 * gg + s] as i8);
            let a = [scale(0), scale(1)];
            (a, [-32.0 * a[0], -32.0 * a[1]])
        }
    }
}

/// Group `g` of a block, decoded portably (as ggml's `dequantize_row_*` lays the values out).
fn decode_group(format: BlockFormat, block: &[u8], g: usize) -> Group {
    let (scale, offset) = group_affine(format, block, g);
    let mut codes = [0i8; GROUP];
    let nibbles = |qs: &[u8], high: bool, j: usize| if high { qs[j] >> 4 } else { qs[j] & 0x0f };
    for (j, code) in codes.iter_mut().enumerate() {
        let u: u8 = match format {
            BlockFormat::Q8_0 => block[2 + j],
            BlockFormat::Q4_0 => nibbles(&block[2..18], j >= 16, j % 16),
            BlockFormat::Q4_1 => nibbles(&block[4..20], j >= 16, j % 16),
            BlockFormat::Q5_0 => {
                let qh = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
                nibbles(&block[6..22], j >= 16, j % 16) | ((((qh >> j) & 1) as u8) << 4)
            }
            BlockFormat::Q4_K => nibbles(&block[16 + 32 * (g / 2)..], g % 2 == 1, j),
            BlockFormat::Q5_K => {
                let high = (block[16 + j] >> g) & 1;
                nibbles(&block[48 + 32 * (g / 2)..], g % 2 == 1, j) | (high << 4)
            }
            BlockFormat::Q6_K => {
                let (half, gg) = (g / 4, g % 4);
                let low = nibbles(&block[64 * half + 32 * (gg % 2)..], gg >= 2, j);
                let high = (block[128 + 32 * half + j] >> (2 * gg)) & 3;
                low | (high << 4)
            }
        };
        *code = u as i8;
    }
    Group { codes, scale, offset }
}

/// `row · x` portably: each group's integer sums, scaled once.
fn dot_portable(format: BlockFormat, row: &[u8], x: Input<'_>) -> f32 {
    let (groups, size) = (format.groups(), format.block_bytes());
    let mut sum = 0f32;
    for (g, ((codes, &dx), sums)) in x.codes.chunks_exact(GROUP).zip(x.scales).zip(x.sums).enumerate() {
        let group = decode_group(format, &row[g / groups * size..][..size], g % groups);
        let half = |h: usize| -> f32 {
            let pairs = group.codes[16 * h..16 * (h + 1)]
                .iter()
                .zip(&codes[16 * h..16 * (h + 1)]);
            pairs.map(|(&u, &q)| i32::from(u) * i32::from(q)).sum::<i32>() as f32
        };
        sum += dx * (group.scale[0] * half(0) + group.scale[1] * half(1))
            + (group.offset[0] * sums[0] + group.offset[1] * sums[1]);
    }
    sum
}

/// The x86 products, one module per instruction set: `avx2` multiplies bytes with `maddubs`
/// then `madd`, `vnni` with AVX-512 VNNI's `vpdpbusd` on 256-bit registers (AVX512VL), which
/// fuses the two and leaves twice the vector registers for the accumulators. Neither can
/// saturate here (a pair of products is at most 2 · 128 · 127 < 2^15), so both give the same
/// bits.
#[cfg(target_arch = "x86_64")]
macro_rules! block_products {
    ($module:ident, $features:literal, |$u:ident, $q:ident| $products:expr) => {
        mod $module {
            use std::arch::x86_64::*;

            use super::{BlockFormat, GROUP, Input, Q8Input, scale_min_k4};

            const Q8_0: u8 = 0;
            const Q4_0: u8 = 1;
            const Q4_1: u8 = 2;
            const Q5_0: u8 = 3;
            const Q4_K: u8 = 4;
            const Q5_K: u8 = 5;
            const Q6_K: u8 = 6;

            /// Rows against up to eight inputs: each group of weights is unpacked once into 32
            /// byte codes, then multiplied into every input's accumulator (the same operations,
            /// in the same order, for any number of inputs). The format and the number of
            /// inputs are constants of each instance, so that no branch on them is left in the
            /// loop.
            #[target_feature(enable = $features)]
            pub(super) fn rows_times(
                format: BlockFormat,
                rows: &[u8],
                row_bytes: usize,
                xs: &Q8Input,
                inputs: std::ops::Range<usize>,
                outs: &mut [f32],
            ) {
                macro_rules! by_count {
                    ($f:expr) => {
                        match inputs.len() {
                            8 => rows_times_n::<8, { $f }>(rows, row_bytes, xs, inputs.start, outs),
                            7 => rows_times_n::<7, { $f }>(rows, row_bytes, xs, inputs.start, outs),
                            6 => rows_times_n::<6, { $f }>(rows, row_bytes, xs, inputs.start, outs),
                            5 => rows_times_n::<5, { $f }>(rows, row_bytes, xs, inputs.start, outs),
                            4 => rows_times_n::<4, { $f }>(rows, row_bytes, xs, inputs.start, outs),
                            3 => rows_times_n::<3, { $f }>(rows, row_bytes, xs, inputs.start, outs),
                            2 => rows_times_n::<2, { $f }>(rows, row_bytes, xs, inputs.start, outs),
                            _ => rows_times_n::<1, { $f }>(rows, row_bytes, xs, inputs.start, outs),
                        }
                    };
                }
                match format {
                    BlockFormat::Q8_0 => by_count!(Q8_0),
                    BlockFormat::Q4_0 => by_count!(Q4_0),
                    BlockFormat::Q4_1 => by_count!(Q4_1),
                    BlockFormat::Q5_0 => by_count!(Q5_0),
                    BlockFormat::Q4_K => by_count!(Q4_K),
                    BlockFormat::Q5_K => by_count!(Q5_K),
                    BlockFormat::Q6_K => by_count!(Q6_K),
                }
            }

            /// Whether format `f`'s groups have no offset but a code offset, which `unpack`
            /// subtracts: its codes are then signed, and a product needs no sum of the
            /// input's codes.
            const fn signed(f: u8) -> bool {
                matches!(f, Q8_0 | Q4_0 | Q5_0 | Q6_K)
            }

            /// The block layout of format `F`: weights and bytes per block.
            const fn layout(f: u8) -> (usize, usize) {
                match f {
                    Q8_0 => (32, 34),
                    Q4_0 => (32, 18),
                    Q4_1 => (32, 20),
                    Q5_0 => (32, 22),
                    Q4_K => (256, 144),
                    Q5_K => (256, 176),
                    _ => (256, 210),
                }
            }

            /// The four-byte sums of `u · q` in each 32-bit lane (`u` unsigned, `q` signed).
            #[target_feature(enable = $features)]
            #[inline]
            fn products($u: __m256i, $q: __m256i) -> __m256i {
                $products
            }

            /// The row's groups are taken two at a time (two 32-weight blocks, or two groups of
            /// a K-quant block, whose group numbers are then constants of the unrolled loop),
            /// and each pair's sum (a product, then a fused multiply-add) is added to the
            /// input's accumulator, so that one addition per pair, not a fused multiply-add
            /// per group, is the loop-carried chain; an odd last block is added alone.
            #[target_feature(enable = $features)]
            fn rows_times_n<const N: usize, const F: u8>(
                rows: &[u8],
                row_bytes: usize,
                xs: &Q8Input,
                first: usize,
                outs: &mut [f32],
            ) {
                let (block_len, size) = layout(F);
                const {
                    assert!(
                        layout(F).0 == GROUP || layout(F).0 == 8 * GROUP,
                        "blocks of 1 or 8 groups"
                    )
                };
                let blocks = row_bytes / size;
                let inputs: [Input<'_>; N] = std::array::from_fn(|b| xs.input(first + b));
                assert!(inputs.iter().all(|x| x.codes.len() == blocks * block_len) && row_bytes % size == 0);
                assert!(first + N <= xs.batch && outs.len() / xs.batch >= rows.len() / row_bytes);
                for (row, outs) in rows
                    .chunks_exact(row_bytes)
                    .zip(outs.chunks_exact_mut(xs.batch))
                {
                    row_times_n::<N, F>(row, &inputs, blocks, &mut outs[first..first + N]);
                }
            }

            /// One row of `blocks` blocks against `inputs` (checked by the caller to hold a code
            /// per weight of the row).
            #[target_feature(enable = $features)]
            #[inline]
            fn row_times_n<const N: usize, const F: u8>(
                row: &[u8],
                inputs: &[Input<'_>; N],
                blocks: usize,
                outs: &mut [f32],
            ) {
                let (block_len, size) = layout(F);
                let groups = block_len / GROUP;
                let mut acc = [_mm256_setzero_ps(); N];
                let mut offsets = [0f32; N];
                // Group `$g` of block `$block` against every input (a macro, so that each use
                // is inlined): per input, its integer products as floats, their scale (lanes
                // 0-3 for the first 16 weights, 4-7 for the last 16) and its offset term.
                macro_rules! group {
                    ($block:expr, $g:expr) => {{
                        let (block, g) = ($block, $g);
                        let at = block * groups + g;
                        // SAFETY: checked above: `block` is a block of the row, `g` one of its
                        // groups, and `at` a group of every input.
                        unsafe {
                            let (codes, scale, offset) = unpack::<F>(row.as_ptr().add(block * size), g);
                            let mut scaled = [(_mm256_setzero_ps(), _mm256_setzero_ps()); N];
                            let mut offsets = [0f32; N];
                            for (b, x) in inputs.iter().enumerate() {
                                let q =
                                    _mm256_loadu_si256(x.codes.as_ptr().add(at * GROUP) as *const __m256i);
                                let (dx, s) = (*x.scales.get_unchecked(at), *x.sums.get_unchecked(at));
                                let sums = if signed(F) {
                                    // Signed codes: |u| times q with u's sign, as the products
                                    // take u unsigned.
                                    products(_mm256_sign_epi8(codes, codes), _mm256_sign_epi8(q, codes))
                                } else {
                                    products(codes, q)
                                };
                                scaled[b] = (
                                    _mm256_cvtepi32_ps(sums),
                                    _mm256_mul_ps(scale, _mm256_set1_ps(dx)),
                                );
                                if !signed(F) {
                                    offsets[b] = offset[0] * s[0] + offset[1] * s[1];
                                }
                            }
                            (scaled, offsets)
                        }
                    }};
                }
                macro_rules! pair {
                    (($block0:expr, $g0:expr), ($block1:expr, $g1:expr)) => {{
                        let (even, even_offsets) = group!($block0, $g0);
                        let (odd, odd_offsets) = group!($block1, $g1);
                        for b in 0..N {
                            let pair =
                                _mm256_fmadd_ps(odd[b].0, odd[b].1, _mm256_mul_ps(even[b].0, even[b].1));
                            acc[b] = _mm256_add_ps(acc[b], pair);
                            offsets[b] += even_offsets[b] + odd_offsets[b];
                        }
                    }};
                }
                if groups == 1 {
                    let mut block = 0;
                    while block + 2 <= blocks {
                        pair!((block, 0), (block + 1, 0));
                        block += 2;
                    }
                    if block < blocks {
                        let (last, last_offsets) = group!(block, 0);
                        for b in 0..N {
                            acc[b] = _mm256_fmadd_ps(last[b].0, last[b].1, acc[b]);
                            offsets[b] += last_offsets[b];
                        }
                    }
                } else {
                    for block in 0..blocks {
                        pair!((block, 0), (block, 1));
                        pair!((block, 2), (block, 3));
                        pair!((block, 4), (block, 5));
                        pair!((block, 6), (block, 7));
                    }
                }
                for ((out, sum), offset) in outs.iter_mut().zip(acc).zip(offsets) {
                    *out = horizontal_sum(sum) + offset;
                }
            }

            /// An f16 read from two bytes, widened with F16C.
            ///
            /// # Safety
            /// `p` points at two readable bytes.
            #[target_feature(enable = $features)]
            unsafe fn half_at(p: *const u8) -> f32 {
                // SAFETY: the caller's promise.
                let bits = unsafe { p.cast::<u16>().read_unaligned() };
                _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits))))
            }

            /// Group `g` of the block at `p` in format `F`: its 32 byte codes, its scale per
            /// weight (lanes 0-3 for the first 16 weights, 4-7 for the last 16) and its offset
            /// per half, as in `decode_group`; except that the [`signed`] formats' code offsets
            /// are subtracted from the codes, and their offsets left at zero.
            ///
            /// # Safety
            /// `p` points at one whole block of format `F`, and `g` is one of its groups.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn unpack<const F: u8>(p: *const u8, g: usize) -> (__m256i, __m256, [f32; 2]) {
                let low4 = _mm256_set1_epi8(0x0f);
                // SAFETY (every read): the offsets are within one block of format `F` (see its
                // layout in `decode_group`).
                unsafe {
                    let nibbles16 = |at: usize| {
                        let bytes = _mm_loadu_si128(p.add(at) as *const __m128i);
                        _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(bytes, 4), bytes), low4)
                    };
                    let nibbles32 = |at: usize, high: bool| {
                        let bytes = _mm256_loadu_si256(p.add(at) as *const __m256i);
                        let shifted = if high {
                            _mm256_srli_epi16(bytes, 4)
                        } else {
                            bytes
                        };
                        _mm256_and_si256(shifted, low4)
                    };
                    // Bits `shift..` of each of 32 bytes under `mask`, moved up to bit 4.
                    let bits32 = |at: usize, shift: usize, mask: i8| {
                        let bytes = _mm256_loadu_si256(p.add(at) as *const __m256i);
                        let shifted = _mm256_srl_epi16(bytes, _mm_cvtsi32_si128(shift as i32));
                        _mm256_slli_epi16(_mm256_and_si256(shifted, _mm256_set1_epi8(mask)), 4)
                    };
                    let same = |a: f32, b: f32| (_mm256_set1_ps(a), [b, b]);
                    match F {
                        Q8_0 => {
                            let (scale, offset) = same(half_at(p), 0.0);
                            (
                                _mm256_loadu_si256(p.add(2) as *const __m256i),
                                scale,
                                offset,
                            )
                        }
                        Q4_0 => {
                            let (scale, offset) = same(half_at(p), 0.0);
                            (
                                _mm256_sub_epi8(nibbles16(2), _mm256_set1_epi8(8)),
                                scale,
                                offset,
                            )
                        }
                        Q4_1 => {
                            let (scale, offset) = same(half_at(p), half_at(p.add(2)));
                            (nibbles16(4), scale, offset)
                        }
                        Q5_0 => {
                            let (scale, offset) = same(half_at(p), 0.0);
                            let qh = p.add(2).cast::<u32>().read_unaligned();
                            let codes = _mm256_or_si256(nibbles16(6), bits_from_u32(qh));
                            (_mm256_sub_epi8(codes, _mm256_set1_epi8(16)), scale, offset)
                        }
                        Q4_K | Q5_K => {
                            let scales = std::slice::from_raw_parts(p.add(4), 12);
                            let (sc, min) = scale_min_k4(g, scales);
                            let (d, dmin) = (half_at(p), half_at(p.add(2)));
                            let (scale, offset) = same(d * f32::from(sc), -dmin * f32::from(min));
                            let codes = if F == Q4_K {
                                nibbles32(16 + 32 * (g / 2), g % 2 == 1)
                            } else {
                                _mm256_or_si256(nibbles32(48 + 32 * (g / 2), g % 2 == 1), bits32(16, g, 1))
                            };
                            (codes, scale, offset)
                        }
                        _ => {
                            let d = half_at(p.add(208));
                            let (half, gg) = (g / 4, g % 4);
                            let sc = |s: usize| d * f32::from(*p.add(192 + 8 * half + 2 * gg + s) as i8);
                            let (a0, a1) = (sc(0), sc(1));
                            let low = nibbles32(64 * half + 32 * (gg % 2), gg >= 2);
                            let codes = _mm256_or_si256(low, bits32(128 + 32 * half, 2 * gg, 3));
                            let scale = _mm256_set_m128(_mm_set1_ps(a1), _mm_set1_ps(a0));
                            (
                                _mm256_sub_epi8(codes, _mm256_set1_epi8(32)),
                                scale,
                                [0.0; 2],
                            )
                        }
                    }
                }
            }

            /// Bit `j` of `bits` as 16 in byte `j` (Q5_0's fifth bits), by spreading each of the
            /// four bytes over eight lanes and testing one bit per lane.
            #[target_feature(enable = $features)]
            fn bits_from_u32(bits: u32) -> __m256i {
                let spread = _mm256_shuffle_epi8(
                    _mm256_set1_epi32(bits as i32),
                    _mm256_set_epi64x(
                        0x0303_0303_0303_0303,
                        0x0202_0202_0202_0202,
                        0x0101_0101_0101_0101,
                        0,
                    ),
                );
                let lane_bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
                let set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, lane_bit), lane_bit);
                _mm256_and_si256(set, _mm256_set1_epi8(16))
            }

            #[target_feature(enable = $features)]
            fn horizontal_sum(v: __m256) -> f32 {
                let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
                _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)))
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
block_products!(avx2, "avx2,fma,f16c", |u, q| _mm256_madd_epi16(
    _mm256_maddubs_epi16(u, q),
    _mm256_set1_epi16(1)
));
#[cfg(target_arch = "x86_64")]
block_products!(vnni, "avx2,fma,f16c,avx512vnni,avx512vl", |u, q| {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, q)
});

#[cfg(test)]
mod tests {
    use super::*;
    use distill_gguf::GgmlType;

    /// A deterministic stream of pseudo-random values.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self) -> u32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (self.0 >> 33) as u32
        }

        fn unit(&mut self) -> f32 {
            self.next() as f32 / (1u64 << 31) as f32 * 2.0 - 1.0
        }
    }

    fn ggml(format: BlockFormat) -> GgmlType {
        match format {
            BlockFormat::Q8_0 => GgmlType::Q8_0,
            BlockFormat::Q4_0 => GgmlType::Q4_0,
            BlockFormat::Q4_1 => GgmlType::Q4_1,
            BlockFormat::Q5_0 => GgmlType::Q5_0,
            BlockFormat::Q4_K => GgmlType::Q4_K,
            BlockFormat::Q5_K => GgmlType::Q5_K,
            BlockFormat::Q6_K => GgmlType::Q6_K,
        }
    }

    /// Random blocks: random code bytes, with every f16 field a finite scale of either sign.
    fn random_blocks(format: BlockFormat, blocks: usize, rng: &mut Lcg) -> Vec<u8> {
        let size = format.block_bytes();
        let mut bytes: Vec<u8> = (0..blocks * size).map(|_| rng.next() as u8).collect();
        let halves: &[usize] = match format {
            BlockFormat::Q4_1 | BlockFormat::Q4_K | BlockFormat::Q5_K => &[0, 2],
            BlockFormat::Q6_K => &[208],
            _ => &[0],
        };
        for block in bytes.chunks_exact_mut(size) {
            for &at in halves {
                let scale = f16::from_f32(rng.unit() * 0.05);
                block[at..at + 2].copy_from_slice(&scale.to_le_bytes());
            }
        }
        bytes
    }

    fn reference_rows(format: BlockFormat, bytes: &[u8], cols: usize) -> Vec<f32> {
        let mut out = vec![0f32; bytes.len() / format.row_bytes(cols).unwrap() * cols];
        distill_gguf::dequantize(ggml(format), bytes, &mut out).unwrap();
        out
    }

    /// Each format's products against the f32 dot products of the dequantized weights (ggml's
    /// reference dequantization, in distill-gguf) with the input: within float rounding of the
    /// exact product with the quantized input, and within half a step per input value of the
    /// product with the input itself. On AVX2 machines the portable path is checked too.
    #[test]
    fn every_format_multiplies_as_its_dequantized_weights() {
        let mut rng = Lcg(7);
        for format in BlockFormat::ALL {
            let cols = 2 * format.block_len().max(256);
            let rows = 40;
            let bytes = random_blocks(format, rows * cols / format.block_len(), &mut rng);
            let w = Blocks::new(format, cols, &bytes).unwrap();
            let reference = reference_rows(format, &bytes, cols);
            let batch = 3;
            let xs: Vec<f32> = (0..batch * cols).map(|_| rng.unit() * 2.0).collect();
            let mut q8 = Q8Input::default();
            q8.quantize(&xs, batch);
            let mut out = vec![0f32; rows * batch];
            matmat(w, &q8, &mut out);
            for b in 0..batch {
                let x = &xs[b * cols..(b + 1) * cols];
                let input = q8.input(b);
                let dequantized: Vec<f32> = input
                    .codes
                    .iter()
                    .enumerate()
                    .map(|(j, &c)| f32::from(c) * input.scales[j / GROUP])
                    .collect();
                for r in 0..rows {
                    let wr = &reference[r * cols..(r + 1) * cols];
                    let exact: f64 = wr
                        .iter()
                        .zip(&dequantized)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    let magnitude: f64 = wr
                        .iter()
                        .zip(&dequantized)
                        .map(|(&a, &b)| f64::from((a * b).abs()))
                        .sum();
                    let got = f64::from(out[r * batch + b]);
                    let portable = f64::from(dot_portable(
                        format,
                        &bytes[r * w.row_bytes()..][..w.row_bytes()],
                        input,
                    ));
                    for (what, value) in [("kernel", got), ("portable", portable)] {
                        assert!(
                            (value - exact).abs() <= 1e-5 * magnitude + 1e-6,
                            "{format:?} {what} row {r}: {value} vs {exact}"
                        );
                    }
                    let wide: f64 = wr.iter().zip(x).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
                    let bound: f64 = wr
                        .chunks(GROUP)
                        .zip(input.scales)
                        .map(|(w, &d)| w.iter().map(|v| f64::from(v.abs())).sum::<f64>() * f64::from(d) / 2.0)
                        .sum();
                    assert!(
                        (got - wide).abs() <= bound * 1.001 + 1e-5 * magnitude,
                        "{format:?} row {r}: {got} vs the f32 product {wide} (bound {bound})"
                    );
                }
            }
        }
    }

    /// The instruction sets this CPU runs.
    fn available() -> Vec<Isa> {
        let mut isas = vec![Isa::Portable];
        #[cfg(target_arch = "x86_64")]
        if crate::avx2_fma_f16c() {
            isas.push(Isa::Avx2);
            if Isa::detect() == Isa::Vnni {
                isas.push(Isa::Vnni);
            }
        }
        isas
    }

    /// AVX2's byte products and VNNI's sum the same integers and scale them in the same order,
    /// so they agree bit for bit, at every batch size.
    #[test]
    fn every_instruction_set_gives_the_same_bits() {
        let mut rng = Lcg(5);
        let isas: Vec<Isa> = available().into_iter().filter(|&i| i != Isa::Portable).collect();
        eprintln!("instruction sets checked: {isas:?}");
        for format in BlockFormat::ALL {
            let cols = 3 * format.block_len().max(96);
            let bytes = random_blocks(format, 5 * cols / format.block_len(), &mut rng);
            let w = Blocks::new(format, cols, &bytes).unwrap();
            let xs: Vec<f32> = (0..8 * cols).map(|_| rng.unit()).collect();
            let mut q8 = Q8Input::default();
            q8.quantize(&xs, 8);
            for batch in [1, 3, 8] {
                let results: Vec<Vec<u32>> = isas
                    .iter()
                    .map(|&isa| {
                        let mut outs = vec![0f32; w.rows() * 8];
                        rows_times(isa, format, &bytes, w.row_bytes(), &q8, 8 - batch..8, &mut outs);
                        outs.iter().map(|v| v.to_bits()).collect()
                    })
                    .collect();
                assert!(
                    results.windows(2).all(|p| p[0] == p[1]),
                    "{format:?} batch {batch}: {results:?}"
                );
            }
        }
    }

    #[test]
    fn an_input_gets_the_same_bits_in_any_batch() {
        let mut rng = Lcg(11);
        for format in BlockFormat::ALL {
            let cols = format.block_len().max(256);
            let rows = 33;
            let bytes = random_blocks(format, rows * cols / format.block_len(), &mut rng);
            let w = Blocks::new(format, cols, &bytes).unwrap();
            let xs: Vec<f32> = (0..11 * cols).map(|_| rng.unit()).collect();
            let mut all = Q8Input::default();
            all.quantize(&xs, 11);
            let mut together = vec![0f32; rows * 11];
            matmat(w, &all, &mut together);
            for b in 0..11 {
                let mut one = Q8Input::default();
                one.quantize(&xs[b * cols..(b + 1) * cols], 1);
                let mut alone = vec![0f32; rows];
                matvec(w, &one, &mut alone);
                for r in 0..rows {
                    assert_eq!(
                        alone[r].to_bits(),
                        together[r * 11 + b].to_bits(),
                        "{format:?} input {b} row {r}"
                    );
                }
            }
        }
    }

    #[test]
    fn rows_dequantize_as_ggml_does() {
        let mut rng = Lcg(3);
        for format in BlockFormat::ALL {
            let cols = format.block_len() * 2;
            let bytes = random_blocks(format, 6, &mut rng);
            let w = Blocks::new(format, cols, &bytes).unwrap();
            let reference = reference_rows(format, &bytes, cols);
            let mut row = vec![0f32; cols];
            for r in 0..w.rows() {
                w.dequantize_row(r, &mut row);
                for (j, (&a, &b)) in row.iter().zip(&reference[r * cols..]).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 * b.abs().max(1e-3),
                        "{format:?} row {r} value {j}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn shapes_that_are_not_whole_blocks_are_refused() {
        assert!(Blocks::new(BlockFormat::Q4_K, 128, &[0; 144]).is_none());
        assert!(Blocks::new(BlockFormat::Q8_0, 32, &[0; 35]).is_none());
        assert!(Blocks::new(BlockFormat::Q8_0, 0, &[]).is_none());
        assert_eq!(Blocks::new(BlockFormat::Q8_0, 64, &[0; 136]).unwrap().rows(), 2);
    }
}
