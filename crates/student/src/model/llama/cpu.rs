//! A Llama held for inference on the CPU only: its weights in plain memory in the format they
//! are stored in (f32, f16, bf16 or ggml's quantized blocks), read by the model's own kernels
//! and never by libtorch, so that a quantized model takes about its file's size in memory.
//! The prompt's prefill runs on the same kernels as decoding, a chunk of tokens per pass.

use std::borrow::Cow;
use std::collections::HashMap;

use distill_kernels::Rows;
use distill_kernels::quant::{BlockFormat, Blocks};
use half::{bf16, f16};
use tch::{Device, Kind, Tensor};

use super::LlamaConfig;
use super::decode::{Layer, LlamaDecoder, Weights};
use crate::model::decode::{Linear, Matrix, Stacked};
use crate::model::{ForwardInput, KvCache};

/// A weight matrix's elements, in the format they are kept in.
#[derive(Debug, Clone)]
pub enum Elements {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// IEEE half precision.
    F16(Vec<f16>),
    /// bfloat16.
    Bf16(Vec<bf16>),
    /// Rows of ggml blocks.
    Blocks(BlockFormat, Vec<u8>),
}

/// A row-major `[rows, cols]` weight matrix and its optional bias.
#[derive(Debug, Clone)]
pub struct StoredMatrix {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// The weights, row after row.
    pub elements: Elements,
    /// One per row, if the layer has one.
    pub bias: Option<Vec<f32>>,
}

impl StoredMatrix {
    /// A matrix, `None` unless the elements hold exactly `rows × cols` weights.
    pub fn new(rows: usize, cols: usize, elements: Elements) -> Option<Self> {
        let count = rows.checked_mul(cols)?;
        let fits = match &elements {
            Elements::F32(v) => v.len() == count,
            Elements::F16(v) => v.len() == count,
            Elements::Bf16(v) => v.len() == count,
            Elements::Blocks(format, bytes) => {
                format.row_bytes(cols).and_then(|r| r.checked_mul(rows)) == Some(bytes.len())
            }
        };
        (fits && rows > 0 && cols > 0).then_some(Self {
            rows,
            cols,
            elements,
            bias: None,
        })
    }

    /// The matrix as the decoder reads it.
    fn matrix(&self) -> Matrix<'_> {
        match &self.elements {
            Elements::F32(v) => Rows::F32(v).into(),
            Elements::F16(v) => Rows::F16(v).into(),
            Elements::Bf16(v) => Rows::Bf16(v).into(),
            Elements::Blocks(format, bytes) => Blocks::new(*format, self.cols, bytes)
                .expect("checked when built")
                .into(),
        }
    }

    fn linear(&self) -> Linear<'_> {
        Linear {
            weight: self.matrix(),
            bias: self.bias.as_deref().map(Cow::Borrowed),
            rows: self.rows,
        }
    }

    /// Bytes the weights take.
    pub fn byte_len(&self) -> usize {
        match &self.elements {
            Elements::F32(v) => v.len() * 4,
            Elements::F16(v) => v.len() * 2,
            Elements::Bf16(v) => v.len() * 2,
            Elements::Blocks(_, bytes) => bytes.len(),
        }
    }

    /// The format's name, as GGUF spells it (`F32`, `Q8_0`, …).
    pub fn format_name(&self) -> String {
        match &self.elements {
            Elements::F32(_) => "F32".into(),
            Elements::F16(_) => "F16".into(),
            Elements::Bf16(_) => "BF16".into(),
            Elements::Blocks(format, _) => format!("{format:?}"),
        }
    }

    /// Stacks matrices that read the same input into one (rows after rows, biases likewise)
    /// when they share a format; returns them as they are otherwise.
    fn fuse(parts: Vec<StoredMatrix>) -> Vec<StoredMatrix> {
        let same = parts.windows(2).all(|w| {
            w[0].cols == w[1].cols
                && w[0].bias.is_some() == w[1].bias.is_some()
                && std::mem::discriminant(&w[0].elements) == std::mem::discriminant(&w[1].elements)
                && match (&w[0].elements, &w[1].elements) {
                    (Elements::Blocks(a, _), Elements::Blocks(b, _)) => a == b,
                    _ => true,
                }
        });
        if !same || parts.len() < 2 {
            return parts;
        }
        let mut parts = parts.into_iter();
        let mut fused = parts.next().expect("two parts or more");
        for part in parts {
            fused.rows += part.rows;
            match (&mut fused.elements, part.elements) {
                (Elements::F32(a), Elements::F32(b)) => a.extend(b),
                (Elements::F16(a), Elements::F16(b)) => a.extend(b),
                (Elements::Bf16(a), Elements::Bf16(b)) => a.extend(b),
                (Elements::Blocks(_, a), Elements::Blocks(_, b)) => a.extend(b),
                _ => unreachable!("the formats were checked to agree"),
            }
            if let (Some(a), Some(b)) = (&mut fused.bias, part.bias) {
                a.extend(b);
            }
        }
        vec![fused]
    }
}

/// One named weight of a checkpoint: a vector (norms, biases) or a matrix.
#[derive(Debug)]
pub enum NamedWeight {
    /// A 1-D weight, in f32.
    Vector(Vec<f32>),
    /// A 2-D weight.
    Matrix(StoredMatrix),
}

#[derive(Debug)]
struct CpuBlock {
    input_norm: Vec<f32>,
    qkv: Vec<StoredMatrix>,
    o: StoredMatrix,
    post_norm: Vec<f32>,
    gate_up: Vec<StoredMatrix>,
    down: StoredMatrix,
}

/// A Llama for CPU inference only (see the module docs): built from named weights, it
/// prefills and decodes on `distill-kernels` and cannot be trained.
#[derive(Debug)]
pub struct CpuLlama {
    config: LlamaConfig,
    embed: StoredMatrix,
    layers: Vec<CpuBlock>,
    norm: Vec<f32>,
    /// `None` when the head is tied to the embeddings.
    head: Option<StoredMatrix>,
}

impl CpuLlama {
    /// Builds the model from its weights under their HF names (`model.layers.0.self_attn.q_proj.
    /// weight`, …), checking that each is present once with the shape `config` implies.
    pub fn from_weights(
        config: LlamaConfig,
        mut weights: HashMap<String, NamedWeight>,
    ) -> Result<Self, String> {
        config.validate()?;
        let size = |v: i64| usize::try_from(v).map_err(|_| format!("negative size {v}"));
        let (h, i, vocab) = (
            size(config.hidden_size)?,
            size(config.intermediate_size)?,
            size(config.vocab_size)?,
        );
        let (q, kv) = (
            size(config.num_attention_heads * config.head_width())?,
            size(config.kv_heads() * config.head_width())?,
        );
        let mut take = |name: &str| {
            weights
                .remove(name)
                .ok_or_else(|| format!("missing tensor `{name}`"))
        };
        let mut vector = |name: String, len: usize| match take(&name)? {
            NamedWeight::Vector(v) if v.len() == len => Ok(v),
            _ => Err(format!("`{name}` is not a vector of {len}")),
        };
        let mut vectors: Vec<(String, usize)> = vec![("model.norm.weight".into(), h)];
        for layer in 0..config.num_hidden_layers {
            for norm in ["input_layernorm", "post_attention_layernorm"] {
                vectors.push((format!("model.layers.{layer}.{norm}.weight"), h));
            }
        }
        let mut norms: HashMap<String, Vec<f32>> = HashMap::new();
        for (name, len) in vectors {
            let v = vector(name.clone(), len)?;
            norms.insert(name, v);
        }
        let mut matrix = |name: &str, rows: usize, cols: usize, bias: bool| -> Result<StoredMatrix, String> {
            let mut m = match weights.remove(&format!("{name}.weight")) {
                Some(NamedWeight::Matrix(m)) if (m.rows, m.cols) == (rows, cols) => m,
                Some(_) => return Err(format!("`{name}.weight` is not a [{rows}, {cols}] matrix")),
                None => return Err(format!("missing tensor `{name}.weight`")),
            };
            if bias {
                m.bias = match weights.remove(&format!("{name}.bias")) {
                    Some(NamedWeight::Vector(b)) if b.len() == rows => Some(b),
                    _ => return Err(format!("`{name}.bias` is missing or not {rows} long")),
                };
            }
            Ok(m)
        };
        let embed = matrix("model.embed_tokens", vocab, h, false)?;
        let head = if config.tie_word_embeddings {
            None
        } else {
            Some(matrix("lm_head", vocab, h, false)?)
        };
        let (attn_bias, mlp_bias) = (config.attention_bias, config.mlp_bias);
        let mut layers = Vec::new();
        for layer in 0..config.num_hidden_layers {
            let at = |part: &str| format!("model.layers.{layer}.{part}");
            let qkv = vec![
                matrix(&at("self_attn.q_proj"), q, h, attn_bias)?,
                matrix(&at("self_attn.k_proj"), kv, h, attn_bias)?,
                matrix(&at("self_attn.v_proj"), kv, h, attn_bias)?,
            ];
            let gate_up = vec![
                matrix(&at("mlp.gate_proj"), i, h, mlp_bias)?,
                matrix(&at("mlp.up_proj"), i, h, mlp_bias)?,
            ];
            layers.push(CpuBlock {
                input_norm: norms
                    .remove(&at("input_layernorm.weight"))
                    .expect("collected above"),
                qkv: StoredMatrix::fuse(qkv),
                o: matrix(&at("self_attn.o_proj"), h, q, attn_bias)?,
                post_norm: norms
                    .remove(&at("post_attention_layernorm.weight"))
                    .expect("collected above"),
                gate_up: StoredMatrix::fuse(gate_up),
                down: matrix(&at("mlp.down_proj"), h, i, mlp_bias)?,
            });
        }
        if let Some(name) = weights.keys().min() {
            return Err(format!("unexpected tensor `{name}`"));
        }
        Ok(Self {
            norm: norms.remove("model.norm.weight").expect("collected above"),
            config,
            embed,
            layers,
            head,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    fn matrices(&self) -> impl Iterator<Item = &StoredMatrix> {
        let layers = self.layers.iter().flat_map(|l| {
            l.qkv
                .iter()
                .chain(std::iter::once(&l.o))
                .chain(&l.gate_up)
                .chain(std::iter::once(&l.down))
        });
        std::iter::once(&self.embed).chain(&self.head).chain(layers)
    }

    /// Parameters, as a checkpoint counts them (the tied head once).
    pub fn parameter_count(&self) -> u64 {
        let vectors = self.norm.len()
            + self
                .layers
                .iter()
                .map(|l| l.input_norm.len() + l.post_norm.len())
                .sum::<usize>();
        let matrices: usize = self
            .matrices()
            .map(|m| m.rows * m.cols + m.bias.as_ref().map_or(0, Vec::len))
            .sum();
        (vectors + matrices) as u64
    }

    /// Bytes the weights take in memory.
    pub fn weight_bytes(&self) -> u64 {
        let vectors = 4
            * (self.norm.len()
                + self
                    .layers
                    .iter()
                    .map(|l| l.input_norm.len() + l.post_norm.len())
                    .sum::<usize>());
        (vectors + self.matrices().map(StoredMatrix::byte_len).sum::<usize>()) as u64
    }

    /// How many weight matrices each format holds, as `("Q4_1", 210)` pairs, most first.
    pub fn formats(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for m in self.matrices() {
            *counts.entry(m.format_name()).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        counts
    }

    fn weights(&self) -> Weights<'_> {
        let layers = self
            .layers
            .iter()
            .map(|l| Layer {
                input_norm: Cow::Borrowed(&l.input_norm),
                qkv: Stacked(l.qkv.iter().map(StoredMatrix::linear).collect()),
                o: l.o.linear(),
                post_norm: Cow::Borrowed(&l.post_norm),
                gate_up: Stacked(l.gate_up.iter().map(StoredMatrix::linear).collect()),
                down: l.down.linear(),
            })
            .collect();
        Weights {
            embed: self.embed.matrix(),
            layers,
            norm: Cow::Borrowed(&self.norm),
            head: self.head.as_ref().unwrap_or(&self.embed).linear(),
        }
    }

    /// A decoder continuing the left-padded sequences held in `cache` (`lens[b]` real tokens in
    /// row `b`); `new_tokens` is how many more each may get.
    pub(crate) fn decoder(
        &self,
        cache: &KvCache,
        lens: &[usize],
        new_tokens: usize,
    ) -> Option<LlamaDecoder<'_>> {
        LlamaDecoder::with_weights(&self.config, self.weights(), cache, lens, new_tokens)
    }

    /// Logits `[batch, seq, vocab]` for every position, as [`super::Llama::forward`] gives
    /// them, computed on the model's kernels: each row's real tokens (the mask's ones) are
    /// prefilled after its cached ones, and padded positions get zero logits. Appends to
    /// `cache` when given.
    ///
    /// # Panics
    /// If the inputs are not `[batch, seq]` i64 ids with a `[batch, past + seq]` mask, or a
    /// token is outside the vocabulary.
    pub fn forward(&self, input: &ForwardInput<'_>, cache: Option<&mut KvCache>) -> Tensor {
        self.prefill(input, cache, true)
    }

    /// Logits `[batch, vocab]` after each row's last token, as [`Self::forward`]'s last column
    /// (a padded row, one without tokens, gets zeros), computing the output head for that
    /// position only.
    pub fn forward_last(&self, input: &ForwardInput<'_>, cache: Option<&mut KvCache>) -> Tensor {
        self.prefill(input, cache, false)
    }

    /// [`Self::forward`] (`every`) or [`Self::forward_last`].
    fn prefill(&self, input: &ForwardInput<'_>, cache: Option<&mut KvCache>, every: bool) -> Tensor {
        let (batch, seq) = input.input_ids.size2().expect("input_ids is [batch, seq]");
        let (batch, seq) = (batch as usize, seq as usize);
        let ids = Vec::<i64>::try_from(input.input_ids.to_kind(Kind::Int64).flatten(0, -1)).expect("i64 ids");
        let empty = KvCache::new(self.layers.len());
        let past = cache.as_ref().map_or(0, |c| c.len()) as usize;
        let mask: Option<Vec<i64>> = input
            .attention_mask
            .map(|m| Vec::<i64>::try_from(m.to_kind(Kind::Int64).flatten(0, -1)).expect("an i64 mask"));
        let real = |b: usize, j: usize| mask.as_ref().is_none_or(|m| m[b * (past + seq) + j] != 0);
        let lens: Vec<usize> = (0..batch)
            .map(|b| (0..past).filter(|&j| real(b, j)).count())
            .collect();
        let mut decoder = self
            .decoder(cache.as_deref().unwrap_or(&empty), &lens, seq)
            .expect("a CPU model's own weights decode");
        let vocab = self.config.vocab_size as usize;
        let width = if every { seq } else { 1 };
        let mut logits = vec![0f32; batch * width * vocab];
        for b in 0..batch {
            let positions: Vec<usize> = (0..seq).filter(|&j| real(b, past + j)).collect();
            let tokens: Vec<i64> = positions.iter().map(|&j| ids[b * seq + j]).collect();
            let rows = decoder.extend(b, &tokens, every);
            // Left padding: a row's last token is in the last column, if it has any.
            let columns = match (every, positions.is_empty()) {
                (true, _) => positions,
                (false, false) => vec![0],
                (false, true) => vec![],
            };
            for (j, row) in columns.into_iter().zip(rows.chunks_exact(vocab)) {
                let at = (b * width + j) * vocab;
                logits[at..at + vocab].copy_from_slice(row);
            }
        }
        if let Some(cache) = cache {
            let width = past + seq;
            let rows: Vec<Vec<(Tensor, Tensor)>> = (0..batch)
                .map(|b| {
                    let len = lens[b] + (0..seq).filter(|&j| real(b, past + j)).count();
                    decoder.export(b, width - len)
                })
                .collect();
            cache.replace(rows, width as i64);
        }
        let logits = Tensor::from_slice(&logits);
        if every {
            logits.view([batch as i64, seq as i64, vocab as i64])
        } else {
            logits.view([batch as i64, vocab as i64])
        }
    }

    /// The device: always the CPU.
    pub fn device(&self) -> Device {
        Device::Cpu
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tch::{Kind, Tensor};

    use crate::checkpoint::LoadedModel;
    use crate::model::{ForwardInput, KvCache, Precision};

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/model")
            .join(name)
    }

    /// The largest difference between two models' logits over a left-padded batch prefilled
    /// with a cache (a prompt longer than a prefill chunk included), then over decode steps
    /// from that cache (libtorch's for `reference`, the CPU decoder's for `ours`).
    fn largest_difference(ours: &LoadedModel, reference: &LoadedModel) -> (f64, f64) {
        let long: Vec<i64> = (0..40).map(|i| (i * 7 + 3) % 100).collect();
        let mut ids = long.clone();
        ids.extend([
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0, 0, 0, 0, 5, 17, 42, 8,
        ]);
        let mut mask = vec![1i64; 40];
        mask.extend((0..40).map(|i| i64::from(i >= 36)));
        let ids = Tensor::from_slice(&ids).reshape([2, 40]);
        let mut mask = Tensor::from_slice(&mask).reshape([2, 40]);
        let input = ForwardInput {
            input_ids: &ids,
            attention_mask: Some(&mask),
        };
        let (mut ours_cache, mut reference_cache) = (KvCache::new(2), KvCache::new(2));
        let got = ours.model.forward(&input, Some(&mut ours_cache));
        let want = reference.model.forward(&input, Some(&mut reference_cache));
        let real = mask.to_kind(Kind::Float).unsqueeze(-1);
        let scale = (&want * &real).abs().max().double_value(&[]);
        let prefill = ((got - &want) * &real).abs().max().double_value(&[]);
        let mut decoder = ours
            .model
            .cpu_decoder(&ours_cache, &[40, 4], 8)
            .expect("a CPU decoder");
        let mut decode: f64 = 0.0;
        for tokens in [[90i64, 3], [64, 1], [12, 7]] {
            let got = Tensor::from_slice(decoder.step(&tokens));
            mask = Tensor::cat(&[&mask, &mask.ones_like().narrow(1, 0, 1)], 1);
            let ids = Tensor::from_slice(&tokens).reshape([2, 1]);
            let input = ForwardInput {
                input_ids: &ids,
                attention_mask: Some(&mask),
            };
            let want = reference
                .model
                .forward(&input, Some(&mut reference_cache))
                .flatten(0, -1);
            decode = decode.max((got - want).abs().max().double_value(&[]));
        }
        (prefill.max(decode), scale)
    }

    #[test]
    fn f32_weights_prefill_and_decode_as_libtorch() {
        let _guard = tch::no_grad_guard();
        for name in ["tiny_llama_gqa", "tiny_llama_bias"] {
            let reference = LoadedModel::load(fixture(name), tch::Device::Cpu).unwrap();
            let ours = LoadedModel::load(fixture(name), tch::Device::Cpu)
                .unwrap()
                .into_cpu_llama(false)
                .unwrap();
            let (diff, _) = largest_difference(&ours, &reference);
            assert!(diff <= 1e-5, "{name}: logits differ by {diff}");
        }
    }

    /// A prefill that needs only the last logits (generation's) computes the head for one
    /// position per row: the same logits as the full forward's last column, and the same cache.
    #[test]
    fn the_last_position_alone_matches_the_full_forward() {
        let _guard = tch::no_grad_guard();
        let model = LoadedModel::load(fixture("tiny_llama_gqa"), tch::Device::Cpu)
            .unwrap()
            .into_cpu_llama(true)
            .unwrap();
        // Row 0: 40 tokens (two prefill chunks); row 1: 4 tokens after 36 of padding.
        let ids: Vec<i64> = (0..80).map(|i| (i * 11 + 5) % 100).collect();
        let ids = Tensor::from_slice(&ids).reshape([2, 40]);
        let mask: Vec<i64> = (0..80).map(|i| i64::from(!(40..76).contains(&i))).collect();
        let mask = Tensor::from_slice(&mask).reshape([2, 40]);
        let input = ForwardInput {
            input_ids: &ids,
            attention_mask: Some(&mask),
        };
        let (mut full_cache, mut last_cache) = (KvCache::new(2), KvCache::new(2));
        let full = model.model.forward(&input, Some(&mut full_cache)).select(1, -1);
        let last = model.model.forward_last(&input, Some(&mut last_cache));
        assert_eq!(last.size(), full.size());
        let diff = (&last - &full).abs().max().double_value(&[]);
        assert!(diff <= 1e-5, "last logits differ by {diff}");
        assert_eq!(full_cache.len(), last_cache.len());
        for (a, b) in full_cache.layers.iter().zip(&last_cache.layers) {
            assert!(a.0.equal(&b.0) && a.1.equal(&b.1), "the caches differ");
        }
    }

    /// Q8_0 weights and inputs: within 0.5% of the largest f32 logit (measured: 0.06%).
    #[test]
    fn q8_0_weights_stay_close_to_f32() {
        let _guard = tch::no_grad_guard();
        for name in ["tiny_llama_gqa", "tiny_llama_bias"] {
            let mut reference = LoadedModel::load(fixture(name), tch::Device::Cpu).unwrap();
            reference.prepare_for_generation(Precision::F32);
            let ours = LoadedModel::load(fixture(name), tch::Device::Cpu)
                .unwrap()
                .into_cpu_llama(true)
                .unwrap();
            let formats = match &ours.model {
                crate::CausalLm::CpuLlama(m) => m.formats(),
                _ => unreachable!(),
            };
            assert!(formats.iter().any(|(f, _)| f == "Q8_0"), "{formats:?}");
            let (diff, scale) = largest_difference(&ours, &reference);
            eprintln!("{name}: Q8_0 logits within {diff} of f32 (largest {scale})");
            assert!(
                diff <= 0.005 * scale,
                "{name}: Q8_0 logits differ by {diff} (largest {scale})"
            );
        }
    }
}
