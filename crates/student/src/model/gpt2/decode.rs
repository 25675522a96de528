//! One decode step of a GPT-2 on the CPU in f32 (see `model::decode`).

use tch::nn;

use super::{Block, Conv1d, Gpt2};
use crate::model::KvCache;
use crate::model::decode::{
    BatchProducts, Linear, Sequences, attend_rows, f32_elements, f32_transposed_elements,
};
use distill_kernels::{Rows, add_assign, gelu_tanh, layer_norm};

/// A Conv1D (`[in, out]` weight) as a linear layer; its weight must be stored column-major,
/// which [`Gpt2::store_projections_for_decoding`] arranges, so that the rows of `[out, in]`
/// can be read front to back.
fn linear(conv: &Conv1d) -> Option<Linear<'_>> {
    Linear::new(
        Rows::F32(f32_transposed_elements(&conv.weight)?),
        conv.weight.size()[1],
        Some(&conv.bias),
    )
}

/// A LayerNorm's weight and bias.
fn norm(ln: &nn::LayerNorm) -> Option<(&[f32], &[f32])> {
    Some((f32_elements(ln.ws.as_ref()?)?, f32_elements(ln.bs.as_ref()?)?))
}

struct Layer<'m> {
    ln_1: (&'m [f32], &'m [f32]),
    c_attn: Linear<'m>,
    attn_proj: Linear<'m>,
    ln_2: (&'m [f32], &'m [f32]),
    c_fc: Linear<'m>,
    mlp_proj: Linear<'m>,
}

impl<'m> Layer<'m> {
    fn new(block: &'m Block) -> Option<Self> {
        Some(Self {
            ln_1: norm(&block.ln_1)?,
            c_attn: linear(&block.c_attn)?,
            attn_proj: linear(&block.attn_proj)?,
            ln_2: norm(&block.ln_2)?,
            c_fc: linear(&block.c_fc)?,
            mlp_proj: linear(&block.mlp_proj)?,
        })
    }
}

/// Buffers one step writes, allocated once: a row per sequence.
struct Scratch {
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attention: Vec<f32>,
    projected: Vec<f32>,
    inner: Vec<f32>,
    scores: Vec<f32>,
    logits: Vec<f32>,
    products: BatchProducts,
}

/// Decodes sequences of a [`Gpt2`] on the CPU in f32: a step takes the newest token of each
/// and gives the logits of the next ones.
pub(crate) struct Gpt2Decoder<'m> {
    width: usize,
    heads: usize,
    vocab: usize,
    max_positions: usize,
    eps: f32,
    wte: &'m [f32],
    wpe: &'m [f32],
    layers: Vec<Layer<'m>>,
    ln_f: (&'m [f32], &'m [f32]),
    /// The tied output head: `wte` as a linear layer.
    head: Linear<'m>,
    /// Cached positions are `width` floats wide.
    sequences: Sequences,
    scratch: Scratch,
}

impl<'m> Gpt2Decoder<'m> {
    /// A decoder continuing the left-padded sequences whose prefixes `cache` holds (`lens[b]`
    /// real tokens in row `b`), or `None` when the model is not an f32 CPU model laid out for
    /// decoding, or uses exact GELU. `new_tokens` is how many more each may get.
    pub(crate) fn new(model: &'m Gpt2, cache: &KvCache, lens: &[usize], new_tokens: usize) -> Option<Self> {
        let c = &model.config;
        if c.activation_function == "gelu" {
            return None;
        }
        let width = usize::try_from(c.n_embd).ok()?;
        let heads = usize::try_from(c.n_head).ok()?;
        let max_positions = usize::try_from(c.n_positions).ok()?;
        let layers = model.blocks.iter().map(Layer::new).collect::<Option<Vec<_>>>()?;
        let inner = usize::try_from(c.inner()).ok()?;
        let vocab = usize::try_from(c.vocab_size).ok()?;
        let wte = f32_elements(&model.wte.ws)?;
        let room = new_tokens.min(max_positions);
        let n = lens.len();
        Some(Self {
            width,
            heads,
            vocab,
            max_positions,
            eps: c.layer_norm_epsilon as f32,
            wte,
            wpe: f32_elements(&model.wpe.ws)?,
            layers,
            ln_f: norm(&model.ln_f)?,
            head: Linear::new(Rows::F32(wte), c.vocab_size, None)?,
            sequences: Sequences::new(cache, lens, width, room)?,
            scratch: Scratch {
                x: vec![0.0; n * width],
                normed: vec![0.0; n * width],
                qkv: vec![0.0; n * 3 * width],
                attention: vec![0.0; n * width],
                projected: vec![0.0; n * width],
                inner: vec![0.0; n * inner],
                scores: Vec::with_capacity(heads * max_positions),
                logits: vec![0.0; n * vocab],
                products: BatchProducts::default(),
            },
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
            &mut s.inner,
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
    /// If a token is outside the vocabulary, there is not one per sequence, or a sequence
    /// outgrows the learned positions.
    pub(crate) fn step(&mut self, tokens: &[i64]) -> &[f32] {
        let (w, heads, eps, n) = (self.width, self.heads, self.eps, tokens.len());
        let Self {
            vocab,
            max_positions,
            wte,
            wpe,
            layers,
            ln_f,
            head,
            sequences,
            scratch: s,
            ..
        } = self;
        sequences.step(tokens, *vocab, |rows, cache| {
            for (b, (&token, &position)) in rows.tokens.iter().zip(rows.positions).enumerate() {
                assert!(position < *max_positions, "GPT-2 has no position {position}");
                let x = &mut s.x[b * w..(b + 1) * w];
                x.copy_from_slice(&wte[token * w..(token + 1) * w]);
                add_assign(x, &wpe[position * w..(position + 1) * w]);
            }
            for (layer, caches) in layers.iter().zip(cache.iter_mut()) {
                norm_rows(&s.x, layer.ln_1, eps, &mut s.normed);
                layer
                    .c_attn
                    .apply_batch(&s.normed, n, &mut s.qkv, 0, &mut s.products);
                attend_rows(
                    caches,
                    rows.owners,
                    &s.qkv,
                    (w, w, w / heads),
                    &mut s.scores,
                    &mut s.attention,
                );
                layer
                    .attn_proj
                    .apply_batch(&s.attention, n, &mut s.projected, 0, &mut s.products);
                add_assign(&mut s.x, &s.projected);

                norm_rows(&s.x, layer.ln_2, eps, &mut s.normed);
                layer
                    .c_fc
                    .apply_batch(&s.normed, n, &mut s.inner, 0, &mut s.products);
                gelu_tanh(&mut s.inner);
                layer
                    .mlp_proj
                    .apply_batch(&s.inner, n, &mut s.projected, 0, &mut s.products);
                add_assign(&mut s.x, &s.projected);
            }
            norm_rows(&s.x, *ln_f, eps, &mut s.normed);
            head.apply_batch(&s.normed, n, &mut s.logits, 0, &mut s.products);
        });
        &self.scratch.logits
    }
}

/// LayerNorm of each `weight.len()`-wide row of `x`.
fn norm_rows(x: &[f32], (weight, bias): (&[f32], &[f32]), eps: f32, out: &mut [f32]) {
    let width = weight.len();
    for (x, out) in x.chunks_exact(width).zip(out.chunks_exact_mut(width)) {
        layer_norm(x, (weight, bias), eps, out);
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::checkpoint::LoadedModel;
    use crate::model::KvCache;

    #[test]
    fn decoding_matches_libtorch() {
        crate::model::decode::testing::check_against_libtorch("tiny_gpt2", false);
    }

    #[test]
    fn a_sequence_decodes_the_same_bits_in_any_batch() {
        crate::model::decode::testing::check_batch_invariance("tiny_gpt2");
    }

    #[test]
    fn conv1d_weights_as_loaded_are_not_what_the_decoder_reads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/tiny_gpt2");
        let model = LoadedModel::load(&dir, tch::Device::Cpu).unwrap();
        let cache = KvCache::new(model.model.layer_count());
        assert!(model.model.cpu_decoder(&cache, &[0], 4).is_none());
    }
}
