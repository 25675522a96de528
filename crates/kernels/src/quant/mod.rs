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

use rayon::prelude::*;

use portable::{decode_group, dot_portable};

mod portable;
#[cfg(target_arch = "x86_64")]
mod x86;

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
        Isa::Vnni => return unsafe { x86::vnni::rows_times(format, rows, row_bytes, xs, inputs, outs) },
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => return unsafe { x86::avx2::rows_times(format, rows, row_bytes, xs, inputs, outs) },
        Isa::Portable => {}
    }
    for (row, outs) in rows.chunks_exact(row_bytes).zip(outs.chunks_exact_mut(xs.batch)) {
        for b in inputs.clone() {
            outs[b] = dot_portable(format, row, xs.input(b));
        }
    }
}

#[cfg(test)]
mod tests;
