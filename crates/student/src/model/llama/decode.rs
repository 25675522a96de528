//! One decode step of a Llama on the CPU (see `model::decode`), and the prefill of a
//! [`CpuLlama`](super::CpuLlama), whose weights only these kernels read.

use std::borrow::Cow;

use tch::{Tensor, nn};

use super::{Activation, Attention, Llama, LlamaConfig, Mlp};
use crate::model::KvCache;
use crate::model::decode::{
    BatchProducts, Linear, Matrix, RowCache, Sequences, Stacked, StepRows, attend_rows, copy_row, f32_vector,
    weight_elements,
};
use distill_kernels::{add_assign, rms_norm, rotate_heads, silu_mul};

/// A linear layer with HF's `[out, in]` weight.
fn linear(layer: &nn::Linear) -> Option<Linear<'_>> {
    Linear::new(weight_elements(&layer.ws)?, layer.ws.size()[0], layer.bs.as_ref())
}

/// One fused matrix after [`Llama::fuse_projections`], the separate layers before.
fn stacked<'m>(fused: &'m Option<(Tensor, Option<Tensor>)>, parts: &[&'m nn::Linear]) -> Option<Stacked<'m>> {
    match fused {
        Some((weight, bias)) => Some(Stacked(vec![Linear::new(
            weight_elements(weight)?,
            weight.size()[0],
            bias.as_ref(),
        )?])),
        None => parts
            .iter()
            .map(|p| linear(p))
            .collect::<Option<_>>()
            .map(Stacked),
    }
}

/// One block's weights, as the decoder reads them.
pub(in crate::model) struct Layer<'m> {
    pub(in crate::model) input_norm: Cow<'m, [f32]>,
    pub(in crate::model) qkv: Stacked<'m>,
    pub(in crate::model) o: Linear<'m>,
    pub(in crate::model) post_norm: Cow<'m, [f32]>,
    pub(in crate::model) gate_up: Stacked<'m>,
    pub(in crate::model) down: Linear<'m>,
}

impl<'m> Layer<'m> {
    fn new(block: &'m super::Block) -> Option<Self> {
        let Attention {
            q_proj,
            k_proj,
            v_proj,
            o_proj,
            qkv,
            ..
        } = &block.self_attn;
        let Mlp {
            gate_proj,
            up_proj,
            down_proj,
            gate_up,
            activation,
        } = &block.mlp;
        // The decoder's kernels compute SwiGLU.
        if *activation != Activation::Silu {
            return None;
        }
        Some(Self {
            input_norm: f32_vector(&block.input_layernorm.weight)?,
            qkv: stacked(qkv, &[q_proj, k_proj, v_proj])?,
            o: linear(o_proj)?,
            post_norm: f32_vector(&block.post_attention_layernorm.weight)?,
            gate_up: stacked(gate_up, &[gate_proj, up_proj])?,
            down: linear(down_proj)?,
        })
    }
}

/// The weights a decoder reads, borrowed from a model.
pub(in crate::model) struct Weights<'m> {
    pub(in crate::model) embed: Matrix<'m>,
    pub(in crate::model) layers: Vec<Layer<'m>>,
    pub(in crate::model) norm: Cow<'m, [f32]>,
    pub(in crate::model) head: Linear<'m>,
}

/// Shapes of the model, as element counts.
#[derive(Clone, Copy)]
struct Dims {
    hidden: usize,
    intermediate: usize,
    vocab: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    eps: f32,
}

impl Dims {
    fn new(c: &LlamaConfig) -> Option<Self> {
        Some(Self {
            hidden: usize::try_from(c.hidden_size).ok()?,
            intermediate: usize::try_from(c.intermediate_size).ok()?,
            vocab: usize::try_from(c.vocab_size).ok()?,
            heads: usize::try_from(c.num_attention_heads).ok()?,
            kv_heads: usize::try_from(c.kv_heads()).ok()?,
            head_dim: usize::try_from(c.head_width()).ok()?,
            eps: c.rms_norm_eps as f32,
        })
    }
}

/// Buffers one pass writes, allocated once: a row per token of the pass.
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attention: Vec<f32>,
    projected: Vec<f32>,
    gate_up: Vec<f32>,
    activated: Vec<f32>,
    scores: Vec<f32>,
    cos: Vec<f32>,
    sin: Vec<f32>,
    logits: Vec<f32>,
    products: BatchProducts,
}

impl Scratch {
    /// Sizes every per-row buffer for `n` rows, and the logits for `head.rows(n)` of them.
    fn fit(&mut self, d: Dims, n: usize, head: Head) {
        let widths = [
            (&mut self.x, d.hidden),
            (&mut self.normed, d.hidden),
            (&mut self.qkv, (d.heads + 2 * d.kv_heads) * d.head_dim),
            (&mut self.attention, d.heads * d.head_dim),
            (&mut self.projected, d.hidden),
            (&mut self.gate_up, 2 * d.intermediate),
            (&mut self.activated, d.intermediate),
            (&mut self.cos, d.head_dim / 2),
            (&mut self.sin, d.head_dim / 2),
        ];
        for (buffer, width) in widths {
            buffer.resize(n * width, 0.0);
        }
        self.logits.resize(head.rows(n).len() * d.vocab, 0.0);
    }
}

/// The rows of a pass that the output head is applied to: a prefill needs the logits after
/// its last token only (the head is the largest matrix, and a chunk's logits are megabytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Head {
    /// Every row.
    Every,
    /// The last row.
    Last,
    /// No row (a prefill chunk before the last).
    None,
}

impl Head {
    /// The rows of `n` that get logits.
    fn rows(self, n: usize) -> std::ops::Range<usize> {
        match self {
            Head::Every => 0..n,
            Head::Last => n.saturating_sub(1)..n,
            Head::None => n..n,
        }
    }
}

/// Prompt tokens per prefill pass: each weight row is read once for all of them.
const PREFILL_CHUNK: usize = 32;

/// Decodes sequences of a [`Llama`] or a [`CpuLlama`](super::CpuLlama) on the CPU: a step
/// takes the newest token of each and gives the logits of the next ones.
pub(crate) struct LlamaDecoder<'m> {
    dims: Dims,
    weights: Weights<'m>,
    inv_freq: Vec<f32>,
    /// Cached positions are `kv_heads · head_dim` floats wide.
    sequences: Sequences,
    scratch: Scratch,
}

impl<'m> LlamaDecoder<'m> {
    /// A decoder continuing the left-padded sequences whose prefixes `cache` holds (`lens[b]`
    /// real tokens in row `b`), or `None` when the model is not a CPU model with contiguous
    /// row-major weights. `new_tokens` is how many more each may get (a hint for allocation).
    pub(crate) fn new(model: &'m Llama, cache: &KvCache, lens: &[usize], new_tokens: usize) -> Option<Self> {
        let c = &model.config;
        let layers = model.layers.iter().map(Layer::new).collect::<Option<Vec<_>>>()?;
        let embed = Matrix::from(weight_elements(&model.embed_tokens.ws)?);
        let head = match &model.lm_head {
            Some(head) => linear(head)?,
            None => Linear::new(embed, c.vocab_size, None)?,
        };
        let weights = Weights {
            embed,
            layers,
            norm: f32_vector(&model.norm.weight)?,
            head,
        };
        Self::with_weights(c, weights, cache, lens, new_tokens)
    }

    /// A decoder over `weights` of a model configured by `c` (see [`LlamaDecoder::new`]).
    pub(in crate::model) fn with_weights(
        c: &LlamaConfig,
        weights: Weights<'m>,
        cache: &KvCache,
        lens: &[usize],
        new_tokens: usize,
    ) -> Option<Self> {
        let dims = Dims::new(c)?;
        let longest = lens.iter().max().copied().unwrap_or(0);
        let room = new_tokens.min(usize::try_from(c.max_position_embeddings).unwrap_or(0).max(1));
        let sequences = Sequences::new(cache, lens, dims.kv_heads * dims.head_dim, room)?;
        let mut scratch = Scratch {
            scores: Vec::with_capacity(dims.heads * (longest + room)),
            ..Scratch::default()
        };
        scratch.fit(dims, lens.len(), Head::Every);
        Some(Self {
            dims,
            weights,
            inv_freq: c.inverse_frequencies().iter().map(|&f| f as f32).collect(),
            sequences,
            scratch,
        })
    }

    /// Whether a batch of one keeps the batched kernels (see [`CpuDecoder::set_batch_invariant`]).
    ///
    /// [`CpuDecoder::set_batch_invariant`]: crate::model::CpuDecoder::set_batch_invariant
    pub(crate) fn set_batch_invariant(&mut self, on: bool) {
        self.scratch.products.batch_invariant = on;
    }

    /// Its sequences, and the buffers that hold a row per sequence (see
    /// [`CpuDecoder::retain`]).
    ///
    /// [`CpuDecoder::retain`]: crate::model::CpuDecoder::retain
    pub(in crate::model) fn parts(&mut self) -> (&mut Sequences, Vec<&mut Vec<f32>>) {
        let s = &mut self.scratch;
        let buffers = vec![
            &mut s.x,
            &mut s.normed,
            &mut s.qkv,
            &mut s.attention,
            &mut s.projected,
            &mut s.gate_up,
            &mut s.activated,
            &mut s.cos,
            &mut s.sin,
            &mut s.logits,
        ];
        (&mut self.sequences, buffers)
    }

    /// How many sequences are decoding.
    pub(crate) fn count(&self) -> usize {
        self.sequences.count()
    }

    /// Appends `tokens[b]` to sequence `b` and returns the logits that follow, `[sequences,
    /// vocab]` row after row.
    ///
    /// # Panics
    /// If a token is outside the vocabulary, or there is not one per sequence.
    pub(crate) fn step(&mut self, tokens: &[i64]) -> &[f32] {
        let Self {
            dims,
            weights,
            inv_freq,
            sequences,
            scratch,
        } = self;
        scratch.fit(*dims, tokens.len(), Head::Every);
        sequences.step(tokens, dims.vocab, |rows, cache| {
            pass(*dims, weights, inv_freq, rows, cache, scratch, Head::Every)
        });
        &self.scratch.logits
    }

    /// Appends `tokens` to sequence `seq` (a prefill), a chunk of them per pass, and returns
    /// the logits that follow each, `[tokens, vocab]` row after row; or, unless `every`, the
    /// logits after the last token only (`[vocab]`; empty for no tokens).
    ///
    /// # Panics
    /// If a token is outside the vocabulary, or `seq` is not a sequence.
    pub(in crate::model) fn extend(&mut self, seq: usize, tokens: &[i64], every: bool) -> Vec<f32> {
        let Self {
            dims,
            weights,
            inv_freq,
            sequences,
            scratch,
        } = self;
        let mut logits = Vec::with_capacity(if every { tokens.len() } else { 1 } * dims.vocab);
        let chunks = tokens.len().div_ceil(PREFILL_CHUNK);
        for (i, chunk) in tokens.chunks(PREFILL_CHUNK).enumerate() {
            let head = match (every, i + 1 == chunks) {
                (true, _) => Head::Every,
                (false, true) => Head::Last,
                (false, false) => Head::None,
            };
            scratch.fit(*dims, chunk.len(), head);
            sequences.extend(seq, chunk, dims.vocab, |rows, cache| {
                pass(*dims, weights, inv_freq, rows, cache, scratch, head)
            });
            logits.extend_from_slice(&scratch.logits);
        }
        scratch.fit(*dims, sequences.count(), Head::Every);
        logits
    }

    /// Sequence `seq`'s cache as libtorch tensors (see [`Sequences::export`]).
    pub(in crate::model) fn export(&self, seq: usize, pad: usize) -> Vec<(Tensor, Tensor)> {
        self.sequences.export(seq, self.dims.head_dim, pad)
    }
}

/// One pass over `rows` (one token each): embeds them, runs every block and the head on the
/// rows `head` names, and leaves their logits in `s.logits`.
fn pass(
    dims: Dims,
    weights: &Weights<'_>,
    inv_freq: &[f32],
    rows: StepRows<'_>,
    cache: &mut [Vec<RowCache>],
    s: &mut Scratch,
    head: Head,
) {
    let (h, half, n) = (dims.hidden, inv_freq.len(), rows.tokens.len());
    for (b, (&token, &position)) in rows.tokens.iter().zip(rows.positions).enumerate() {
        copy_row(weights.embed, token, &mut s.x[b * h..(b + 1) * h]);
        for (i, &f) in inv_freq.iter().enumerate() {
            let angle = position as f32 * f;
            (s.cos[b * half + i], s.sin[b * half + i]) = (angle.cos(), angle.sin());
        }
    }
    for (layer, caches) in weights.layers.iter().zip(cache.iter_mut()) {
        attention_block(dims, layer, caches, rows.owners, s);
        mlp_block(dims, layer, s);
    }
    let headed = head.rows(n);
    if headed.is_empty() {
        return;
    }
    let count = headed.len();
    for (x, normed) in s.x[headed.start * h..]
        .chunks_exact(h)
        .zip(s.normed.chunks_exact_mut(h))
    {
        rms_norm(x, &weights.norm, dims.eps, normed);
    }
    weights
        .head
        .apply_batch(&s.normed[..count * h], count, &mut s.logits, 0, &mut s.products);
}

/// `x += o_proj(attention(input_layernorm(x)))` for each row, appending its key and value to
/// its sequence's cache.
fn attention_block(d: Dims, layer: &Layer<'_>, caches: &mut [RowCache], owners: &[usize], s: &mut Scratch) {
    let n = owners.len();
    let (h, half) = (d.hidden, d.head_dim / 2);
    for (x, normed) in s.x.chunks_exact(h).zip(s.normed.chunks_exact_mut(h)) {
        rms_norm(x, &layer.input_norm, d.eps, normed);
    }
    layer.qkv.apply_batch(&s.normed, n, &mut s.qkv, &mut s.products);
    let (q_width, kv_width) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    let row_width = q_width + 2 * kv_width;
    let angles = s.cos.chunks_exact(half).zip(s.sin.chunks_exact(half));
    for (qkv, (cos, sin)) in s.qkv.chunks_exact_mut(row_width).zip(angles) {
        rotate_heads(&mut qkv[..q_width + kv_width], cos, sin);
    }
    let widths = (q_width, kv_width, d.head_dim);
    attend_rows(caches, owners, &s.qkv, widths, &mut s.scores, &mut s.attention);
    layer
        .o
        .apply_batch(&s.attention, n, &mut s.projected, 0, &mut s.products);
    add_assign(&mut s.x, &s.projected);
}

/// `x += down(silu(gate(n)) ⊙ up(n))` with `n = post_attention_layernorm(x)`, for each row.
fn mlp_block(d: Dims, layer: &Layer<'_>, s: &mut Scratch) {
    let (h, i) = (d.hidden, d.intermediate);
    let n = s.x.len() / h;
    for (x, normed) in s.x.chunks_exact(h).zip(s.normed.chunks_exact_mut(h)) {
        rms_norm(x, &layer.post_norm, d.eps, normed);
    }
    layer
        .gate_up
        .apply_batch(&s.normed, n, &mut s.gate_up, &mut s.products);
    for (both, out) in s.gate_up.chunks_exact(2 * i).zip(s.activated.chunks_exact_mut(i)) {
        let (gate, up) = both.split_at(i);
        silu_mul(gate, up, out);
    }
    layer
        .down
        .apply_batch(&s.activated, n, &mut s.projected, 0, &mut s.products);
    add_assign(&mut s.x, &s.projected);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tch::{Kind, Tensor};

    use crate::checkpoint::LoadedModel;
    use crate::model::decode::testing::{check_against_libtorch, check_batch_invariance};
    use crate::model::{ForwardInput, KvCache, Precision};

    #[test]
    fn decoding_gqa_with_a_tied_head_and_llama3_rope_matches_libtorch() {
        check_against_libtorch("tiny_llama_gqa", true);
    }

    #[test]
    fn decoding_with_attention_bias_and_an_untied_head_matches_libtorch() {
        check_against_libtorch("tiny_llama_bias", true);
    }

    #[test]
    fn a_sequence_decodes_the_same_bits_in_any_batch() {
        check_batch_invariance("tiny_llama_gqa");
        check_batch_invariance("tiny_llama_bias");
    }

    /// 16-bit weights decode exactly as their widened f32 values: the decoder on the 16-bit
    /// model against libtorch's f32 forward on the same rounded weights, from the same cache.
    #[test]
    fn sixteen_bit_weights_decode_as_their_f32_values() {
        let _guard = tch::no_grad_guard();
        for name in ["tiny_llama_gqa", "tiny_llama_bias"] {
            let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/model")
                .join(name);
            for precision in [Precision::Bf16, Precision::F16] {
                let mut narrow = LoadedModel::load(&dir, tch::Device::Cpu).unwrap();
                narrow.prepare_for_generation(precision);
                let mut wide = LoadedModel::load(&dir, tch::Device::Cpu).unwrap();
                wide.vs.set_kind(precision.kind());
                wide.vs.set_kind(Kind::Float);
                let prompt = Tensor::from_slice(&[5i64, 17, 42, 8]).unsqueeze(0);
                let mut cache = KvCache::new(wide.model.layer_count());
                let input = ForwardInput {
                    input_ids: &prompt,
                    attention_mask: None,
                };
                let _ = wide.model.forward(&input, Some(&mut cache));
                let mut decoder = narrow
                    .model
                    .cpu_decoder(&cache, &[4], 8)
                    .expect("16-bit weights decode");
                for token in [90i64, 3, 64, 1] {
                    let ours = Tensor::from_slice(decoder.step(&[token]));
                    let ids = Tensor::from_slice(&[token]).unsqueeze(0);
                    let input = ForwardInput {
                        input_ids: &ids,
                        attention_mask: None,
                    };
                    let reference = wide.model.forward(&input, Some(&mut cache)).flatten(0, -1);
                    let diff = (ours - reference).abs().max().double_value(&[]);
                    assert!(diff <= 1e-4, "{name} {precision:?}: logits differ by {diff}");
                }
            }
        }
    }
}
