//! The block products against ggml's reference dequantization, and against each other.

use half::f16;

use super::portable::dot_portable;
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
