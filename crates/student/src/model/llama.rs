//! The Llama family (Llama 2/3, SmolLM2, Qwen2-style with attention bias).
//!
//! Touvron et al., "LLaMA: Open and Efficient Foundation Language Models" (2023);
//! reference implementation: transformers' `models/llama/modeling_llama.py`.
//! Pre-norm decoder blocks: RMSNorm, grouped-query attention with rotary position
//! embeddings (optionally with llama3 frequency scaling), and a SwiGLU MLP.
//! Variable paths equal the HF weight names, so HF safetensors load as they are.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use super::{ForwardInput, KvCache};

mod cpu;
mod decode;
pub use cpu::{CpuLlama, Elements, NamedWeight, StoredMatrix};
pub(crate) use decode::LlamaDecoder;

/// `config.json` as transformers writes it for `LlamaForCausalLM` (4.x and 5.x).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LlamaConfig {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Width of the residual stream.
    pub hidden_size: i64,
    /// Width of the MLP.
    pub intermediate_size: i64,
    /// Number of decoder blocks.
    pub num_hidden_layers: i64,
    /// Number of query heads.
    pub num_attention_heads: i64,
    /// Number of key/value heads (grouped-query attention); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<i64>,
    /// Per-head width; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<i64>,
    /// Longest sequence the positions were trained for.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: i64,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (transformers 4.x spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (transformers 4.x spelling), for example llama3's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeParameters>,
    /// RoPE base and scaling (transformers 5.x spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeParameters>,
    /// Whether the output head shares the embedding matrix.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Whether the attention projections have biases (Qwen2-style).
    #[serde(default)]
    pub attention_bias: bool,
    /// Whether the MLP projections have biases.
    #[serde(default)]
    pub mlp_bias: bool,
    /// Beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    /// End-of-sequence token(s).
    #[serde(default)]
    pub eos_token_id: Option<serde_json::Value>,
    /// Padding token.
    #[serde(default)]
    pub pad_token_id: Option<i64>,
}

fn default_max_positions() -> i64 {
    2048
}

fn default_eps() -> f64 {
    1e-6
}

/// RoPE parameters: the base, and an optional frequency scaling.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RopeParameters {
    /// `default` or `llama3` (others are refused).
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    /// RoPE base (5.x puts it here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// llama3: the context extension factor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    /// llama3: below this many wavelengths per original context, frequencies are scaled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub low_freq_factor: Option<f64>,
    /// llama3: above this, frequencies are kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_freq_factor: Option<f64>,
    /// llama3: the context length the model was pretrained with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_max_position_embeddings: Option<f64>,
}

impl LlamaConfig {
    /// Key/value heads.
    pub fn kv_heads(&self) -> i64 {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// Per-head width.
    pub fn head_width(&self) -> i64 {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// The RoPE base, wherever the config spells it.
    pub fn rope_base(&self) -> f64 {
        self.rope_theta
            .or_else(|| self.rope_parameters.as_ref().and_then(|p| p.rope_theta))
            .unwrap_or(10_000.0)
    }

    fn scaling(&self) -> Option<&RopeParameters> {
        self.rope_scaling.as_ref().or(self.rope_parameters.as_ref())
    }

    /// Elements of the embedding, head and projection matrices, `None` on overflow. Every other
    /// variable is smaller, so loaders refuse a checkpoint holding fewer elements than this
    /// before allocating: a hostile config cannot reserve more memory than the file justifies.
    pub fn matrix_elements(&self) -> Option<u64> {
        let (h, i, layers) = (self.hidden_size, self.intermediate_size, self.num_hidden_layers);
        let q = self.num_attention_heads.checked_mul(self.head_width())?;
        let kv = self.kv_heads().checked_mul(self.head_width())?;
        let heads = if self.tie_word_embeddings { 1 } else { 2 };
        super::checked_elements(&[
            &[heads, self.vocab_size, h],
            &[layers, h, q],
            &[layers, 2, h, kv],
            &[layers, q, h],
            &[layers, 3, h, i],
        ])
    }

    /// Checks the shape arithmetic; returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.kv_heads()),
            ("head_dim", self.head_width()),
        ];
        if let Some((name, value)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(format!("{name} must be positive, got {value}"));
        }
        if self.num_attention_heads % self.kv_heads() != 0 {
            return Err(format!(
                "num_attention_heads ({}) is not a multiple of num_key_value_heads ({})",
                self.num_attention_heads,
                self.kv_heads()
            ));
        }
        if self.head_width() % 2 != 0 {
            return Err(format!(
                "head_dim ({}) must be even for rotary embeddings",
                self.head_width()
            ));
        }
        match self.scaling().and_then(|s| s.rope_type.as_deref()) {
            None | Some("default") | Some("llama3") => Ok(()),
            Some(other) => Err(format!("rope type `{other}` is not supported (default, llama3)")),
        }
    }

    /// Inverse RoPE frequencies, `[head_dim / 2]`, with llama3 scaling where configured.
    pub fn inverse_frequencies(&self) -> Vec<f64> {
        let dim = self.head_width() as f64;
        let base = self.rope_base();
        let mut inv: Vec<f64> = (0..self.head_width() / 2)
            .map(|i| 1.0 / base.powf(2.0 * i as f64 / dim))
            .collect();
        if let Some(s) = self
            .scaling()
            .filter(|s| s.rope_type.as_deref() == Some("llama3"))
        {
            let factor = s.factor.unwrap_or(8.0);
            let low = s.low_freq_factor.unwrap_or(1.0);
            let high = s.high_freq_factor.unwrap_or(4.0);
            let old_context = s.original_max_position_embeddings.unwrap_or(8192.0);
            let (low_wavelen, high_wavelen) = (old_context / low, old_context / high);
            for f in &mut inv {
                let wavelen = 2.0 * std::f64::consts::PI / *f;
                if wavelen > low_wavelen {
                    *f /= factor;
                } else if wavelen >= high_wavelen {
                    let smooth = (old_context / wavelen - low) / (high - low);
                    *f = (1.0 - smooth) * *f / factor + smooth * *f;
                }
            }
        }
        inv
    }
}

/// A Llama-family causal language model.
#[derive(Debug)]
pub struct Llama {
    config: LlamaConfig,
    embed_tokens: nn::Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    /// `None` when the head is tied to the embeddings.
    lm_head: Option<nn::Linear>,
    inv_freq: Tensor,
}

impl Llama {
    /// Creates the model's variables under `root` (HF names: `model.…`, `lm_head`). Weights start
    /// at zero (norms at one): load a checkpoint or call [`crate::model::init_like_transformers`].
    pub fn new(root: &nn::Path<'_>, config: &LlamaConfig) -> Self {
        let model = root / "model";
        let embed_tokens = nn::embedding(
            &model / "embed_tokens",
            config.vocab_size,
            config.hidden_size,
            nn::EmbeddingConfig {
                ws_init: nn::Init::Const(0.0),
                ..Default::default()
            },
        );
        let layers = (0..config.num_hidden_layers)
            .map(|i| Block::new(&(&model / "layers" / i), config))
            .collect();
        let norm = RmsNorm::new(&model / "norm", config.hidden_size, config.rms_norm_eps);
        let lm_head = (!config.tie_word_embeddings).then(|| {
            let no_bias = linear_config(false);
            nn::linear(root / "lm_head", config.hidden_size, config.vocab_size, no_bias)
        });
        let inv_freq = Tensor::from_slice(&config.inverse_frequencies())
            .to_kind(Kind::Float)
            .to_device(root.device());
        Self {
            config: config.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq,
        }
    }

    /// The device holding the weights.
    pub fn device(&self) -> tch::Device {
        self.embed_tokens.ws.device()
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Stacks each block's q/k/v and gate/up projections into one matrix apiece (row-major, or
    /// column-major for libtorch's matrix-vector products): generation then runs two products
    /// where it ran five, which reads the same weights faster. The variables become views of
    /// the stacked matrices, so nothing is stored twice; call it after the weights are loaded
    /// and cast.
    pub fn fuse_projections(&mut self, column_major: bool) {
        for layer in &mut self.layers {
            layer.self_attn.fuse(column_major);
            layer.mlp.fuse(column_major);
        }
    }

    /// Logits for every position, `[batch, seq, vocab]`. Appends to `cache` when given.
    pub fn forward(&self, input: &ForwardInput<'_>, cache: Option<&mut KvCache>) -> Tensor {
        self.head(&self.hidden(input, cache))
    }

    /// Logits `[n, vocab]` of the positions `rows` only (flat indices into `batch * seq`): the
    /// output head, most of a small model's compute, skips the rest (the trainer's prompt tokens).
    pub fn forward_rows(&self, input: &ForwardInput<'_>, rows: &Tensor) -> Tensor {
        let x = self.hidden(input, None);
        let width = x.size()[2];
        self.head(&x.reshape([-1, width]).index_select(0, rows))
    }

    fn head(&self, x: &Tensor) -> Tensor {
        match &self.lm_head {
            Some(head) => x.apply(head),
            None => x.matmul(&self.embed_tokens.ws.tr()),
        }
    }

    /// Final (normed) hidden states, `[batch, seq, hidden]`.
    fn hidden(&self, input: &ForwardInput<'_>, mut cache: Option<&mut KvCache>) -> Tensor {
        let (batch, seq) = input.input_ids.size2().expect("input_ids is [batch, seq]");
        let past = cache.as_ref().map_or(0, |c| c.len());
        let positions = input.positions(past, seq);
        let (cos, sin) = rotary(&positions, &self.inv_freq, self.embed_tokens.ws.kind());
        let mask = input.attention_bias(batch, past, seq);

        let mut x = input.input_ids.apply(&self.embed_tokens);
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(i));
            x = layer.forward(&x, &cos, &sin, mask.as_ref(), layer_cache);
        }
        if let Some(c) = cache {
            c.advance(seq);
        }
        x.apply(&self.norm)
    }
}

/// `cos` and `sin` of the rotary embedding for each position, `[batch, 1, seq, head_dim]`, in
/// `kind` (the model's dtype).
pub(super) fn rotary(positions: &Tensor, inv_freq: &Tensor, kind: Kind) -> (Tensor, Tensor) {
    let freqs = positions.to_kind(Kind::Float).unsqueeze(-1) * inv_freq;
    let emb = Tensor::cat(&[&freqs, &freqs], -1).unsqueeze(1);
    (emb.cos().to_kind(kind), emb.sin().to_kind(kind))
}

/// Linear layers start at zero: weights are loaded or initialised afterwards, and random
/// initialisation of every variable would cost seconds on each load.
pub(super) fn linear_config(bias: bool) -> nn::LinearConfig {
    nn::LinearConfig {
        ws_init: nn::Init::Const(0.0),
        bs_init: Some(nn::Init::Const(0.0)),
        bias,
    }
}

/// Root-mean-square layer norm, computed in f32 as transformers does.
#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(path: nn::Path<'_>, size: i64, eps: f64) -> Self {
        Self {
            weight: path.ones("weight", &[size]),
            eps,
        }
    }
}

impl nn::Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Tensor {
        let kind = x.kind();
        let x32 = x.to_kind(Kind::Float);
        let variance = x32.pow_tensor_scalar(2).mean_dim(-1, true, Kind::Float);
        let normed = x32 * (variance + self.eps).rsqrt();
        &self.weight * normed.to_kind(kind)
    }
}

#[derive(Debug)]
struct Attention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    o_proj: nn::Linear,
    /// `q_proj`, `k_proj` and `v_proj` as one matrix (and bias), once [`Llama::fuse_projections`] ran.
    qkv: Option<(Tensor, Option<Tensor>)>,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
}

impl Attention {
    fn new(path: &nn::Path<'_>, c: &LlamaConfig) -> Self {
        let (heads, kv_heads, head_dim) = (c.num_attention_heads, c.kv_heads(), c.head_width());
        let with_bias = linear_config(c.attention_bias);
        Self {
            q_proj: nn::linear(path / "q_proj", c.hidden_size, heads * head_dim, with_bias),
            k_proj: nn::linear(path / "k_proj", c.hidden_size, kv_heads * head_dim, with_bias),
            v_proj: nn::linear(path / "v_proj", c.hidden_size, kv_heads * head_dim, with_bias),
            o_proj: nn::linear(path / "o_proj", heads * head_dim, c.hidden_size, with_bias),
            qkv: None,
            heads,
            kv_heads,
            head_dim,
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut (Tensor, Tensor)>,
    ) -> Tensor {
        let (batch, seq, _) = x.size3().expect("hidden states are [batch, seq, hidden]");
        let (q, k, v) = match &self.qkv {
            Some((weight, bias)) => self.fused_qkv(&x.linear(weight, bias.as_ref()), cos, sin),
            None => {
                let split =
                    |t: Tensor, heads: i64| t.view([batch, seq, heads, self.head_dim]).transpose(1, 2);
                let q = rotate(&split(x.apply(&self.q_proj), self.heads), cos, sin);
                let k = rotate(&split(x.apply(&self.k_proj), self.kv_heads), cos, sin);
                (q, k, split(x.apply(&self.v_proj), self.kv_heads))
            }
        };
        let (k, v) = super::extend_cache(cache, k, v);
        let gqa = self.heads != self.kv_heads;
        if gqa && seq == 1 && mask.is_none() {
            // One new token that sees every key: the query heads sharing a KV head become rows
            // of one query block against that head, instead of repeating K and V per query head.
            let group = self.heads / self.kv_heads;
            let q = q.reshape([batch, self.kv_heads, group, self.head_dim]);
            let out =
                Tensor::scaled_dot_product_attention(&q, &k, &v, None::<&Tensor>, 0.0, false, None, false);
            return out
                .reshape([batch, 1, self.heads * self.head_dim])
                .apply(&self.o_proj);
        }
        // Without a mask (one sequence, no cache) the kernel's own causal path is fastest.
        let causal = mask.is_none() && k.size()[2] == seq;
        let out = Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, causal, None, gqa);
        out.transpose(1, 2)
            .reshape([batch, seq, self.heads * self.head_dim])
            .apply(&self.o_proj)
    }

    /// Splits one fused projection `[batch, seq, (heads + 2 kv_heads) · head_dim]` into rotated
    /// `q`, `k` and plain `v` (`[batch, heads, seq, head_dim]`), rotating `q` and `k` together.
    fn fused_qkv(&self, qkv: &Tensor, cos: &Tensor, sin: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (batch, seq, _) = qkv.size3().expect("projections are [batch, seq, width]");
        let heads = qkv.view([batch, seq, self.heads + 2 * self.kv_heads, self.head_dim]);
        let qk = heads.narrow(2, 0, self.heads + self.kv_heads);
        let qk = rotate(&qk, &cos.transpose(1, 2), &sin.transpose(1, 2));
        let q = qk.narrow(2, 0, self.heads).transpose(1, 2);
        let k = qk.narrow(2, self.heads, self.kv_heads).transpose(1, 2);
        let v = heads
            .narrow(2, self.heads + self.kv_heads, self.kv_heads)
            .transpose(1, 2);
        (q, k, v)
    }

    fn fuse(&mut self, column_major: bool) {
        self.qkv = Some(fuse_linears(
            &[&self.q_proj, &self.k_proj, &self.v_proj],
            column_major,
        ));
    }
}

/// Stacks linear layers that read the same input into one matrix (and bias), and re-points each
/// layer's variables at their rows of it, so the weights are stored once and stay shared with
/// the variable store.
pub(super) fn fuse_linears(parts: &[&nn::Linear], column_major: bool) -> (Tensor, Option<Tensor>) {
    let _guard = tch::no_grad_guard();
    let weights: Vec<&Tensor> = parts.iter().map(|p| &p.ws).collect();
    let mut weight = Tensor::cat(&weights, 0);
    if column_major {
        weight = weight.tr().contiguous().tr();
    }
    let biases: Option<Vec<&Tensor>> = parts.iter().map(|p| p.bs.as_ref()).collect();
    let bias = biases.map(|b| Tensor::cat(&b, 0));
    let mut offset = 0;
    for part in parts {
        let rows = part.ws.size()[0];
        part.ws.shallow_clone().set_data(&weight.narrow(0, offset, rows));
        if let (Some(own), Some(all)) = (&part.bs, &bias) {
            own.shallow_clone().set_data(&all.narrow(0, offset, rows));
        }
        offset += rows;
    }
    (weight, bias)
}

/// Applies rotary embeddings: `x * cos + rotate_half(x) * sin`.
pub(super) fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size()[3] / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    let rotated = Tensor::cat(&[&(-x2), &x1], -1);
    x * cos + rotated * sin
}

/// The gate's activation in a gated MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Activation {
    /// SwiGLU (Llama).
    Silu,
    /// GeGLU with the tanh-approximated GELU (Gemma).
    GeluTanh,
}

/// A gated MLP: `down(act(gate(x)) · up(x))`.
#[derive(Debug)]
pub(super) struct Mlp {
    gate_proj: nn::Linear,
    up_proj: nn::Linear,
    down_proj: nn::Linear,
    /// `gate_proj` and `up_proj` as one matrix (and bias), once [`Mlp::fuse`] ran.
    gate_up: Option<(Tensor, Option<Tensor>)>,
    activation: Activation,
}

impl Mlp {
    /// An MLP of `hidden → intermediate → hidden` under `path` (HF names `gate_proj`, …).
    pub(super) fn new(
        path: &nn::Path<'_>,
        hidden: i64,
        intermediate: i64,
        bias: bool,
        activation: Activation,
    ) -> Self {
        let cfg = linear_config(bias);
        Self {
            gate_proj: nn::linear(path / "gate_proj", hidden, intermediate, cfg),
            up_proj: nn::linear(path / "up_proj", hidden, intermediate, cfg),
            down_proj: nn::linear(path / "down_proj", intermediate, hidden, cfg),
            gate_up: None,
            activation,
        }
    }

    /// Stacks `gate_proj` and `up_proj` into one matrix (see [`fuse_linears`]).
    pub(super) fn fuse(&mut self, column_major: bool) {
        self.gate_up = Some(fuse_linears(&[&self.gate_proj, &self.up_proj], column_major));
    }
}

impl nn::Module for Mlp {
    fn forward(&self, x: &Tensor) -> Tensor {
        let (gate, up) = match &self.gate_up {
            Some((weight, bias)) => {
                let both = x.linear(weight, bias.as_ref());
                let width = both.size()[2] / 2;
                (both.narrow(2, 0, width), both.narrow(2, width, width))
            }
            None => (x.apply(&self.gate_proj), x.apply(&self.up_proj)),
        };
        let activated = match self.activation {
            Activation::Silu => gate.silu(),
            Activation::GeluTanh => gate.gelu("tanh"),
        };
        (activated * up).apply(&self.down_proj)
    }
}

#[derive(Debug)]
struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    mlp: Mlp,
}

impl Block {
    fn new(path: &nn::Path<'_>, c: &LlamaConfig) -> Self {
        Self {
            input_layernorm: RmsNorm::new(path / "input_layernorm", c.hidden_size, c.rms_norm_eps),
            self_attn: Attention::new(&(path / "self_attn"), c),
            post_attention_layernorm: RmsNorm::new(
                path / "post_attention_layernorm",
                c.hidden_size,
                c.rms_norm_eps,
            ),
            mlp: Mlp::new(
                &(path / "mlp"),
                c.hidden_size,
                c.intermediate_size,
                c.mlp_bias,
                Activation::Silu,
            ),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut (Tensor, Tensor)>,
    ) -> Tensor {
        let h = x + self
            .self_attn
            .forward(&x.apply(&self.input_layernorm), cos, sin, mask, cache);
        &h + h.apply(&self.post_attention_layernorm).apply(&self.mlp)
    }
}
