//! The x86 products, one module per instruction set: `avx2` multiplies bytes with `maddubs`
//! then `madd`, `vnni` with AVX-512 VNNI's `vpdpbusd` on 256-bit registers (AVX512VL), which
//! fuses the two and leaves twice the vector registers for the accumulators. Neither can
//! saturate here (a pair of products is at most 2 · 128 · 127 < 2^15), so both give the same
//! bits.

use super::portable::scale_min_k4;
use super::{BlockFormat, GROUP, Input, Q8Input};

macro_rules! block_products {
    ($module:ident, $features:literal, |$u:ident, $q:ident| $products:expr) => {
        pub(super) mod $module {
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
            pub(in crate::quant) fn rows_times(
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

block_products!(avx2, "avx2,fma,f16c", |u, q| _mm256_madd_epi16(
    _mm256_maddubs_epi16(u, q),
    _mm256_set1_epi16(1)
));
block_products!(vnni, "avx2,fma,f16c,avx512vnni,avx512vl", |u, q| {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), u, q)
});
