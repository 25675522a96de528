//! Everything before the first step: loading the student (and its layers), the tokenizer, the
//! teacher, the data, and the optional teacher top-k cache.

use std::path::{Path, PathBuf};

use distill_data::{Example, read_file};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::batch::{BatchSettings, collate, plan_epoch};
use super::checkpoint::data_hash;
use super::config::{KeepLayers, TrainConfig};
use super::data::{Sequence, split_examples};
use super::error::{Error, Result};
use crate::Pretrained;
use crate::model::ForwardInput;
use crate::shrink;

/// Loads a local `.gguf` file or HF directory with its tokenizer ([`Pretrained::load`]); Hub ids
/// are not fetched here.
pub fn load_model(path: &Path, device: Device) -> Result<Pretrained> {
    if !path.exists() {
        return Err(Error::ModelNotFound(path.into()));
    }
    Ok(Pretrained::load(path, device)?)
}

/// The student of a configuration: the model, cut to `keep_layers` when asked.
pub fn load_student(config: &TrainConfig, device: Device) -> Result<Pretrained> {
    let full = load_model(&config.student_model, device)?;
    let Some(keep) = &config.keep_layers else {
        return Ok(full);
    };
    let total = full.model.config.layer_count() as usize;
    let layers = match keep {
        KeepLayers::Count(n) => shrink::evenly_spaced_layers(total, *n)?,
        KeepLayers::Indices(list) => list.clone(),
    };
    tracing::info!(?layers, of = total, "keeping teacher layers");
    let model = shrink::select_layers(&full.model, &layers)?;
    Ok(Pretrained {
        model,
        tokenizer: full.tokenizer,
    })
}

/// Reads a dataset file into (train, val) examples.
pub fn read_dataset(config: &TrainConfig) -> Result<(Vec<Example>, Vec<Example>)> {
    let (train, mut val) = split_examples(read_file(&config.dataset)?);
    if let Some(path) = &config.val_dataset {
        val.extend(read_file(path)?);
    }
    Ok((train, val))
}

/// What a teacher top-k cache was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct CacheInfo {
    data_hash: String,
    teacher: PathBuf,
    teacher_vocab_hash: String,
    k: usize,
    max_seq_len: usize,
}

/// Fills `soft` of every sequence with the teacher's top `k` log-probabilities at each trained
/// position, computed once (batched, no gradients) or read back from `cache` when it matches.
pub fn teacher_top_k(
    teacher: &Pretrained,
    teacher_path: &Path,
    sequences: &mut [Sequence],
    k: usize,
    max_seq_len: usize,
    cache: &Path,
    pad: i64,
) -> Result<()> {
    let info = CacheInfo {
        data_hash: data_hash(sequences),
        teacher: teacher_path.into(),
        teacher_vocab_hash: teacher.tokenizer.vocab_hash().into(),
        k,
        max_seq_len,
    };
    let info_path = cache.with_extension("json");
    let cached = std::fs::read_to_string(&info_path)
        .ok()
        .and_then(|t| serde_json::from_str::<CacheInfo>(&t).ok())
        .is_some_and(|c| c == info);
    if cached && cache.exists() {
        let tensors = super::checkpoint::read_tensors(cache)?;
        if let (Some(ids), Some(lps)) = (tensors.get("ids"), tensors.get("logprobs")) {
            let ids = Vec::<i64>::try_from(ids.view(-1))?;
            let lps = Vec::<f32>::try_from(lps.view(-1))?;
            if fill(sequences, &ids, &lps, k) {
                tracing::info!(path = %cache.display(), "teacher top-k read from the cache");
                return Ok(());
            }
        }
        tracing::warn!(path = %cache.display(), "teacher top-k cache does not fit the data; recomputing");
    }
    let device = teacher.model.vs.device();
    let _guard = tch::no_grad_guard();
    let lengths: Vec<usize> = sequences.iter().map(Sequence::len).collect();
    let settings = BatchSettings {
        batch_size: 8,
        max_batch_tokens: None,
        bucket_window: 1,
    };
    let mut all_ids = Vec::new();
    let mut all_lps = Vec::new();
    // Sorted batches (window of the whole set), then written back in sequence order.
    let mut per_seq: Vec<Option<(Vec<i64>, Vec<f32>)>> = vec![None; sequences.len()];
    let whole = BatchSettings {
        bucket_window: sequences.len().max(1),
        ..settings
    };
    for batch_idx in plan_epoch(&lengths, 0, 0, &whole) {
        let batch = collate(sequences, &batch_idx, pad, device);
        let logits = teacher
            .model
            .model
            .forward(&ForwardInput::new(&batch.input_ids), None);
        let vocab = logits.size()[2];
        let rows = logits
            .reshape([-1, vocab])
            .index_select(0, &batch.positions)
            .log_softmax(-1, Kind::Float);
        let (values, indices) = rows.topk(k as i64, -1, true, true);
        let values = Vec::<f32>::try_from(values.to_device(Device::Cpu).view(-1))?;
        let indices = Vec::<i64>::try_from(indices.to_device(Device::Cpu).view(-1))?;
        let mut offset = 0;
        for &i in &batch_idx {
            let n = sequences[i].trained() * k;
            per_seq[i] = Some((
                indices[offset..offset + n].to_vec(),
                values[offset..offset + n].to_vec(),
            ));
            offset += n;
        }
    }
    for (ids, lps) in per_seq.into_iter().flatten() {
        all_ids.extend(ids);
        all_lps.extend(lps);
    }
    let filled = fill(sequences, &all_ids, &all_lps, k);
    debug_assert!(filled);
    let rows = (all_ids.len() / k) as i64;
    let tensors = [
        (
            "ids".to_string(),
            Tensor::from_slice(&all_ids).reshape([rows, k as i64]),
        ),
        (
            "logprobs".to_string(),
            Tensor::from_slice(&all_lps).reshape([rows, k as i64]),
        ),
    ];
    Tensor::write_safetensors(&tensors, cache)?;
    let json = serde_json::to_string_pretty(&info).expect("cache info serialises");
    std::fs::write(&info_path, json).map_err(Error::io(&info_path))?;
    tracing::info!(path = %cache.display(), rows, k, "teacher top-k cached");
    Ok(())
}

/// Puts flat `[rows, k]` top-k values into the sequences' soft targets, in sequence order;
/// `false` when the row count does not fit.
fn fill(sequences: &mut [Sequence], ids: &[i64], lps: &[f32], k: usize) -> bool {
    let needed: usize = sequences.iter().map(|s| s.trained() * k).sum();
    if ids.len() != needed || lps.len() != needed {
        return false;
    }
    let mut at = 0;
    for s in sequences.iter_mut() {
        s.soft = (0..s.trained())
            .map(|_| {
                let row = (0..k).map(|j| (ids[at + j] as u32, lps[at + j])).collect();
                at += k;
                row
            })
            .collect();
    }
    true
}
