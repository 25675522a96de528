//! The portable products: each group of a block decoded as ggml's `dequantize_row_*` lays the
//! values out, then multiplied in plain Rust. The reference the x86 products are checked
//! against, and the path on other CPUs.

use half::f16;

use super::{BlockFormat, GROUP, Input};

/// A group of 32 weights decoded: `w[j] = scale[j / 16] · codes[j] + offset[j / 16]`.
pub(super) struct Group {
    pub(super) codes: [i8; GROUP],
    pub(super) scale: [f32; 2],
    pub(super) offset: [f32; 2],
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// The 6-bit scale and offset of group `j` from a K-quant's 12 packed scale bytes.
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
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
pub(super) fn decode_group(format: BlockFormat, block: &[u8], g: usize) -> Group {
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
pub(super) fn dot_portable(format: BlockFormat, row: &[u8], x: Input<'_>) -> f32 {
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
