//! Model architectures, their inputs and their key/value cache.

mod decode;
pub mod gemma3;
pub mod gpt2;
pub mod llama;

use tch::{Device, Kind, Tensor};

pub(crate) use decode::{CpuDecoder, retain_rows};
pub use gemma3::{Gemma3, Gemma3Config};
pub use gpt2::{Gpt2, Gpt2Config};
pub use llama::{CpuLlama, Llama, LlamaConfig};

/// The configuration of a model of any supported architecture, as its `config.json` holds it.
// One value per loaded model: boxing the larger variant would only add an indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum ModelConfig {
    /// Llama family.
    Llama(LlamaConfig),
    /// GPT-2 family.
    Gpt2(Gpt2Config),
    /// Gemma 3 (text).
    Gemma3(Gemma3Config),
}

impl ModelConfig {
    /// Vocabulary size.
    pub fn vocab_size(&self) -> i64 {
        match self {
            ModelConfig::Llama(c) => c.vocab_size,
            ModelConfig::Gpt2(c) => c.vocab_size,
            ModelConfig::Gemma3(c) => c.vocab_size,
        }
    }

    /// Number of decoder blocks.
    pub fn layer_count(&self) -> i64 {
        match self {
            ModelConfig::Llama(c) => c.num_hidden_layers,
            ModelConfig::Gpt2(c) => c.n_layer,
            ModelConfig::Gemma3(c) => c.num_hidden_layers,
        }
    }

    /// The Llama configuration, when this is a Llama.
    pub fn as_llama(&self) -> Option<&LlamaConfig> {
        match self {
            ModelConfig::Llama(c) => Some(c),
            ModelConfig::Gpt2(_) | ModelConfig::Gemma3(_) => None,
        }
    }

    /// Whether the 2-D variable `name` is used as `x · Wᵀ`. In a Llama every matrix is (linear
    /// layers, and the embedding as the tied head); GPT-2's Conv1D weights are stored `[in, out]`
    /// and applied untransposed, so only its token embedding (the tied head) is.
    pub fn applies_transposed(&self, name: &str) -> bool {
        match self {
            ModelConfig::Llama(_) | ModelConfig::Gemma3(_) => true,
            ModelConfig::Gpt2(_) => name == "transformer.wte.weight",
        }
    }
}

/// The inputs of one forward pass.
#[derive(Debug)]
pub struct ForwardInput<'a> {
    /// Token ids, `[batch, seq]`, i64.
    pub input_ids: &'a Tensor,
    /// `[batch, past + seq]`: 1 for real tokens, 0 for (left) padding. `None` means no padding.
    pub attention_mask: Option<&'a Tensor>,
}

impl<'a> ForwardInput<'a> {
    /// Input without padding.
    pub fn new(input_ids: &'a Tensor) -> Self {
        Self {
            input_ids,
            attention_mask: None,
        }
    }

    /// Position ids `[batch, seq]`; with a mask, left padding does not advance positions.
    fn positions(&self, past: i64, seq: i64) -> Tensor {
        let device = self.input_ids.device();
        match self.attention_mask {
            Some(mask) => (mask.cumsum(-1, Kind::Int64) - 1)
                .clamp_min(0)
                .narrow(1, past, seq),
            None => Tensor::arange_start(past, past + seq, (Kind::Int64, device))
                .unsqueeze(0)
                .expand([self.input_ids.size()[0], seq], false),
        }
    }

    /// A boolean mask `[batch, 1, seq, past + seq]` (true = may attend), or `None` when the
    /// attention kernel's own causal flag (or no mask at all, for one new token) suffices.
    fn attention_bias(&self, batch: i64, past: i64, seq: i64) -> Option<Tensor> {
        if self.attention_mask.is_none() && (past == 0 || seq == 1) {
            return None;
        }
        let device = self.input_ids.device();
        let query = Tensor::arange_start(past, past + seq, (Kind::Int64, device)).unsqueeze(1);
        let key = Tensor::arange(past + seq, (Kind::Int64, device)).unsqueeze(0);
        let causal = key.le_tensor(&query).view([1, 1, seq, past + seq]);
        let Some(mask) = self.attention_mask else {
            return Some(causal.expand([batch, 1, seq, past + seq], false));
        };
        let keys = mask.to_kind(Kind::Bool).view([batch, 1, 1, past + seq]);
        // Every query may see itself, so rows of pure padding do not become NaN.
        let diagonal = key.eq_tensor(&query).view([1, 1, seq, past + seq]);
        Some(causal.logical_and(&keys).logical_or(&diagonal))
    }
}

/// Keys and values of earlier positions, one `(k, v)` pair per layer, `[batch, kv_heads, len, head_dim]`.
#[derive(Debug)]
pub struct KvCache {
    layers: Vec<(Tensor, Tensor)>,
    len: i64,
}

impl KvCache {
    /// An empty cache for a model with `layers` blocks.
    pub fn new(layers: usize) -> Self {
        let empty = || (Tensor::new(), Tensor::new());
        Self {
            layers: (0..layers).map(|_| empty()).collect(),
            len: 0,
        }
    }

    /// Positions held.
    pub fn len(&self) -> i64 {
        self.len
    }

    /// Whether nothing is cached yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn layer_mut(&mut self, i: usize) -> &mut (Tensor, Tensor) {
        &mut self.layers[i]
    }

    fn advance(&mut self, seq: i64) {
        self.len += seq;
    }

    /// One cache for a left-padded batch from the caches of its sequences prefilled one by one
    /// (each `[1, heads, len, head_dim]`): every layer's rows padded with zeros on the left to
    /// the longest and stacked. The padding is never attended to (the attention mask and the
    /// CPU decoder both skip it).
    pub(crate) fn left_padded(caches: Vec<KvCache>) -> Self {
        let width = caches.iter().map(KvCache::len).max().unwrap_or(0);
        let layer_count = caches.first().map_or(0, |c| c.layers.len());
        let pad = |t: &Tensor, len: i64| {
            if len == width {
                return t.shallow_clone();
            }
            let mut shape = t.size();
            shape[2] = width - len;
            Tensor::cat(&[&Tensor::zeros(shape.as_slice(), (t.kind(), t.device())), t], 2)
        };
        let layers = (0..layer_count)
            .map(|layer| {
                let (keys, values): (Vec<Tensor>, Vec<Tensor>) = caches
                    .iter()
                    .map(|c| {
                        let (k, v) = &c.layers[layer];
                        (pad(k, c.len), pad(v, c.len))
                    })
                    .unzip();
                (Tensor::cat(&keys, 0), Tensor::cat(&values, 0))
            })
            .collect();
        Self { layers, len: width }
    }

    /// Replaces what the cache holds with the caches of each row's sequence, `rows[b][layer]`
    /// (each `[1, heads, width, head_dim]`), stacked; `width` positions in all.
    pub(crate) fn replace(&mut self, rows: Vec<Vec<(Tensor, Tensor)>>, width: i64) {
        if rows.is_empty() {
            return;
        }
        for (layer, (keys, values)) in self.layers.iter_mut().enumerate() {
            let (k, v): (Vec<Tensor>, Vec<Tensor>) = rows
                .iter()
                .map(|r| (r[layer].0.shallow_clone(), r[layer].1.shallow_clone()))
                .unzip();
            (*keys, *values) = (Tensor::cat(&k, 0), Tensor::cat(&v, 0));
        }
        self.len = width;
    }

    /// Keeps only the batch rows in `rows` (for dropping finished sequences).
    pub fn select_rows(&mut self, rows: &Tensor) {
        for (k, v) in &mut self.layers {
            if k.numel() > 0 {
                *k = k.index_select(0, rows);
                *v = v.index_select(0, rows);
            }
        }
    }
}

/// Appends new keys and values `[batch, heads, seq, head_dim]` to a layer's cache, and returns
/// the keys and values attention should use (all cached positions, then the new ones).
fn extend_cache(cache: Option<&mut (Tensor, Tensor)>, k: Tensor, v: Tensor) -> (Tensor, Tensor) {
    let Some((past_k, past_v)) = cache else {
        return (k, v);
    };
    let (k, v) = if past_k.numel() > 0 {
        (Tensor::cat(&[&*past_k, &k], 2), Tensor::cat(&[&*past_v, &v], 2))
    } else {
        (k, v)
    };
    *past_k = k.shallow_clone();
    *past_v = v.shallow_clone();
    (k, v)
}

/// A causal language model of any supported architecture.
#[derive(Debug)]
pub enum CausalLm {
    /// Llama family.
    Llama(Llama),
    /// GPT-2 family.
    Gpt2(Gpt2),
    /// Llama family, held for CPU inference only (quantized weights; not trainable).
    CpuLlama(CpuLlama),
    /// Gemma 3 (text).
    Gemma3(Gemma3),
}

impl CausalLm {
    /// Logits `[batch, seq, vocab]` for every position.
    pub fn forward(&self, input: &ForwardInput<'_>, cache: Option<&mut KvCache>) -> Tensor {
        match self {
            CausalLm::Llama(m) => m.forward(input, cache),
            CausalLm::Gpt2(m) => m.forward(input, cache),
            CausalLm::CpuLlama(m) => m.forward(input, cache),
            CausalLm::Gemma3(m) => m.forward(input, cache),
        }
    }

    /// Logits `[batch, vocab]` of the last position, `forward(..).select(1, -1)`: what a
    /// prefill before generating needs. The CPU-only Llama computes its output head there only.
    pub fn forward_last(&self, input: &ForwardInput<'_>, cache: Option<&mut KvCache>) -> Tensor {
        match self {
            CausalLm::CpuLlama(m) => m.forward_last(input, cache),
            _ => self.forward(input, cache).select(1, -1),
        }
    }

    /// Logits `[n, vocab]` of the positions `rows` only (flat i64 indices into `batch * seq`),
    /// without a cache: training needs the output head at its target positions only.
    pub fn forward_rows(&self, input: &ForwardInput<'_>, rows: &Tensor) -> Tensor {
        match self {
            CausalLm::Llama(m) => m.forward_rows(input, rows),
            CausalLm::Gpt2(m) => m.forward_rows(input, rows),
            CausalLm::Gemma3(m) => m.forward_rows(input, rows),
            CausalLm::CpuLlama(m) => {
                let logits = m.forward(input, None);
                let vocab = logits.size()[2];
                logits.reshape([-1, vocab]).index_select(0, rows)
            }
        }
    }

    /// Fuses projections that read the same input (Llama, Gemma 3; GPT-2's are fused already),
    /// storing the fused matrices row-major or column-major.
    pub fn fuse_projections(&mut self, column_major: bool) {
        match self {
            CausalLm::Llama(m) => m.fuse_projections(column_major),
            CausalLm::Gemma3(m) => m.fuse_projections(column_major),
            CausalLm::Gpt2(_) | CausalLm::CpuLlama(_) => {}
        }
    }

    /// A decoder that continues the left-padded sequences held in `cache` (`lens[b]` real
    /// tokens in row `b`) without libtorch, where the model supports it (f32 on the CPU, laid
    /// out by `LoadedModel::prepare_for_generation` for GPT-2); `new_tokens` is how many more
    /// each may get.
    pub(crate) fn cpu_decoder(
        &self,
        cache: &KvCache,
        lens: &[usize],
        new_tokens: usize,
    ) -> Option<CpuDecoder<'_>> {
        match self {
            CausalLm::Llama(m) => llama::LlamaDecoder::new(m, cache, lens, new_tokens).map(CpuDecoder::Llama),
            CausalLm::Gpt2(m) => gpt2::Gpt2Decoder::new(m, cache, lens, new_tokens).map(CpuDecoder::Gpt2),
            CausalLm::CpuLlama(m) => m.decoder(cache, lens, new_tokens).map(CpuDecoder::Llama),
            CausalLm::Gemma3(_) => None,
        }
    }

    /// Number of decoder blocks (for sizing a [`KvCache`]).
    pub fn layer_count(&self) -> usize {
        match self {
            CausalLm::Llama(m) => m.config().num_hidden_layers as usize,
            CausalLm::Gpt2(m) => m.config().n_layer as usize,
            CausalLm::CpuLlama(m) => m.config().num_hidden_layers as usize,
            CausalLm::Gemma3(m) => m.config().num_hidden_layers as usize,
        }
    }

    /// The most positions a sequence may have, for models with learned positions (GPT-2);
    /// rotary positions (Llama) have no hard limit.
    pub fn max_positions(&self) -> Option<usize> {
        match self {
            CausalLm::Llama(_) | CausalLm::CpuLlama(_) | CausalLm::Gemma3(_) => None,
            CausalLm::Gpt2(m) => usize::try_from(m.config().n_positions).ok(),
        }
    }

    /// The context the model was trained for, in tokens: its learned positions (GPT-2), or
    /// `max_position_embeddings` (Llama), which rotary positions may exceed but quality does not.
    pub fn context_length(&self) -> usize {
        match self {
            CausalLm::Llama(m) => usize::try_from(m.config().max_position_embeddings).unwrap_or(0),
            CausalLm::Gpt2(m) => usize::try_from(m.config().n_positions).unwrap_or(0),
            CausalLm::CpuLlama(m) => usize::try_from(m.config().max_position_embeddings).unwrap_or(0),
            CausalLm::Gemma3(m) => usize::try_from(m.config().max_position_embeddings).unwrap_or(0),
        }
    }

    /// The device holding the weights.
    pub fn device(&self) -> Device {
        match self {
            CausalLm::Llama(m) => m.device(),
            CausalLm::Gpt2(m) => m.device(),
            CausalLm::CpuLlama(m) => m.device(),
            CausalLm::Gemma3(m) => m.device(),
        }
    }

    /// Vocabulary size of the output head.
    pub fn vocab_size(&self) -> i64 {
        match self {
            CausalLm::Llama(m) => m.config().vocab_size,
            CausalLm::Gpt2(m) => m.config().vocab_size,
            CausalLm::CpuLlama(m) => m.config().vocab_size,
            CausalLm::Gemma3(m) => m.config().vocab_size,
        }
    }
}

/// `a · b` and sums of such products over non-negative dimensions, `None` on overflow or a
/// negative dimension.
pub(crate) fn checked_elements(products: &[&[i64]]) -> Option<u64> {
    products.iter().try_fold(0u64, |sum, factors| {
        let product = factors
            .iter()
            .try_fold(1u64, |acc, &f| acc.checked_mul(u64::try_from(f).ok()?))?;
        sum.checked_add(product)
    })
}

/// Floating-point precision for weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// 32-bit floats (the only choice on a CPU for training).
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
}

impl Precision {
    /// The libtorch kind.
    pub fn kind(self) -> Kind {
        match self {
            Precision::F32 => Kind::Float,
            Precision::F16 => Kind::Half,
            Precision::Bf16 => Kind::BFloat16,
        }
    }
}

/// Re-initialises every variable as transformers' `_init_weights` does for Llama and Gemma 3:
/// weights ~ N(0, `std`) (transformers' `initializer_range`, 0.02 by default), biases 0, norms
/// at identity (1, or 0 for Gemma's `1 + weight` norms).
pub fn init_like_transformers(vs: &tch::nn::VarStore, config: &ModelConfig, std: f64) {
    let _guard = tch::no_grad_guard();
    let identity = if matches!(config, ModelConfig::Gemma3(_)) {
        0.0
    } else {
        1.0
    };
    // In name order: `variables()` is a HashMap, and the draws must not depend on its order.
    let sorted: std::collections::BTreeMap<_, _> = vs.variables().into_iter().collect();
    for (name, mut var) in sorted {
        if name.ends_with("norm.weight") {
            let _ = var.fill_(identity);
        } else if name.ends_with(".bias") {
            let _ = var.zero_();
        } else {
            let _ = var.normal_(0.0, std);
        }
    }
}
