//! The GPT-2 family (gpt2, distilgpt2).
//!
//! Radford et al., "Language Models are Unsupervised Multitask Learners" (2019); reference
//! implementation: transformers' `models/gpt2/modeling_gpt2.py`. Learned absolute positions,
//! pre-norm blocks with LayerNorm, fused QKV, a GELU (tanh) MLP, and a head tied to the
//! token embeddings. Projections are `Conv1D`s that keep HF's `[in, out]` weight layout, so
//! HF safetensors load without a transpose.

use serde::{Deserialize, Serialize};
use tch::{Tensor, nn};

use super::{ForwardInput, KvCache};

mod decode;
pub(crate) use decode::Gpt2Decoder;

/// `config.json` as transformers writes it for `GPT2LMHeadModel`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Gpt2Config {
    /// Vocabulary size.
    pub vocab_size: i64,
    /// Number of learned positions.
    pub n_positions: i64,
    /// Width of the residual stream.
    pub n_embd: i64,
    /// Number of blocks.
    pub n_layer: i64,
    /// Number of attention heads.
    pub n_head: i64,
    /// Width of the MLP; defaults to `4 * n_embd`.
    #[serde(default)]
    pub n_inner: Option<i64>,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Activation; only GPT-2's `gelu_new` (tanh approximation) and exact `gelu` are supported.
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Beginning-of-sequence token.
    #[serde(default)]
    pub bos_token_id: Option<i64>,
    /// End-of-sequence token.
    #[serde(default)]
    pub eos_token_id: Option<i64>,
}

fn default_eps() -> f64 {
    1e-5
}

fn default_activation() -> String {
    "gelu_new".into()
}

impl Gpt2Config {
    /// Width of the MLP.
    pub fn inner(&self) -> i64 {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    /// Elements of the embedding and projection matrices, `None` on overflow. Every other
    /// variable is smaller, so loaders refuse a checkpoint holding fewer elements than this
    /// before allocating: a hostile config cannot reserve more memory than the file justifies.
    pub fn matrix_elements(&self) -> Option<u64> {
        let (e, layers) = (self.n_embd, self.n_layer);
        super::checked_elements(&[
            &[self.vocab_size, e],
            &[self.n_positions, e],
            &[layers, 4, e, e],
            &[layers, 2, e, self.inner()],
        ])
    }

    /// Checks the shape arithmetic; returns what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("n_positions", self.n_positions),
            ("n_embd", self.n_embd),
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
        ];
        if let Some((name, value)) = positive.iter().find(|(_, v)| *v <= 0) {
            return Err(format!("{name} must be positive, got {value}"));
        }
        if self.n_embd % self.n_head != 0 {
            return Err(format!(
                "n_embd ({}) is not a multiple of n_head ({})",
                self.n_embd, self.n_head
            ));
        }
        match self.activation_function.as_str() {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu" => Ok(()),
            other => Err(format!("activation `{other}` is not supported (gelu_new, gelu)")),
        }
    }
}

/// A GPT-2 causal language model.
#[derive(Debug)]
pub struct Gpt2 {
    config: Gpt2Config,
    wte: nn::Embedding,
    wpe: nn::Embedding,
    blocks: Vec<Block>,
    ln_f: nn::LayerNorm,
}

impl Gpt2 {
    /// Creates the model's variables under `root` (HF names: `transformer.…`), all zero
    /// (norm weights one): load a checkpoint or initialise them afterwards.
    pub fn new(root: &nn::Path<'_>, config: &Gpt2Config) -> Self {
        let t = root / "transformer";
        let zero = nn::EmbeddingConfig {
            ws_init: nn::Init::Const(0.0),
            ..Default::default()
        };
        let wte = nn::embedding(&t / "wte", config.vocab_size, config.n_embd, zero);
        let wpe = nn::embedding(&t / "wpe", config.n_positions, config.n_embd, zero);
        let blocks = (0..config.n_layer)
            .map(|i| Block::new(&(&t / "h" / i), config))
            .collect();
        let ln_f = layer_norm(&t / "ln_f", config);
        Self {
            config: config.clone(),
            wte,
            wpe,
            blocks,
            ln_f,
        }
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &Gpt2Config {
        &self.config
    }

    /// The device holding the weights.
    pub fn device(&self) -> tch::Device {
        self.wte.ws.device()
    }

    /// Stores each Conv1D weight (`[in, out]`) column-major, so that the rows of `[out, in]`
    /// that one output reads are contiguous: the layout the CPU decoder's matrix-vector
    /// products stream. Shapes, values and saved files are unchanged.
    pub fn store_projections_for_decoding(&mut self) {
        let _guard = tch::no_grad_guard();
        for block in &self.blocks {
            for conv in [&block.c_attn, &block.attn_proj, &block.c_fc, &block.mlp_proj] {
                if conv.weight.stride()[0] != 1 {
                    let column_major = conv.weight.tr().contiguous().tr();
                    conv.weight.shallow_clone().set_data(&column_major);
                }
            }
        }
    }

    /// Logits for every position, `[batch, seq, vocab]`. Appends to `cache` when given.
    pub fn forward(&self, input: &ForwardInput<'_>, cache: Option<&mut KvCache>) -> Tensor {
        self.hidden(input, cache).matmul(&self.wte.ws.tr())
    }

    /// Logits `[n, vocab]` of the positions `rows` only (flat indices into `batch * seq`).
    pub fn forward_rows(&self, input: &ForwardInput<'_>, rows: &Tensor) -> Tensor {
        let x = self.hidden(input, None);
        let width = x.size()[2];
        x.reshape([-1, width])
            .index_select(0, rows)
            .matmul(&self.wte.ws.tr())
    }

    /// Final (normed) hidden states, `[batch, seq, hidden]`.
    fn hidden(&self, input: &ForwardInput<'_>, mut cache: Option<&mut KvCache>) -> Tensor {
        let (batch, seq) = input.input_ids.size2().expect("input_ids is [batch, seq]");
        let past = cache.as_ref().map_or(0, |c| c.len());
        let positions = input.positions(past, seq);
        let mask = input.attention_bias(batch, past, seq);
        let mut x = input.input_ids.apply(&self.wte) + positions.apply(&self.wpe);
        for (i, block) in self.blocks.iter().enumerate() {
            let layer_cache = cache.as_deref_mut().map(|c| c.layer_mut(i));
            x = block.forward(&x, mask.as_ref(), layer_cache, &self.config);
        }
        if let Some(c) = cache {
            c.advance(seq);
        }
        x.apply(&self.ln_f)
    }
}

fn layer_norm(path: nn::Path<'_>, c: &Gpt2Config) -> nn::LayerNorm {
    nn::layer_norm(
        path,
        vec![c.n_embd],
        nn::LayerNormConfig {
            eps: c.layer_norm_epsilon,
            ..Default::default()
        },
    )
}

/// HF's `Conv1D`: `y = x @ weight + bias` with `weight: [in, out]`.
#[derive(Debug)]
struct Conv1d {
    weight: Tensor,
    bias: Tensor,
}

impl Conv1d {
    fn new(path: nn::Path<'_>, inputs: i64, outputs: i64) -> Self {
        Self {
            weight: path.zeros("weight", &[inputs, outputs]),
            bias: path.zeros("bias", &[outputs]),
        }
    }
}

impl nn::Module for Conv1d {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.matmul(&self.weight) + &self.bias
    }
}

#[derive(Debug)]
struct Block {
    ln_1: nn::LayerNorm,
    c_attn: Conv1d,
    attn_proj: Conv1d,
    ln_2: nn::LayerNorm,
    c_fc: Conv1d,
    mlp_proj: Conv1d,
}

impl Block {
    fn new(path: &nn::Path<'_>, c: &Gpt2Config) -> Self {
        Self {
            ln_1: layer_norm(path / "ln_1", c),
            c_attn: Conv1d::new(path / "attn" / "c_attn", c.n_embd, 3 * c.n_embd),
            attn_proj: Conv1d::new(path / "attn" / "c_proj", c.n_embd, c.n_embd),
            ln_2: layer_norm(path / "ln_2", c),
            c_fc: Conv1d::new(path / "mlp" / "c_fc", c.n_embd, c.inner()),
            mlp_proj: Conv1d::new(path / "mlp" / "c_proj", c.inner(), c.n_embd),
        }
    }

    fn forward(
        &self,
        x: &Tensor,
        mask: Option<&Tensor>,
        cache: Option<&mut (Tensor, Tensor)>,
        c: &Gpt2Config,
    ) -> Tensor {
        let (batch, seq, width) = x.size3().expect("hidden states are [batch, seq, hidden]");
        let head_dim = width / c.n_head;
        let qkv = x.apply(&self.ln_1).apply(&self.c_attn).split(width, -1);
        let heads = |t: &Tensor| t.view([batch, seq, c.n_head, head_dim]).transpose(1, 2);
        let q = heads(&qkv[0]);
        let k = heads(&qkv[1]);
        let v = heads(&qkv[2]);
        let (k, v) = super::extend_cache(cache, k, v);
        let causal = mask.is_none() && k.size()[2] == seq;
        let attn = Tensor::scaled_dot_product_attention(&q, &k, &v, mask, 0.0, causal, None, false);
        let attn = attn
            .transpose(1, 2)
            .reshape([batch, seq, width])
            .apply(&self.attn_proj);
        let h = x + attn;
        let approximate = if c.activation_function == "gelu" {
            "none"
        } else {
            "tanh"
        };
        let mlp = h
            .apply(&self.ln_2)
            .apply(&self.c_fc)
            .gelu(approximate)
            .apply(&self.mlp_proj);
        &h + mlp
    }
}
