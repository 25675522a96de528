//! Hugging Face model directories: `config.json` plus `model.safetensors` (or shards with
//! `model.safetensors.index.json`). Pickled `.bin` checkpoints are refused, never unpickled.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, tensor::TensorView};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use super::{LoadedModel, assign_weights, check_config_fits};
use crate::error::{Error, Result};
use crate::model::{Gemma3Config, Gpt2Config, LlamaConfig, ModelConfig};

/// Loads an HF directory onto `device` in f32.
pub fn load_dir(dir: &Path, device: Device) -> Result<LoadedModel> {
    let config_path = dir.join("config.json");
    let raw: Value = read_json(&config_path)?;
    let model_type = raw
        .get("model_type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let parse_error = |source| Error::Json {
        path: config_path.clone(),
        source,
    };
    let files = weight_files(dir)?;
    // Every loadable dtype takes at least a byte per element: the files' sizes bound the model.
    let available = files
        .iter()
        .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
        .sum();
    let loaded = match model_type.as_str() {
        "llama" => {
            let config: LlamaConfig = serde_json::from_value(raw).map_err(parse_error)?;
            check_config_fits(config.matrix_elements(), available, dir)?;
            LoadedModel::new_llama(config, device, dir.to_path_buf())?
        }
        "gpt2" => {
            let config: Gpt2Config = serde_json::from_value(raw).map_err(parse_error)?;
            check_config_fits(config.matrix_elements(), available, dir)?;
            LoadedModel::new_gpt2(config, device, dir.to_path_buf())?
        }
        "gemma3_text" => {
            let config: Gemma3Config = serde_json::from_value(raw).map_err(parse_error)?;
            check_config_fits(config.matrix_elements(), available, dir)?;
            LoadedModel::new_gemma3(config, device, dir.to_path_buf())?
        }
        _ => return Err(Error::UnsupportedArchitecture(model_type)),
    };
    let tensors = files.iter().flat_map(|file| match read_tensors(file) {
        Ok(named) => named
            .into_iter()
            .map(|(n, t)| Ok((n, t.to_kind(Kind::Float).to_device(device))))
            .collect(),
        Err(e) => vec![Err(e)],
    });
    // Tied checkpoints sometimes still carry a copy of the head; GPT-2 checkpoints may carry
    // their causal-mask buffers. Neither is a weight.
    let tied = match &loaded.config {
        ModelConfig::Llama(c) => c.tie_word_embeddings,
        ModelConfig::Gemma3(c) => c.tie_word_embeddings,
        ModelConfig::Gpt2(_) => true,
    };
    let ignore = |name: &str| {
        (tied && name == "lm_head.weight")
            || name.ends_with(".attn.bias")
            || name.ends_with(".attn.masked_bias")
    };
    assign_weights(
        &loaded.vs,
        dir,
        tensors.filter(|t| !matches!(t, Ok((n, _)) if ignore(n))),
        &[],
    )?;
    Ok(loaded)
}

/// Every tensor of one safetensors file, in its stored dtype. Parsed with the `safetensors`
/// crate, which checks every offset and size against the file (the fuzz target
/// `safetensors_header` exercises the same version).
fn read_tensors(file: &Path) -> Result<Vec<(String, Tensor)>> {
    let bytes = std::fs::read(file).map_err(|source| Error::Io {
        path: file.into(),
        source,
    })?;
    let parsed = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
        path: file.into(),
        source: e.into(),
    })?;
    let mut tensors = Vec::with_capacity(parsed.len());
    for (name, view) in parsed.tensors() {
        let kind = match view.dtype() {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::BF16 => Kind::BFloat16,
            Dtype::F64 => Kind::Double,
            Dtype::I64 => Kind::Int64,
            Dtype::I32 => Kind::Int,
            Dtype::I16 => Kind::Int16,
            Dtype::I8 => Kind::Int8,
            Dtype::U8 => Kind::Uint8,
            Dtype::BOOL => Kind::Bool,
            other => {
                return Err(Error::Weights {
                    path: file.into(),
                    reason: format!("tensor `{name}` has dtype {other:?}, which cannot be loaded"),
                });
            }
        };
        let shape = view
            .shape()
            .iter()
            .map(|&d| i64::try_from(d))
            .collect::<std::result::Result<Vec<i64>, _>>()
            .map_err(|_| Error::Weights {
                path: file.into(),
                reason: format!("tensor `{name}` has a dimension beyond i64"),
            })?;
        tensors.push((name, Tensor::f_from_data_size(view.data(), &shape, kind)?));
    }
    Ok(tensors)
}

/// The safetensors files of a directory, from its index when sharded.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.exists() {
        return Ok(vec![single]);
    }
    let index_path = dir.join("model.safetensors.index.json");
    if index_path.exists() {
        let index: Value = read_json(&index_path)?;
        let map = index
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::Config {
                path: index_path.clone(),
                reason: "no `weight_map` object".into(),
            })?;
        let shards: BTreeSet<&str> = map.values().filter_map(Value::as_str).collect();
        return shards
            .into_iter()
            .map(|name| {
                // Shard names come from the file: keep them inside the directory.
                let file = Path::new(name);
                if file.components().count() != 1 {
                    return Err(Error::Config {
                        path: index_path.clone(),
                        reason: format!("bad shard name `{name}`"),
                    });
                }
                Ok(dir.join(file))
            })
            .collect();
    }
    let has_pickle =
        dir.join("pytorch_model.bin").exists() || dir.join("pytorch_model.bin.index.json").exists();
    if has_pickle {
        return Err(Error::Unsupported(format!(
            "{}: holds only pickled pytorch_model.bin weights, which are never unpickled here; convert them once with \
             `python -c \"from transformers import AutoModelForCausalLM as M; M.from_pretrained('DIR').save_pretrained('DIR', safe_serialization=True)\"`",
            dir.display()
        )));
    }
    Err(Error::Weights {
        path: dir.into(),
        reason: "has no model.safetensors or model.safetensors.index.json".into(),
    })
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.into(),
        source,
    })
}

/// Writes `config.json`, `generation_config.json` and `model.safetensors` (f32) into `dir`.
/// The tokenizer files are written by the tokenizer. Files appear whole: each is written to
/// a temporary name and renamed.
pub fn save_dir(model: &LoadedModel, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.into(),
        source,
    })?;
    let (mut config, extra, generation) = match &model.config {
        ModelConfig::Llama(c) => (
            serde_json::to_value(c).expect("config serialises"),
            json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu"}),
            json!({"bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, "pad_token_id": c.pad_token_id}),
        ),
        ModelConfig::Gpt2(c) => (
            serde_json::to_value(c).expect("config serialises"),
            json!({"architectures": ["GPT2LMHeadModel"], "model_type": "gpt2"}),
            json!({"bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id}),
        ),
        ModelConfig::Gemma3(c) => (
            serde_json::to_value(c).expect("config serialises"),
            // The layer pattern spelled out per layer, as transformers 5.x writes it.
            json!({
                "architectures": ["Gemma3ForCausalLM"],
                "model_type": "gemma3_text",
                "layer_types": c.layer_type_names(),
            }),
            json!({"bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, "pad_token_id": c.pad_token_id}),
        ),
    };
    let object = config.as_object_mut().expect("configs serialise to objects");
    object.extend(extra.as_object().expect("object").clone());
    object.insert("torch_dtype".into(), json!("float32"));
    object.insert("use_cache".into(), json!(true));
    write_atomic(
        &dir.join("config.json"),
        serde_json::to_string_pretty(&config).expect("json").as_bytes(),
    )?;
    write_atomic(
        &dir.join("generation_config.json"),
        serde_json::to_string_pretty(&generation)
            .expect("json")
            .as_bytes(),
    )?;
    write_safetensors(&model.vs, &dir.join("model.safetensors"))
}

/// Writes every variable as f32 safetensors with `{"format": "pt"}` metadata (transformers checks it).
pub fn write_safetensors(vs: &tch::nn::VarStore, path: &Path) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    let mut buffers = Vec::with_capacity(named.len());
    for (name, tensor) in &named {
        let flat = tensor
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous()
            .view(-1);
        let values = Vec::<f32>::try_from(&flat)?;
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let shape: Vec<usize> = tensor.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), shape, bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).expect("shape matches bytes");
            (name.clone(), view)
        })
        .collect::<Vec<_>>();
    let metadata = Some(std::collections::HashMap::from([(
        "format".to_string(),
        "pt".to_string(),
    )]));
    let bytes = safetensors::serialize(views, metadata).map_err(|e| Error::Safetensors {
        path: path.into(),
        source: e.into(),
    })?;
    write_atomic(path, &bytes)
}

/// Writes `bytes` to `path` through a temporary file in the same directory, then renames.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |source| Error::Io {
        path: path.into(),
        source,
    };
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// The precision an HF directory's `config.json` says its weights are in (`torch_dtype`, or
/// transformers 5's `dtype`): f16, bf16, or f32 when it names another or none.
pub fn stored_precision(dir: &Path) -> crate::model::Precision {
    use crate::model::Precision;
    let config = read_json(&dir.join("config.json")).unwrap_or(Value::Null);
    let dtype = config.get("torch_dtype").or_else(|| config.get("dtype"));
    match dtype.and_then(Value::as_str) {
        Some("float16") => Precision::F16,
        Some("bfloat16") => Precision::Bf16,
        _ => Precision::F32,
    }
}
