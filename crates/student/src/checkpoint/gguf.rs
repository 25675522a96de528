//! Loading llama.cpp GGUF files: configuration from metadata, weights dequantized to f32 (or,
//! for CPU inference, kept as stored), llama.cpp's tensor names mapped to HF names, and its
//! Q/K row permutation undone.

use std::collections::HashMap;
use std::path::Path;

use distill_gguf::{GgmlType, GgufFile, TensorInfo};
use distill_kernels::quant::BlockFormat;
use half::{bf16, f16};
use tch::{Device, Kind, Tensor};

use super::{InferenceDtype, LoadedModel, assign_weights, check_config_fits};
use crate::error::{Error, Result};
use crate::model::llama::RopeParameters;
use crate::model::llama::{Elements, NamedWeight, StoredMatrix};
use crate::model::{CausalLm, CpuLlama, Gemma3Config, LlamaConfig, ModelConfig, Precision};

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

/// Reads a Gemma 3 configuration from GGUF metadata (the `gemma3` architecture). What the file
/// does not store takes llama.cpp's values: the sliding layers' RoPE base 10,000, every sixth
/// layer global, scores scaled by `head_dim^-½` (`hidden / heads` for the 62-layer 27B model),
/// no soft-capping; a linear RoPE scaling (4B and larger) applies to the global layers.
pub fn gemma3_config(gguf: &GgufFile) -> Result<Gemma3Config> {
    let key = |k: &str| format!("gemma3.{k}");
    let int = |k: &str| -> Result<i64> { Ok(gguf.get_u64(&key(k))? as i64) };
    let heads = int("attention.head_count")?;
    let hidden = int("embedding_length")?;
    let head_dim = int("attention.key_length").unwrap_or(hidden / heads.max(1));
    let token_id = |k: &str| gguf.get(k).and_then(|v| v.as_u64()).map(|v| v as i64);
    let vocab_size = gguf.get_strings("tokenizer.ggml.tokens")?.len() as i64;
    let float = |k: &str| gguf.get(&key(k)).and_then(|v| v.as_f64());
    let layers = int("block_count")?;
    let rope_scaling = match gguf.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
        None | Some("none") => None,
        Some(kind) => Some(RopeParameters {
            rope_type: Some(kind.to_string()),
            factor: float("rope.scaling.factor"),
            ..RopeParameters::default()
        }),
    };
    // llama.cpp's rule (src/models/gemma3.cpp): the 27B model scales by its hidden width per head.
    let query_pre_attn_scalar = if layers == 62 {
        hidden / heads.max(1)
    } else {
        head_dim
    };
    Ok(Gemma3Config {
        vocab_size,
        hidden_size: hidden,
        intermediate_size: int("feed_forward_length")?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: int("attention.head_count_kv").unwrap_or(heads),
        head_dim,
        max_position_embeddings: int("context_length").unwrap_or(32_768),
        rms_norm_eps: gguf.get_f64(&key("attention.layer_norm_rms_epsilon"))?,
        query_pre_attn_scalar,
        sliding_window: int("attention.sliding_window")?,
        layer_types: None,
        sliding_window_pattern: Some(6),
        rope_theta: Some(float("rope.freq_base").unwrap_or(1_000_000.0)),
        rope_local_base_freq: Some(float("rope.freq_base_swa").unwrap_or(10_000.0)),
        rope_scaling,
        rope_parameters: None,
        final_logit_softcapping: float("final_logit_softcapping"),
        attn_logit_softcapping: float("attn_logit_softcapping"),
        hidden_activation: "gelu_pytorch_tanh".into(),
        tie_word_embeddings: gguf.tensor("output.weight").is_none(),
        attention_bias: false,
        use_bidirectional_attention: false,
        bos_token_id: token_id("tokenizer.ggml.bos_token_id"),
        eos_token_id: token_id("tokenizer.ggml.eos_token_id").map(Into::into),
        pad_token_id: token_id("tokenizer.ggml.padding_token_id"),
    })
}

/// The model architecture a GGUF file declares (`general.architecture`).
pub fn architecture(path: &Path) -> Result<String> {
    let gguf = naming_the_file(path, GgufFile::read_header(path).map_err(Error::from))?;
    Ok(naming_the_file(path, gguf.architecture().map_err(Error::from))?.to_string())
}

/// Loads a GGUF model onto `device` in f32.
pub fn load_gguf(path: &Path, device: Device) -> Result<LoadedModel> {
    naming_the_file(path, load(path, device))
}

/// A GGUF error with the file's path (an I/O error names the file already).
fn naming_the_file<T>(path: &Path, result: Result<T>) -> Result<T> {
    result.map_err(|e| match e {
        Error::Gguf(source) if source.kind() != distill_gguf::ErrorKind::Io => Error::GgufFile {
            path: path.into(),
            source,
        },
        other => other,
    })
}

fn load(path: &Path, device: Device) -> Result<LoadedModel> {
    let gguf = GgufFile::read_header(path)?;
    if gguf.architecture()? == "gemma3" {
        return load_gemma3(&gguf, path, device);
    }
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

/// [`load`] for Gemma 3: its tensors keep HF's row order (no Q/K permutation), and its norm
/// weights are stored as `1 + w` (convert_hf_to_gguf adds the one; transformers subtracts it).
fn load_gemma3(gguf: &GgufFile, path: &Path, device: Device) -> Result<LoadedModel> {
    let config = gemma3_config(gguf)?;
    check_config_fits(config.matrix_elements(), gguf.parameter_count(), path)?;
    let loaded = LoadedModel::new_gemma3(config, device, path.to_path_buf())?;
    let mut file = gguf.open()?;
    let tensors = gguf.tensors.iter().map(|info| {
        let name = gemma3_hf_name(&info.name).ok_or_else(|| Error::Weights {
            path: path.into(),
            reason: format!("unknown GGUF tensor `{}`", info.name),
        })?;
        let mut tensor = read_tensor(gguf, &mut file, info)?;
        if name.ends_with("norm.weight") {
            tensor -= 1.0;
        }
        Ok((name, tensor.to_device(device)))
    });
    assign_weights(&loaded.vs, path, tensors, &[])?;
    Ok(loaded)
}

/// The HF name of a llama.cpp tensor name in a Gemma 3 file.
pub fn gemma3_hf_name(gguf_name: &str) -> Option<String> {
    let renamed = |layer: &str, hf: &str, suffix: &str| Some(format!("model.layers.{layer}.{hf}.{suffix}"));
    let rest = gguf_name.strip_prefix("blk.");
    if let Some((layer, rest)) = rest.and_then(|r| r.split_once('.')) {
        let (part, suffix) = rest.rsplit_once('.')?;
        layer.parse::<u32>().ok()?;
        match part {
            "post_attention_norm" => return renamed(layer, "post_attention_layernorm", suffix),
            "ffn_norm" => return renamed(layer, "pre_feedforward_layernorm", suffix),
            "post_ffw_norm" => return renamed(layer, "post_feedforward_layernorm", suffix),
            "attn_q_norm" => return renamed(layer, "self_attn.q_norm", suffix),
            "attn_k_norm" => return renamed(layer, "self_attn.k_norm", suffix),
            _ => {}
        }
    }
    hf_name(gguf_name)
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

/// Loads a GGUF Llama for CPU inference as a [`CpuLlama`], its matrices kept as the file
/// stores them (`Native`) or quantized to Q8_0 where stored in a float format (`Q8_0`), never
/// widened to f32 on the way: it takes about the file's size in memory. Matrices of a type no
/// kernel reads (Q5_1, Q2_K, Q3_K) are re-quantized to Q8_0; vectors (norms, biases) are f32.
pub fn load_gguf_cpu(path: &Path, dtype: InferenceDtype) -> Result<LoadedModel> {
    naming_the_file(path, load_cpu(path, dtype))
}

fn load_cpu(path: &Path, dtype: InferenceDtype) -> Result<LoadedModel> {
    let mut gguf = GgufFile::read_header(path)?;
    let config = llama_config(&gguf)?;
    config.validate().map_err(|reason| Error::Config {
        path: path.into(),
        reason,
    })?;
    check_config_fits(config.matrix_elements(), gguf.parameter_count(), path)?;
    // The metadata (mostly the tokenizer's vocabulary and merges, megabytes of strings) is not
    // needed for the weights: freed before they are read, its memory serves them.
    drop(std::mem::take(&mut gguf.metadata));
    let mut file = gguf.open()?;
    let (heads, kv_heads) = (config.num_attention_heads, config.kv_heads());
    let mut weights = HashMap::new();
    for info in gguf.tensors.iter().filter(|t| t.name != "rope_freqs.weight") {
        let bad = |reason: String| Error::Weights {
            path: path.into(),
            reason,
        };
        let name = hf_name(&info.name).ok_or_else(|| bad(format!("unknown GGUF tensor `{}`", info.name)))?;
        let heads = if name.contains("q_proj.") {
            Some(heads)
        } else if name.contains("k_proj.") {
            Some(kv_heads)
        } else {
            None
        };
        let weight = match info.dims.as_slice() {
            [_] => {
                let mut v = gguf.read_f32(&mut file, info)?;
                if let Some(heads) = heads {
                    v = unpermute_rows(&v, heads as usize, 1);
                }
                NamedWeight::Vector(v)
            }
            &[cols, rows] => {
                let (rows, cols) = (rows as usize, cols as usize);
                let mut m = read_matrix(&gguf, &mut file, info, (rows, cols), dtype)?
                    .ok_or_else(|| bad(format!("`{}` is not a whole number of blocks per row", info.name)))?;
                if let Some(heads) = heads {
                    m.elements = unpermute_matrix(m.elements, heads as usize, rows, cols);
                }
                NamedWeight::Matrix(m)
            }
            dims => return Err(bad(format!("`{}` has {} dimensions", info.name, dims.len()))),
        };
        weights.insert(name, weight);
    }
    let model = CpuLlama::from_weights(config.clone(), weights).map_err(|reason| Error::Weights {
        path: path.into(),
        reason,
    })?;
    Ok(LoadedModel {
        vs: tch::nn::VarStore::new(Device::Cpu),
        model: CausalLm::CpuLlama(model),
        config: ModelConfig::Llama(config),
        source: path.to_path_buf(),
    })
}

/// The kernel format of a GGUF type, where a kernel reads it.
fn block_format(kind: GgmlType) -> Option<BlockFormat> {
    Some(match kind {
        GgmlType::Q8_0 => BlockFormat::Q8_0,
        GgmlType::Q4_0 => BlockFormat::Q4_0,
        GgmlType::Q4_1 => BlockFormat::Q4_1,
        GgmlType::Q5_0 => BlockFormat::Q5_0,
        GgmlType::Q4_K => BlockFormat::Q4_K,
        GgmlType::Q5_K => BlockFormat::Q5_K,
        GgmlType::Q6_K => BlockFormat::Q6_K,
        _ => return None,
    })
}

/// One matrix of the file in the format `dtype` asks for; `None` when its rows are not whole
/// Q8_0 blocks but it would have to be quantized.
fn read_matrix(
    gguf: &GgufFile,
    file: &mut std::fs::File,
    info: &TensorInfo,
    (rows, cols): (usize, usize),
    dtype: InferenceDtype,
) -> Result<Option<StoredMatrix>> {
    let native = dtype == InferenceDtype::Native;
    let elements = match (info.kind, block_format(info.kind)) {
        (_, Some(format)) if native || format == BlockFormat::Q8_0 => {
            Elements::Blocks(format, gguf.read_tensor_bytes(file, info)?)
        }
        (GgmlType::F16, _) if native => {
            let bytes = gguf.read_tensor_bytes(file, info)?;
            Elements::F16(
                bytes
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            )
        }
        (GgmlType::BF16, _) if native => {
            let bytes = gguf.read_tensor_bytes(file, info)?;
            Elements::Bf16(
                bytes
                    .chunks_exact(2)
                    .map(|b| bf16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            )
        }
        (GgmlType::F32, _) if native => Elements::F32(gguf.read_f32(file, info)?),
        _ => {
            if !cols.is_multiple_of(32) {
                return Ok(None);
            }
            let values = gguf.read_f32(file, info)?;
            Elements::Blocks(BlockFormat::Q8_0, distill_gguf::quantize_q8_0(&values))
        }
    };
    Ok(StoredMatrix::new(rows, cols, elements))
}

/// [`unpermute`] on rows of `width` items: within each head, llama.cpp's interleaved rotary
/// halves back to HF's two blocks.
fn unpermute_rows<T: Copy>(items: &[T], heads: usize, width: usize) -> Vec<T> {
    let rows = items.len() / width;
    let half = rows / heads / 2;
    let mut out = Vec::with_capacity(items.len());
    for h in 0..heads {
        for t in 0..2 {
            for i in 0..half {
                let from = h * 2 * half + 2 * i + t;
                out.extend_from_slice(&items[from * width..(from + 1) * width]);
            }
        }
    }
    out
}

/// [`unpermute_rows`] on a matrix's rows, whatever their format.
fn unpermute_matrix(elements: Elements, heads: usize, rows: usize, cols: usize) -> Elements {
    match elements {
        Elements::F32(v) => Elements::F32(unpermute_rows(&v, heads, cols)),
        Elements::F16(v) => Elements::F16(unpermute_rows(&v, heads, cols)),
        Elements::Bf16(v) => Elements::Bf16(unpermute_rows(&v, heads, cols)),
        Elements::Blocks(format, bytes) => {
            let width = bytes.len() / rows;
            Elements::Blocks(format, unpermute_rows(&bytes, heads, width))
        }
    }
}

/// Whether a GGUF file stores any matrix in quantized blocks (rather than f32, f16 or bf16).
pub fn has_quantized_matrices(path: &Path) -> Result<bool> {
    let gguf = GgufFile::read_header(path)?;
    let float = |kind| matches!(kind, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
    Ok(gguf.tensors.iter().any(|t| t.dims.len() == 2 && !float(t.kind)))
}

/// The float precision a GGUF file stores its matrices in: f16 or bf16 where most are, else f32.
pub fn stored_precision(path: &Path) -> Result<Precision> {
    let gguf = GgufFile::read_header(path)?;
    let matrices = gguf.tensors.iter().filter(|t| t.dims.len() == 2);
    let count = |kind| matrices.clone().filter(|t| t.kind == kind).count();
    let (f16, bf16, f32) = (count(GgmlType::F16), count(GgmlType::BF16), count(GgmlType::F32));
    Ok(if f16 > f32.max(bf16) {
        Precision::F16
    } else if bf16 > f32 {
        Precision::Bf16
    } else {
        Precision::F32
    })
}

#[cfg(test)]
mod tests {
    use distill_gguf::{Value, write_gguf};

    use super::*;

    /// The header of a Gemma 3 GGUF with `extra` metadata (no tensors).
    fn gemma3_header(layers: u32, extra: &[(&str, Value)]) -> GgufFile {
        let mut metadata: Vec<(String, Value)> = vec![
            ("general.architecture".into(), Value::String("gemma3".into())),
            ("gemma3.embedding_length".into(), Value::U32(5376)),
            ("gemma3.block_count".into(), Value::U32(layers)),
            ("gemma3.feed_forward_length".into(), Value::U32(21504)),
            ("gemma3.attention.head_count".into(), Value::U32(32)),
            ("gemma3.attention.head_count_kv".into(), Value::U32(16)),
            ("gemma3.attention.key_length".into(), Value::U32(128)),
            ("gemma3.attention.layer_norm_rms_epsilon".into(), Value::F32(1e-6)),
            ("gemma3.attention.sliding_window".into(), Value::U32(1024)),
            ("gemma3.rope.freq_base".into(), Value::F32(1e6)),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(vec![Value::String("a".into()), Value::String("b".into())]),
            ),
        ];
        metadata.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gemma3.gguf");
        let mut bytes = Vec::new();
        write_gguf(&mut bytes, &metadata, &[]).unwrap();
        std::fs::write(&path, bytes).unwrap();
        GgufFile::read_header(&path).unwrap()
    }

    #[test]
    fn gemma3_metadata_gives_llama_cpp_s_rope_scaling_and_attention_scale() {
        // Gemma 3 27B: 62 layers, linear RoPE scaling ×8 on the global layers, scores scaled by
        // hidden / heads = 168 rather than head_dim = 128.
        let scaled = [
            ("gemma3.rope.scaling.type", Value::String("linear".into())),
            ("gemma3.rope.scaling.factor", Value::F32(8.0)),
        ];
        let config = gemma3_config(&gemma3_header(62, &scaled)).unwrap();
        assert_eq!(config.query_pre_attn_scalar, 168);
        assert!(config.validate().is_ok());
        let unscaled = gemma3_config(&gemma3_header(62, &[])).unwrap();
        let (global, local) = (
            config.inverse_frequencies(false),
            config.inverse_frequencies(true),
        );
        assert!((global[1] * 8.0 - unscaled.inverse_frequencies(false)[1]).abs() < 1e-12);
        assert_eq!(
            local,
            unscaled.inverse_frequencies(true),
            "sliding layers are not scaled"
        );
        // Other sizes scale by head_dim.
        assert_eq!(
            gemma3_config(&gemma3_header(48, &[]))
                .unwrap()
                .query_pre_attn_scalar,
            128
        );
    }
}
