//! Gemma 3 (text): Gemma Team, "Gemma 3 Technical Report" (2025); reference implementation:
//! transformers' `models/gemma3/modeling_gemma3.py` (`Gemma3ForCausalLM`).
//!
//! A Llama-shaped decoder with these differences, each checked against transformers:
//! - embeddings scaled by √hidden;
//! - RMSNorm multiplies by `1 + weight` (weights are stored as offsets from one);
//! - four norms per block: before and after attention, before and after the MLP;
//! - RMSNorm on each query and key head before the rotation, and scores scaled by
//!   `query_pre_attn_scalar^-½` instead of `head_dim^-½`;
//! - a GeGLU MLP (tanh-approximated GELU);
//! - interleaved attention: most layers see a sliding window of the last `sliding_window`
//!   positions, with their own RoPE base; the others attend globally.
//!
//! Variable paths equal the HF weight names, so HF safetensors load as they are.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor, nn};

use super::llama::{Activation, Mlp, RopeParameters, fuse_linears, linear_config, rotary, rotate};
use super::{ForwardInput, KvCache};

/// `config.json` as transformers writes it for `Gemma3ForCausalLM` (`model_type` `gemma3_text`),
/// 4.x and 5.x spellings.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gemma3Config {
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
    /// Number of key/value heads.
    pub num_key_value_heads: i64,
    /// Per-head width.
    pub head_dim: i64,
    /// Longest sequence the positions were trained for.
    #[serde(default = "default_max_positions")]
    pub max_position_embeddings: i64,
    /// RMSNorm epsilon.
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    /// Attention scores are scaled by `query_pre_attn_scalar^-½` (an integer, as transformers
    /// validates it).
    pub query_pre_attn_scalar: i64,
    /// How many positions a sliding-window layer sees, itself included.
    pub sliding_window: i64,
    /// `sliding_attention` or `full_attention` for each layer (5.x); derived from
    /// `sliding_window_pattern` when absent (4.x).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_types: Option<Vec<String>>,
    /// 4.x: every this-many-th layer attends globally.
    #[serde(
        default,
        alias = "_sliding_window_pattern",
        skip_serializing_if = "Option::is_none"
    )]
    pub sliding_window_pattern: Option<i64>,
    /// RoPE base of global layers (4.x spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    /// RoPE base of sliding-window layers (4.x spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_local_base_freq: Option<f64>,
    /// RoPE scaling of global layers (4.x spelling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeParameters>,
    /// RoPE parameters per layer type (5.x spelling): `full_attention` and `sliding_attention`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<std::collections::BTreeMap<String, RopeParameters>>,
    /// Soft cap of the final logits (`None` in Gemma 3).
    #[serde(default)]
    pub final_logit_softcapping: Option<f64>,
    /// Soft cap of the attention scores (`None` in Gemma 3).
    #[serde(default)]
    pub attn_logit_softcapping: Option<f64>,
    /// The MLP's activation: only `gelu_pytorch_tanh`.
    #[serde(default = "default_activation")]
    pub hidden_activation: String,
    /// Whether the output head shares the embedding matrix.
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Whether the attention projections have biases.
    #[serde(default)]
    pub attention_bias: bool,
    /// Bidirectional attention (EmbeddingGemma); refused.
    #[serde(default)]
    pub use_bidirectional_attention: bool,
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
    32_768
}

fn default_eps() -> f64 {
    1e-6
}

fn default_activation() -> String {
    "gelu_pytorch_tanh".into()
}

fn default_true() -> bool {
    true
}

/// `layer_types` entry of a sliding-window layer.
const SLIDING: &str = "sliding_attention";
/// `layer_types` entry of a global layer.
const FULL: &str = "full_attention";

impl Gemma3Config {
    /// Whether layer `i` attends through a sliding window.
    pub fn is_sliding(&self, layer: usize) -> bool {
        match &self.layer_types {
            Some(types) => types.get(layer).is_some_and(|t| t == SLIDING),
            None => {
                let pattern = self.sliding_window_pattern.unwrap_or(6).max(1) as usize;
                !(layer + 1).is_multiple_of(pattern)
            }
        }
    }

    /// Each layer's type, spelled as `layer_types` spells it.
    pub fn layer_type_names(&self) -> Vec<String> {
        (0..self.num_hidden_layers as usize)
            .map(|i| if self.is_sliding(i) { SLIDING } else { FULL }.to_string())
            .collect()
    }

    /// The RoPE parameters of global (`sliding == false`) or sliding-window layers.
    fn rope(&self, sliding: bool) -> RopeParameters {
        let key = if sliding { SLIDING } else { FULL };
        if let Some(p) = self.rope_parameters.as_ref().and_then(|m| m.get(key)) {
            return p.clone();
        }
        let mut p = if sliding {
            RopeParameters::default()
        } else {
            self.rope_scaling.clone().unwrap_or_default()
        };
        p.rope_theta = Some(if sliding {
            self.rope_local_base_freq.unwrap_or(10_000.0)
        } else {
            self.rope_theta.unwrap_or(1_000_000.0)
        });
        p
    }

    /// Inverse RoPE frequencies, `[head_dim / 2]`, of global or sliding-window layers.
    pub fn inverse_frequencies(&self, sliding: bool) -> Vec<f64> {
        let p = self.rope(sliding);
        let base = p.rope_theta.unwrap_or(10_000.0);
        let factor = match p.rope_type.as_deref() {
            Some("linear") => p.factor.unwrap_or(1.0),
            _ => 1.0,
        };
        let dim = self.head_dim as f64;
        (0..self.head_dim / 2)
            .map(|i| 1.0 / base.powf(2.0 * i as f64 / dim) / factor)
            .collect()
    }

    /// Elements of the embedding, head and projection matrices, `None` on overflow (see
    /// [`super::LlamaConfig::matrix_elements`]).
    pub fn matrix_elements(&self) -> Option<u64> {
        let (h, i, layers) = (self.hidden_size, self.intermediate_size, self.num_hidden_layers);
        let q = self.num_attention_heads.checked_mul(self.head_dim)?;
        let kv = self.num_key_value_heads.checked_mul(self.head_dim)?;
        let heads = if self.tie_word_embeddings { 1 } else { 2 };
        super::checked_elements(&[
            &[heads, self.vocab_size, h],
            &[layers, h, q],
            &[layers, 2, h, kv],
            &[layers, q, h],
            &[layers, 3, h, i],
        ])
    }

    /// Checks the shape arithmetic and refuses what is not implemented; returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("sliding_window", self.sliding_window),
        ];
        if let Some((name, value)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(format!("{name} must be positive, got {value}"));
        }
        if self.num_attention_heads % self.num_key_value_heads != 0 || self.head_dim % 2 != 0 {
            return Err(format!(
                "num_attention_heads ({}) must be a multiple of num_key_value_heads ({}), and head_dim ({}) even",
                self.num_attention_heads, self.num_key_value_heads, self.head_dim
            ));
        }
        if self.query_pre_attn_scalar <= 0 {
            return Err(format!(
                "query_pre_attn_scalar must be positive, got {}",
                self.query_pre_attn_scalar
            ));
        }
        if let Some(types) = &self.layer_types
            && (types.len() != self.num_hidden_layers as usize
                || types.iter().any(|t| t != SLIDING && t != FULL))
        {
            return Err(format!(
                "layer_types must name {SLIDING} or {FULL} for each of the {} layers",
                self.num_hidden_layers
            ));
        }
        if self.hidden_activation != "gelu_pytorch_tanh" {
            return Err(format!(
                "hidden_activation `{}` is not supported (gelu_pytorch_tanh)",
                self.hidden_activation
            ));
        }
        if self.attn_logit_softcapping.is_some() {
            return Err("attention logit soft-capping (Gemma 2) is not supported".into());
        }
        if self.use_bidirectional_attention {
            return Err("bidirectional attention (EmbeddingGemma) is not a causal language model".into());
        }
        for sliding in [false, true] {
            match self.rope(sliding).rope_type.as_deref() {
                None | Some("default") | Some("linear") => {}
                Some(other) => return Err(format!("rope type `{other}` is not supported (default, linear)")),
            }
        }
        Ok(())
    }
}

/// A Gemma 3 causal language model.
#[derive(Debug)]
pub struct Gemma3 {
    config: Gemma3Config,
    embed_tokens: nn::Embedding,
    layers: Vec<Block>,
    norm: RmsNorm,
    /// `None` when the head is tied to the embeddings.
    lm_head: Option<nn::Linear>,
    /// Inverse RoPE frequencies of global and of sliding-window layers.
    inv_freq: (Tensor, Tensor),
}

impl Gemma3 {
    /// Creates the model's variables under `root` (HF names: `model.…`, `lm_head`). Weights start
    /// at zero (so norms at one): load a checkpoint before use.
    pub fn new(root: &nn::Path<'_>, config: &Gemma3Config) -> Self {
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
            .map(|i| Block::new(&(&model / "layers" / i), config, config.is_sliding(i as usize)))
            .collect();
        let norm = RmsNorm::new(&model / "norm", config.hidden_size, config.rms_norm_eps);
        let lm_head = (!config.tie_word_embeddings).then(|| {
            nn::linear(
                root / "lm_head",
                config.hidden_size,
                config.vocab_size,
                linear_config(false),
            )
        });
        let frequencies = |sliding| {
            Tensor::from_slice(&config.inverse_frequencies(sliding))
                .to_kind(Kind::Float)
                .to_device(root.device())
        };
        Self {
            config: config.clone(),
            embed_tokens,
            layers,
            norm,
            lm_head,
            inv_freq: (frequencies(false), frequencies(true)),
        }
    }

    /// The device holding the weights.
    pub fn device(&self) -> tch::Device {
        self.embed_tokens.ws.device()
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &Gemma3Config {
        &self.config
    }

    /// Stacks each block's q/k/v and gate/up projections into one matrix apiece, as
    /// [`super::Llama::fuse_projections`] does.
    pub fn fuse_projections(&mut self, column_major: bool) {
        for layer in &mut self.layers {
            layer.self_attn.qkv = Some(fuse_linears(
                &[
                    &layer.self_attn.q_proj,
                    &layer.self_attn.k_proj,
                    &layer.self_attn.v_proj,
                ],
                column_major,
            ));
            layer.mlp.fuse(column_major);
        }
    }

    /// Logits for every position, `[batch, seq, vocab]`. Appends to `cache` when given.
    pub fn forward(&self, input: &ForwardInput<'_>, cache: Option<&mut KvCache>) -> Tensor {
        self.head(&self.hidden(input, cache))
    }

    /// Logits `[n, vocab]` of the positions `rows` only (flat indices into `batch * seq`).
    pub fn forward_rows(&self, input: &ForwardInput<'_>, rows: &Tensor) -> Tensor {
        let x = self.hidden(input, None);
        let width = x.size()[2];
        self.head(&x.reshape([-1, width]).index_select(0, rows))
    }

    fn head(&self, x: &Tensor) -> Tensor {
        let logits = match &self.lm_head {
            Some(head) => x.apply(head),
            None => x.matmul(&self.embed_tokens.ws.tr()),
        };
        match self.config.final_logit_softcapping {
            Some(cap) => (logits / cap).tanh() * cap,
            None => logits,
        }
    }

    /// Final (normed) hidden states, `[batch, seq, hidden]`.
    fn hidden(&self, input: &ForwardInput<'_>, mut cache: Option<&mut KvCache>) -> Tensor {
        let (batch, seq) = input.input_ids.size2().expect("input_ids is [batch, seq]");
        let past = cache.as_ref().map_or(0, |c| c.len());
        let positions = input.positions(past, seq);
        let kind = self.embed_tokens.ws.kind();
        let rotary = |inv_freq: &Tensor| rotary(&positions, inv_freq, kind);
        let (global, local) = (rotary(&self.inv_freq.0), rotary(&self.inv_freq.1));
        let full_mask = input.attention_bias(batch, past, seq);
        let window_mask = sliding_window_mask(input, batch, past, seq, self.config.sliding_window);

        let embedded = input.input_ids.apply(&self.embed_tokens);
        // transformers rounds √hidden to the weights' dtype before multiplying.
        let scale = Tensor::from((self.config.hidden_size as f64).sqrt()).to_kind(embedded.kind());
        let mut x = embedded * scale.to_device(self.device());
        for (i, layer) in self.layers.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(i));
            let (cos_sin, mask) = if layer.sliding {
                (&local, window_mask.as_ref())
            } else {
                (&global, full_mask.as_ref())
            };
            x = layer.forward(&x, cos_sin, mask, layer_cache);
        }
        if let Some(c) = cache {
            c.advance(seq);
        }
        x.apply(&self.norm)
    }
}

/// The causal mask of [`ForwardInput::attention_bias`], less every key `window` or more
/// positions behind its query; `None` while no key is that far back and no mask is needed.
fn sliding_window_mask(
    input: &ForwardInput<'_>,
    batch: i64,
    past: i64,
    seq: i64,
    window: i64,
) -> Option<Tensor> {
    let causal = input.attention_bias(batch, past, seq);
    if past + seq <= window {
        return causal;
    }
    let device = input.input_ids.device();
    let query = Tensor::arange_start(past, past + seq, (Kind::Int64, device)).unsqueeze(1);
    let key = Tensor::arange(past + seq, (Kind::Int64, device)).unsqueeze(0);
    let near = (&query - &key).lt(window).logical_and(&key.le_tensor(&query));
    let near = near.view([1, 1, seq, past + seq]);
    Some(match causal {
        Some(mask) => mask.logical_and(&near),
        None => near.expand([batch, 1, seq, past + seq], false),
    })
}

/// Gemma's RMSNorm: `x / rms(x) · (1 + weight)`, in f32 as transformers computes it.
#[derive(Debug)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(path: nn::Path<'_>, size: i64, eps: f64) -> Self {
        Self {
            weight: path.zeros("weight", &[size]),
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
        (normed * (self.weight.to_kind(Kind::Float) + 1.0)).to_kind(kind)
    }
}

#[derive(Debug)]
struct Attention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    o_proj: nn::Linear,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    /// `q_proj`, `k_proj` and `v_proj` as one matrix (and bias), once fused.
    qkv: Option<(Tensor, Option<Tensor>)>,
    heads: i64,
    kv_heads: i64,
    head_dim: i64,
    scale: f64,
}

impl Attention {
    fn new(path: &nn::Path<'_>, c: &Gemma3Config) -> Self {
        let (heads, kv_heads, head_dim) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
        let with_bias = linear_config(c.attention_bias);
        Self {
            q_proj: nn::linear(path / "q_proj", c.hidden_size, heads * head_dim, with_bias),
            k_proj: nn::linear(path / "k_proj", c.hidden_size, kv_heads * head_dim, with_bias),
            v_proj: nn::linear(path / "v_proj", c.hidden_size, kv_heads * head_dim, with_bias),
            o_proj: nn::linear(path / "o_proj", heads * head_dim, c.hidden_size, with_bias),
            q_norm: RmsNorm::new(path / "q_norm", head_dim, c.rms_norm_eps),
            k_norm: RmsNorm::new(path / "k_norm", head_dim, c.rms_norm_eps),
            qkv: None,
            heads,
            kv_heads,
            head_dim,
            scale: (c.query_pre_attn_scalar as f64).powf(-0.5),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        (cos, sin): &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cache: Option<&mut (Tensor, Tensor)>,
    ) -> Tensor {
        let (batch, seq, _) = x.size3().expect("hidden states are [batch, seq, hidden]");
        let split = |t: Tensor, heads: i64| t.view([batch, seq, heads, self.head_dim]).transpose(1, 2);
        let (q, k, v) = match &self.qkv {
            Some((weight, bias)) => {
                let all = x.linear(weight, bias.as_ref());
                let widths = [self.heads, self.kv_heads, self.kv_heads].map(|h| h * self.head_dim);
                let parts = all.split_with_sizes(widths, 2);
                let [q, k, v] = <[Tensor; 3]>::try_from(parts).expect("three parts");
                (
                    split(q, self.heads),
                    split(k, self.kv_heads),
                    split(v, self.kv_heads),
                )
            }
            None => (
                split(x.apply(&self.q_proj), self.heads),
                split(x.apply(&self.k_proj), self.kv_heads),
                split(x.apply(&self.v_proj), self.kv_heads),
            ),
        };
        let q = rotate(&q.apply(&self.q_norm), cos, sin);
        let k = rotate(&k.apply(&self.k_norm), cos, sin);
        let (k, v) = super::extend_cache(cache, k, v);
        let gqa = self.heads != self.kv_heads;
        let causal = mask.is_none() && k.size()[2] == seq;
        let out = Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, causal, Some(self.scale), gqa);
        out.transpose(1, 2)
            .reshape([batch, seq, self.heads * self.head_dim])
            .apply(&self.o_proj)
    }
}

#[derive(Debug)]
struct Block {
    input_layernorm: RmsNorm,
    self_attn: Attention,
    post_attention_layernorm: RmsNorm,
    pre_feedforward_layernorm: RmsNorm,
    mlp: Mlp,
    post_feedforward_layernorm: RmsNorm,
    sliding: bool,
}

impl Block {
    fn new(path: &nn::Path<'_>, c: &Gemma3Config, sliding: bool) -> Self {
        let norm = |name: &str| RmsNorm::new(path / name, c.hidden_size, c.rms_norm_eps);
        Self {
            input_layernorm: norm("input_layernorm"),
            self_attn: Attention::new(&(path / "self_attn"), c),
            post_attention_layernorm: norm("post_attention_layernorm"),
            pre_feedforward_layernorm: norm("pre_feedforward_layernorm"),
            mlp: Mlp::new(
                &(path / "mlp"),
                c.hidden_size,
                c.intermediate_size,
                false,
                Activation::GeluTanh,
            ),
            post_feedforward_layernorm: norm("post_feedforward_layernorm"),
            sliding,
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        cos_sin: &(Tensor, Tensor),
        mask: Option<&Tensor>,
        cache: Option<&mut (Tensor, Tensor)>,
    ) -> Tensor {
        let attended = self
            .self_attn
            .forward(&x.apply(&self.input_layernorm), cos_sin, mask, cache);
        let h = x + attended.apply(&self.post_attention_layernorm);
        let mlp = h.apply(&self.pre_feedforward_layernorm).apply(&self.mlp);
        &h + mlp.apply(&self.post_feedforward_layernorm)
    }
}
