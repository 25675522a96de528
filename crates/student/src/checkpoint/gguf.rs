//! Loading llama.cpp GGUF files: configuration from metadata, weights dequantized to f32,
//! llama.cpp's tensor names mapped to HF names, and its Q/K row permutation undone.

use std::path::Path;

use distill_gguf::{GgufFile, TensorInfo};
use tch::{Device, Kind, Tensor};

use super::{LoadedModel, assign_weights, check_config_fits};
use crate::error::{Error, Result};
use crate::model::LlamaConfig;

/// Reads the model configuration from GGUF metadata (the `llama` architecture).
pub fn llama_config(gguf: &GgufFile) -> Result<LlamaConfig> {
    let arch = gguf.architecture()?;
    if arch != "llama" {
        return Err(Error::UnsupportedArchitecture(arch.to_string()));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let int = |k: &str| -> Result<i64> { Ok(gguf.get_u64(&key(k))? as i64) };
    let vocab_size = match gguf.get(&key("vocab_size")).and_then(|v| v.as_u64()) {
        Some(n) => n as i64,
        None => gguf.get_strings("tokenizer.ggml.tokens")?.len() as i64,
    };
    let heads = int("attention.head_count")?;
    let token_id = |k: &str| gguf.get(k).and_then(|v| v.as_u64()).map(|v| v as i64);
    Ok(LlamaConfig {
        vocab_size,
        hidden_size: int("embedding_length")?,
        intermediate_size: int("feed_forward_length")?,
        num_hidden_layers: int("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(int("attention.head_count_kv").unwrap_or(heads)),
        head_dim: None,
        max_position_embeddings: int("context_length").unwrap_or(2048),
        rms_norm_eps: gguf.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
        rope_theta: Some(gguf.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0)),
        rope_scaling: None,
        rope_parameters: None,
        tie_word_embeddings: gguf.tensor("output.weight").is_none(),
        attention_bias: gguf.tensor("blk.0.attn_q.bias").is_some(),
        mlp_bias: false,
        bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
        eos_token_id: token_id("tokenizer.ggml.eos_token_id").map(Into::into),
        pad_token_id: token_id("tokenizer.ggml.padding_token_id"),
    })
}

/// Loads a GGUF model onto `device` in f32.
pub fn load_gguf(path: &Path, device: Device) -> Result<LoadedModel> {
    load(path, device).map_err(|e| match e {
        // An I/O error names the file already.
        Error::Gguf(source) if source.kind() != distill_gguf::ErrorKind::Io => Error::GgufFile {
            path: path.into(),
            source,
        },
        other => other,
    })
}

fn load(path: &Path, device: Device) -> Result<LoadedModel> {
    let gguf = GgufFile::read_header(path)?;
    let config = llama_config(&gguf)?;
    // Tensor sizes are checked against the file length, so this bounds what the model allocates.
    check_config_fits(config.matrix_elements(), gguf.parameter_count(), path)?;
    let loaded = LoadedModel::new_llama(config, device, path.to_path_buf())?;
    let mut file = gguf.open()?;
    let config = loaded.llama_config("GGUF loading")?;
    let (heads, kv_heads) = (config.num_attention_heads, config.kv_heads());
    let tensors = gguf
        .tensors
        .iter()
        .filter(|t| t.name != "rope_freqs.weight")
        .map(|info| {
            let name = hf_name(&info.name).ok_or_else(|| Error::Weights {
                path: path.into(),
                reason: format!("unknown GGUF tensor `{}`", info.name),
            })?;
            let mut tensor = read_tensor(&gguf, &mut file, info)?;
            if name.ends_with("q_proj.weight") || name.ends_with("q_proj.bias") {
                tensor = unpermute(&tensor, heads);
            } else if name.ends_with("k_proj.weight") || name.ends_with("k_proj.bias") {
                tensor = unpermute(&tensor, kv_heads);
            }
            Ok((name, tensor.to_device(device)))
        });
    assign_weights(&loaded.vs, path, tensors, &[])?;
    Ok(loaded)
}

fn read_tensor(gguf: &GgufFile, file: &mut std::fs::File, info: &TensorInfo) -> Result<Tensor> {
    let values = gguf.read_f32(file, info)?;
    let shape: Vec<i64> = info.shape().iter().map(|&d| d as i64).collect();
    Ok(Tensor::from_slice(&values).to_kind(Kind::Float).reshape(shape))
}

/// The HF name of a llama.cpp tensor name.
pub fn hf_name(gguf_name: &str) -> Option<String> {
    let fixed = match gguf_name {
        "token_embd.weight" => Some("model.embed_tokens.weight"),
        "output_norm.weight" => Some("model.norm.weight"),
        "output.weight" => Some("lm_head.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = gguf_name.strip_prefix("blk.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    let (part, suffix) = rest.rsplit_once('.')?;
    let hf = match part {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// The llama.cpp tensor name of an HF name (the inverse of [`hf_name`]).
pub fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(name) = fixed {
        return Some(name.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let (part, suffix) = rest.rsplit_once('.')?;
    let short = match part {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_proj" => "attn_q",
        "self_attn.k_proj" => "attn_k",
        "self_attn.v_proj" => "attn_v",
        "self_attn.o_proj" => "attn_output",
        "mlp.gate_proj" => "ffn_gate",
        "mlp.up_proj" => "ffn_up",
        "mlp.down_proj" => "ffn_down",
        _ => return None,
    };
    Some(format!("blk.{layer}.{short}.{suffix}"))
}

/// Undoes llama.cpp's Q/K permutation (convert_hf_to_gguf's `permute`): within each head,
/// llama.cpp interleaves the two rotary halves; HF keeps them as two blocks.
pub fn unpermute(w: &Tensor, heads: i64) -> Tensor {
    let shape = w.size();
    let half = shape[0] / heads / 2;
    w.reshape([heads, half, 2, -1]).transpose(1, 2).reshape(shape)
}

/// Applies llama.cpp's Q/K permutation (for GGUF export).
pub fn permute(w: &Tensor, heads: i64) -> Tensor {
    let shape = w.size();
    let half = shape[0] / heads / 2;
    w.reshape([heads, 2, half, -1]).transpose(1, 2).reshape(shape)
}
