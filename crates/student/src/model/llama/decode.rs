//! One decode step of a Llama on the CPU in f32 (see `model::decode`).

use rayon::ThreadPool;
use tch::{Tensor, nn};

use super::{Attention, Llama, Mlp};
use crate::model::KvCache;
use crate::model::decode::{Linear, Stacked, f32_elements, import_cache, thread_pool};
use distill_kernels::{CacheLayout, add_assign, attention, matvec, rms_norm, rotate_heads, silu_mul};

/// A linear layer with HF's `[out, in]` weight.
fn linear(layer: &nn::Linear) -> Option<Linear<'_>> {
    Linear::new(f32_elements(&layer.ws)?, layer.ws.size()[0], layer.bs.as_ref())
}

/// One fused matrix after [`Llama::fuse_projections`], the separate layers before.
fn stacked<'m>(fused: &'m Option<(Tensor, Option<Tensor>)>, parts: &[&'m nn::Linear]) -> Option<Stacked<'m>> {
    match fused {
        Some((weight, bias)) => Some(Stacked(vec![Linear::new(
            f32_elements(weight)?,
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

struct Layer<'m> {
    input_norm: &'m [f32],
    qkv: Stacked<'m>,
    o: Linear<'m>,
    post_norm: &'m [f32],
    gate_up: Stacked<'m>,
    down: Linear<'m>,
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
        } = &block.mlp;
        Some(Self {
            input_norm: f32_elements(&block.input_layernorm.weight)?,
            qkv: stacked(qkv, &[q_proj, k_proj, v_proj])?,
            o: linear(o_proj)?,
            post_norm: f32_elements(&block.post_attention_layernorm.weight)?,
            gate_up: stacked(gate_up, &[gate_proj, up_proj])?,
            down: linear(down_proj)?,
        })
    }
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

/// Buffers one step writes, allocated once.
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
}

/// Decodes one sequence of a [`Llama`] on the CPU in f32: a step takes the newest token and
/// gives the logits of the next one.
pub(crate) struct LlamaDecoder<'m> {
    dims: Dims,
    embed: &'m [f32],
    layers: Vec<Layer<'m>>,
    norm: &'m [f32],
    head: &'m [f32],
    inv_freq: Vec<f32>,
    /// Per layer, keys and values position after position, `kv_heads · head_dim` floats each.
    cache: Vec<(Vec<f32>, Vec<f32>)>,
    len: usize,
    scratch: Scratch,
    pool: ThreadPool,
}

impl<'m> LlamaDecoder<'m> {
    /// A decoder continuing the single sequence whose prefix `cache` holds, or `None` when the
    /// model is not an f32 CPU model with contiguous row-major weights, or `cache` holds more
    /// than one sequence. `capacity` is the expected final length (a hint for allocation).
    pub(crate) fn new(model: &'m Llama, cache: &KvCache, capacity: usize) -> Option<Self> {
        let c = &model.config;
        let dims = Dims {
            hidden: usize::try_from(c.hidden_size).ok()?,
            intermediate: usize::try_from(c.intermediate_size).ok()?,
            vocab: usize::try_from(c.vocab_size).ok()?,
            heads: usize::try_from(c.num_attention_heads).ok()?,
            kv_heads: usize::try_from(c.kv_heads()).ok()?,
            head_dim: usize::try_from(c.head_width()).ok()?,
            eps: c.rms_norm_eps as f32,
        };
        let layers = model.layers.iter().map(Layer::new).collect::<Option<Vec<_>>>()?;
        let embed = f32_elements(&model.embed_tokens.ws)?;
        let head = match &model.lm_head {
            Some(head) => linear(head)?.weight,
            None => embed,
        };
        let len = usize::try_from(cache.len()).ok()?;
        let capacity = capacity.clamp(len, len.max(c.max_position_embeddings.max(0) as usize));
        let cache = import_cache(cache, dims.kv_heads * dims.head_dim, capacity)?;
        let pool = thread_pool()?;
        let scratch = Scratch {
            x: vec![0.0; dims.hidden],
            normed: vec![0.0; dims.hidden],
            qkv: vec![0.0; (dims.heads + 2 * dims.kv_heads) * dims.head_dim],
            attention: vec![0.0; dims.heads * dims.head_dim],
            projected: vec![0.0; dims.hidden],
            gate_up: vec![0.0; 2 * dims.intermediate],
            activated: vec![0.0; dims.intermediate],
            scores: Vec::with_capacity(dims.heads * capacity),
            cos: vec![0.0; dims.head_dim / 2],
            sin: vec![0.0; dims.head_dim / 2],
            logits: vec![0.0; dims.vocab],
        };
        Some(Self {
            dims,
            embed,
            layers,
            norm: f32_elements(&model.norm.weight)?,
            head,
            inv_freq: c.inverse_frequencies().iter().map(|&f| f as f32).collect(),
            cache,
            len,
            scratch,
            pool,
        })
    }

    /// Appends `token` at the next position and returns the logits `[vocab]` that follow it.
    ///
    /// # Panics
    /// If `token` is outside the vocabulary.
    pub(crate) fn step(&mut self, token: i64) -> &[f32] {
        let token = usize::try_from(token).expect("token ids are non-negative");
        assert!(token < self.dims.vocab, "token {token} is outside the vocabulary");
        let pool = &self.pool;
        let Self {
            dims,
            embed,
            layers,
            norm,
            head,
            inv_freq,
            cache,
            len,
            scratch,
            ..
        } = self;
        pool.install(|| {
            let position = *len as f32;
            for (i, &f) in inv_freq.iter().enumerate() {
                let angle = position * f;
                (scratch.cos[i], scratch.sin[i]) = (angle.cos(), angle.sin());
            }
            let h = dims.hidden;
            scratch.x.copy_from_slice(&embed[token * h..(token + 1) * h]);
            for (layer, (keys, values)) in layers.iter().zip(cache.iter_mut()) {
                attention_block(*dims, layer, keys, values, scratch);
                mlp_block(*dims, layer, scratch);
            }
            rms_norm(&scratch.x, norm, dims.eps, &mut scratch.normed);
            matvec(head, &scratch.normed, &mut scratch.logits);
        });
        self.len += 1;
        &self.scratch.logits
    }
}

/// `x += o_proj(attention(input_layernorm(x)))`, appending this position's key and value.
fn attention_block(d: Dims, layer: &Layer<'_>, keys: &mut Vec<f32>, values: &mut Vec<f32>, s: &mut Scratch) {
    rms_norm(&s.x, layer.input_norm, d.eps, &mut s.normed);
    layer.qkv.apply(&s.normed, &mut s.qkv);
    let (q_width, kv_width) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
    let (qk, v) = s.qkv.split_at_mut(q_width + kv_width);
    rotate_heads(qk, &s.cos, &s.sin);
    keys.extend_from_slice(&qk[q_width..]);
    values.extend_from_slice(v);

    let layout = CacheLayout {
        len: keys.len() / kv_width,
        stride: kv_width,
        head_dim: d.head_dim,
    };
    s.scores.resize(d.heads * layout.len, 0.0);
    attention(
        &qk[..q_width],
        keys,
        values,
        layout,
        &mut s.scores,
        &mut s.attention,
    );
    layer.o.apply(&s.attention, &mut s.projected);
    add_assign(&mut s.x, &s.projected);
}

/// `x += down(silu(gate(n)) ⊙ up(n))` with `n = post_attention_layernorm(x)`.
fn mlp_block(d: Dims, layer: &Layer<'_>, s: &mut Scratch) {
    rms_norm(&s.x, layer.post_norm, d.eps, &mut s.normed);
    layer.gate_up.apply(&s.normed, &mut s.gate_up);
    let (gate, up) = s.gate_up.split_at(d.intermediate);
    silu_mul(gate, up, &mut s.activated);
    layer.down.apply(&s.activated, &mut s.projected);
    add_assign(&mut s.x, &s.projected);
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use tch::Tensor;

    use crate::checkpoint::LoadedModel;
    use crate::model::{ForwardInput, KvCache, Precision};

    /// Logits of the decoder after a 4-token prefill, against libtorch's cached forward over
    /// the same tokens, for the model as loaded (separate projections) and as prepared (fused).
    fn check_against_libtorch(fixture: &str) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/model")
            .join(fixture);
        let tokens = [5i64, 17, 42, 8, 99, 3, 64, 1, 0, 100, 88, 88, 88, 12];
        let _guard = tch::no_grad_guard();
        for prepared in [false, true] {
            let mut model = LoadedModel::load(&dir, tch::Device::Cpu).unwrap();
            if prepared {
                model.prepare_for_generation(Precision::F32);
            }
            let mut cache = KvCache::new(model.model.layer_count());
            let prefill = Tensor::from_slice(&tokens[..4]).reshape([1, 4]);
            let _ = model
                .model
                .forward(&ForwardInput::new(&prefill), Some(&mut cache));
            let mut decoder = model
                .model
                .cpu_decoder(&cache, 2)
                .expect("an f32 CPU Llama decodes");
            for &token in &tokens[4..] {
                let ours = Tensor::from_slice(decoder.step(token));
                let input = Tensor::from_slice(&[token]).reshape([1, 1]);
                let reference = model.model.forward(&ForwardInput::new(&input), Some(&mut cache));
                let diff = (ours - reference.flatten(0, -1)).abs().max().double_value(&[]);
                assert!(
                    diff <= 1e-5,
                    "{fixture} (prepared: {prepared}): logits differ by {diff}"
                );
            }
        }
    }

    #[test]
    fn decoding_gqa_with_a_tied_head_and_llama3_rope_matches_libtorch() {
        check_against_libtorch("tiny_llama_gqa");
    }

    #[test]
    fn decoding_with_attention_bias_and_an_untied_head_matches_libtorch() {
        check_against_libtorch("tiny_llama_bias");
    }

    #[test]
    fn no_decoder_for_bf16_weights_or_several_sequences() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/tiny_llama_gqa");
        let _guard = tch::no_grad_guard();
        let mut model = LoadedModel::load(&dir, tch::Device::Cpu).unwrap();
        let mut cache = KvCache::new(model.model.layer_count());
        let two = Tensor::from_slice(&[5i64, 17, 42, 8]).reshape([2, 2]);
        let _ = model.model.forward(&ForwardInput::new(&two), Some(&mut cache));
        assert!(model.model.cpu_decoder(&cache, 4).is_none());
        model.prepare_for_generation(Precision::Bf16);
        assert!(
            model
                .model
                .cpu_decoder(&KvCache::new(model.model.layer_count()), 4)
                .is_none()
        );
    }
}
