//! One decode step of a GPT-2 on the CPU in f32 (see `model::decode`).

use rayon::ThreadPool;
use tch::nn;

use super::{Block, Conv1d, Gpt2};
use crate::model::KvCache;
use crate::model::decode::{Linear, f32_elements, f32_transposed_elements, import_cache, thread_pool};
use distill_kernels::{CacheLayout, add_assign, attention, gelu_tanh, layer_norm, matvec};

/// A Conv1D (`[in, out]` weight) as a linear layer; its weight must be stored column-major,
/// which [`Gpt2::store_projections_for_decoding`] arranges, so that the rows of `[out, in]`
/// can be read front to back.
fn linear(conv: &Conv1d) -> Option<Linear<'_>> {
    Linear::new(
        f32_transposed_elements(&conv.weight)?,
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

/// Buffers one step writes, allocated once.
struct Scratch {
    x: Vec<f32>,
    normed: Vec<f32>,
    qkv: Vec<f32>,
    attention: Vec<f32>,
    projected: Vec<f32>,
    inner: Vec<f32>,
    scores: Vec<f32>,
    logits: Vec<f32>,
}

/// Decodes one sequence of a [`Gpt2`] on the CPU in f32: a step takes the newest token and
/// gives the logits of the next one.
pub(crate) struct Gpt2Decoder<'m> {
    width: usize,
    heads: usize,
    vocab: usize,
    positions: usize,
    eps: f32,
    wte: &'m [f32],
    wpe: &'m [f32],
    layers: Vec<Layer<'m>>,
    ln_f: (&'m [f32], &'m [f32]),
    /// Per layer, keys and values position after position, `width` floats each.
    cache: Vec<(Vec<f32>, Vec<f32>)>,
    len: usize,
    scratch: Scratch,
    pool: ThreadPool,
}

impl<'m> Gpt2Decoder<'m> {
    /// A decoder continuing the single sequence whose prefix `cache` holds, or `None` when the
    /// model is not an f32 CPU model laid out for decoding, uses exact GELU, or `cache` holds
    /// more than one sequence. `capacity` is the expected final length.
    pub(crate) fn new(model: &'m Gpt2, cache: &KvCache, capacity: usize) -> Option<Self> {
        let c = &model.config;
        if c.activation_function == "gelu" {
            return None;
        }
        let width = usize::try_from(c.n_embd).ok()?;
        let positions = usize::try_from(c.n_positions).ok()?;
        let len = usize::try_from(cache.len()).ok()?;
        let capacity = capacity.clamp(len, len.max(positions));
        let layers = model.blocks.iter().map(Layer::new).collect::<Option<Vec<_>>>()?;
        let inner = usize::try_from(c.inner()).ok()?;
        let vocab = usize::try_from(c.vocab_size).ok()?;
        Some(Self {
            width,
            heads: usize::try_from(c.n_head).ok()?,
            vocab,
            positions,
            eps: c.layer_norm_epsilon as f32,
            wte: f32_elements(&model.wte.ws)?,
            wpe: f32_elements(&model.wpe.ws)?,
            layers,
            ln_f: norm(&model.ln_f)?,
            cache: import_cache(cache, width, capacity)?,
            len,
            scratch: Scratch {
                x: vec![0.0; width],
                normed: vec![0.0; width],
                qkv: vec![0.0; 3 * width],
                attention: vec![0.0; width],
                projected: vec![0.0; width],
                inner: vec![0.0; inner],
                scores: Vec::with_capacity(usize::try_from(c.n_head).ok()? * capacity),
                logits: vec![0.0; vocab],
            },
            pool: thread_pool()?,
        })
    }

    /// Appends `token` at the next position and returns the logits `[vocab]` that follow it.
    ///
    /// # Panics
    /// If `token` is outside the vocabulary, or the sequence outgrows the learned positions.
    pub(crate) fn step(&mut self, token: i64) -> &[f32] {
        let token = usize::try_from(token).expect("token ids are non-negative");
        assert!(token < self.vocab, "token {token} is outside the vocabulary");
        assert!(self.len < self.positions, "GPT-2 has no position {}", self.len);
        let pool = &self.pool;
        let (w, heads, eps, position) = (self.width, self.heads, self.eps, self.len);
        let Self {
            wte,
            wpe,
            layers,
            ln_f,
            cache,
            scratch: s,
            ..
        } = self;
        pool.install(|| {
            s.x.copy_from_slice(&wte[token * w..(token + 1) * w]);
            add_assign(&mut s.x, &wpe[position * w..(position + 1) * w]);
            for (layer, (keys, values)) in layers.iter().zip(cache.iter_mut()) {
                layer_norm(&s.x, layer.ln_1, eps, &mut s.normed);
                layer.c_attn.apply(&s.normed, &mut s.qkv);
                keys.extend_from_slice(&s.qkv[w..2 * w]);
                values.extend_from_slice(&s.qkv[2 * w..]);
                let layout = CacheLayout {
                    len: keys.len() / w,
                    stride: w,
                    head_dim: w / heads,
                };
                s.scores.resize(heads * layout.len, 0.0);
                attention(&s.qkv[..w], keys, values, layout, &mut s.scores, &mut s.attention);
                layer.attn_proj.apply(&s.attention, &mut s.projected);
                add_assign(&mut s.x, &s.projected);

                layer_norm(&s.x, layer.ln_2, eps, &mut s.normed);
                layer.c_fc.apply(&s.normed, &mut s.inner);
                gelu_tanh(&mut s.inner);
                layer.mlp_proj.apply(&s.inner, &mut s.projected);
                add_assign(&mut s.x, &s.projected);
            }
            layer_norm(&s.x, *ln_f, eps, &mut s.normed);
            matvec(wte, &s.normed, &mut s.logits);
        });
        self.len += 1;
        &self.scratch.logits
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tch::Tensor;

    use crate::checkpoint::LoadedModel;
    use crate::model::{ForwardInput, KvCache, Precision};

    #[test]
    fn decoding_matches_libtorch_and_needs_the_decoding_layout() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/tiny_gpt2");
        let tokens = [5i64, 17, 42, 8, 90, 3, 64, 1, 0, 88, 88, 12];
        let _guard = tch::no_grad_guard();
        let mut model = LoadedModel::load(&dir, tch::Device::Cpu).unwrap();
        let mut cache = KvCache::new(model.model.layer_count());
        let prefill = Tensor::from_slice(&tokens[..4]).reshape([1, 4]);
        let _ = model
            .model
            .forward(&ForwardInput::new(&prefill), Some(&mut cache));
        // As loaded, Conv1D weights are `[in, out]` row-major: not what the decoder reads.
        assert!(model.model.cpu_decoder(&cache, 2).is_none());

        model.prepare_for_generation(Precision::F32);
        let mut cache = KvCache::new(model.model.layer_count());
        let _ = model
            .model
            .forward(&ForwardInput::new(&prefill), Some(&mut cache));
        let mut decoder = model
            .model
            .cpu_decoder(&cache, 2)
            .expect("a prepared f32 GPT-2 decodes");
        for &token in &tokens[4..] {
            let ours = Tensor::from_slice(decoder.step(token));
            let input = Tensor::from_slice(&[token]).reshape([1, 1]);
            let reference = model.model.forward(&ForwardInput::new(&input), Some(&mut cache));
            let diff = (ours - reference.flatten(0, -1)).abs().max().double_value(&[]);
            assert!(diff <= 1e-5, "logits differ by {diff}");
        }
    }
}
