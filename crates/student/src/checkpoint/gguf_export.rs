//! Writing a model and its tokenizer as a llama.cpp GGUF file (architecture `llama`).
//!
//! Weights are renamed to llama.cpp's names and Q/K rows are permuted back into llama.cpp's
//! interleaved rotary layout. One-dimensional tensors (norms, biases) stay f32, as llama.cpp
//! requires; matrices are written as f32, f16 or Q8_0.

use std::path::Path;

use distill_gguf::{GgmlType, TensorData, Value, quantize_q8_0, write_gguf};
use half::f16;
use serde_json::Value as Json;
use tch::{Device, Kind, Tensor};

use super::gguf::{gguf_name, permute};
use super::hf::write_atomic;
use crate::error::{Error, Result};
use crate::pretrained::Pretrained;
use crate::tokenizer::{DEFAULT_TEMPLATE, Tokenizer};

/// Storage type for the weight matrices of an exported GGUF.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GgufQuant {
    /// 32-bit floats (lossless).
    F32,
    /// 16-bit floats.
    #[default]
    F16,
    /// llama.cpp's 8-bit blocks of 32 (about 8.5 bits per weight).
    Q8_0,
}

impl GgufQuant {
    /// llama.cpp's `general.file_type` code.
    fn file_type(self) -> u32 {
        match self {
            GgufQuant::F32 => 0,
            GgufQuant::F16 => 1,
            GgufQuant::Q8_0 => 7,
        }
    }
}

/// Writes `model` to `path` as GGUF, through a temporary file.
pub fn export_gguf(model: &Pretrained, path: &Path, quant: GgufQuant) -> Result<()> {
    let config = model.model.llama_config("GGUF export")?;
    let mut metadata = vec![
        kv("general.architecture", Value::String("llama".into())),
        kv("general.name", Value::String(name_of(path))),
        kv("general.file_type", Value::U32(quant.file_type())),
        kv(
            "llama.context_length",
            Value::U32(config.max_position_embeddings as u32),
        ),
        kv("llama.embedding_length", Value::U32(config.hidden_size as u32)),
        kv("llama.block_count", Value::U32(config.num_hidden_layers as u32)),
        kv(
            "llama.feed_forward_length",
            Value::U32(config.intermediate_size as u32),
        ),
        kv(
            "llama.rope.dimension_count",
            Value::U32(config.head_width() as u32),
        ),
        kv(
            "llama.attention.head_count",
            Value::U32(config.num_attention_heads as u32),
        ),
        kv(
            "llama.attention.head_count_kv",
            Value::U32(config.kv_heads() as u32),
        ),
        kv(
            "llama.attention.layer_norm_rms_epsilon",
            Value::F32(config.rms_norm_eps as f32),
        ),
        kv("llama.rope.freq_base", Value::F32(config.rope_base() as f32)),
        kv("llama.vocab_size", Value::U32(config.vocab_size as u32)),
    ];
    metadata.extend(tokenizer_metadata(&model.tokenizer, config.vocab_size as usize)?);

    let (heads, kv_heads) = (config.num_attention_heads, config.kv_heads());
    let mut names: Vec<(String, Tensor)> = model.model.vs.variables().into_iter().collect();
    names.sort_by_key(|(name, _)| gguf_order(name));
    let mut tensors = Vec::with_capacity(names.len());
    for (hf, tensor) in names {
        let name = gguf_name(&hf).ok_or_else(|| Error::Weights {
            path: path.into(),
            reason: format!("no GGUF name for `{hf}`"),
        })?;
        let mut t = tensor.detach().to_device(Device::Cpu).to_kind(Kind::Float);
        if hf.contains("q_proj") {
            t = permute(&t, heads);
        } else if hf.contains("k_proj") {
            t = permute(&t, kv_heads);
        }
        tensors.push(encode(name, &t, quant)?);
    }
    let mut bytes = Vec::new();
    write_gguf(&mut bytes, &metadata, &tensors).map_err(|source| Error::GgufFile {
        path: path.into(),
        source,
    })?;
    write_atomic(path, &bytes)
}

fn kv(key: &str, value: Value) -> (String, Value) {
    (key.to_string(), value)
}

fn name_of(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "distill".into())
}

/// Embeddings first, then the blocks in order, then the head: llama.cpp's own order.
fn gguf_order(hf: &str) -> (u8, usize, String) {
    match hf.strip_prefix("model.layers.") {
        Some(rest) => {
            let (index, tail) = rest.split_once('.').unwrap_or((rest, ""));
            (1, index.parse().unwrap_or(usize::MAX), tail.to_string())
        }
        None if hf.starts_with("model.embed_tokens") => (0, 0, hf.to_string()),
        None => (2, 0, hf.to_string()),
    }
}

fn encode(name: String, t: &Tensor, quant: GgufQuant) -> Result<TensorData> {
    let dims: Vec<u64> = t.size().iter().rev().map(|&d| d as u64).collect();
    let values = Vec::<f32>::try_from(&t.contiguous().view(-1))?;
    let matrix = dims.len() == 2;
    let kind = match quant {
        GgufQuant::Q8_0 if matrix && dims[0].is_multiple_of(32) => GgmlType::Q8_0,
        GgufQuant::F16 | GgufQuant::Q8_0 if matrix => GgmlType::F16,
        _ => GgmlType::F32,
    };
    let bytes = match kind {
        GgmlType::Q8_0 => quantize_q8_0(&values),
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    };
    Ok(TensorData {
        name,
        dims,
        kind,
        bytes,
    })
}

/// `tokenizer.ggml.*` metadata for a byte-level BPE tokenizer, read from its `tokenizer.json`.
fn tokenizer_metadata(tokenizer: &Tokenizer, vocab_size: usize) -> Result<Vec<(String, Value)>> {
    let malformed = |reason: &str| Error::Config {
        path: "tokenizer.json".into(),
        reason: reason.into(),
    };
    let text = tokenizer
        .inner()
        .to_string(false)
        .map_err(crate::tokenizer::Error::Tokenizers)?;
    let json: Json = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: "tokenizer.json".into(),
        source,
    })?;
    let model = &json["model"];
    if model["type"] != "BPE" {
        return Err(Error::Unsupported(
            "GGUF export supports byte-level BPE tokenizers only".into(),
        ));
    }
    let mut tokens = vec![String::new(); vocab_size];
    let mut types = vec![1i32; vocab_size];
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| malformed("BPE without a vocab"))?;
    for (token, id) in vocab {
        if let Some(slot) = id.as_u64().and_then(|id| tokens.get_mut(id as usize)) {
            *slot = token.clone();
        }
    }
    for added in json["added_tokens"].as_array().into_iter().flatten() {
        let (Some(id), Some(content)) = (added["id"].as_u64(), added["content"].as_str()) else {
            continue;
        };
        if let Some(slot) = tokens.get_mut(id as usize) {
            *slot = content.to_string();
            types[id as usize] = if added["special"] == true { 3 } else { 4 };
        }
    }
    for (id, token) in tokens.iter_mut().enumerate() {
        if token.is_empty() {
            // llama.cpp needs a string per id; mark holes as unused.
            *token = format!("[PAD{id}]");
            types[id] = 5;
        }
    }
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .ok_or_else(|| malformed("BPE without merges"))?
        .iter()
        .filter_map(|m| match m {
            Json::String(s) => Some(s.clone()),
            Json::Array(pair) => Some(format!("{} {}", pair.first()?.as_str()?, pair.get(1)?.as_str()?)),
            _ => None,
        })
        .map(Value::String)
        .collect();
    let split = find_split_pattern(&json["pre_tokenizer"]);
    let pre = crate::tokenizer::gguf::pre_for_split(split.as_deref());

    let mut out = vec![
        kv("tokenizer.ggml.model", Value::String("gpt2".into())),
        kv("tokenizer.ggml.pre", Value::String(pre.into())),
        kv(
            "tokenizer.ggml.tokens",
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        kv(
            "tokenizer.ggml.token_type",
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        kv("tokenizer.ggml.merges", Value::Array(merges)),
        kv(
            "tokenizer.ggml.add_bos_token",
            Value::Bool(tokenizer.adds_bos_token()),
        ),
    ];
    let id_of = |token: &Option<String>| token.as_deref().and_then(|t| tokenizer.token_to_id(t));
    let special = tokenizer.special_tokens();
    for (key, token) in [
        ("tokenizer.ggml.bos_token_id", &special.bos),
        ("tokenizer.ggml.eos_token_id", &special.eos),
        ("tokenizer.ggml.unknown_token_id", &special.unk),
        ("tokenizer.ggml.padding_token_id", &special.pad),
    ] {
        if let Some(id) = id_of(token) {
            out.push(kv(key, Value::U32(id)));
        }
    }
    if let Some(source) = tokenizer.chat_template().and_then(|t| t.source(DEFAULT_TEMPLATE)) {
        out.push(kv("tokenizer.chat_template", Value::String(source.to_string())));
    }
    Ok(out)
}

/// The regex of the first `Split` pre-tokenizer, searching through `Sequence`s.
fn find_split_pattern(pre: &Json) -> Option<String> {
    match pre["type"].as_str()? {
        "Split" => pre["pattern"]["Regex"].as_str().map(str::to_string),
        "Sequence" => pre["pretokenizers"]
            .as_array()?
            .iter()
            .find_map(find_split_pattern),
        _ => None,
    }
}
