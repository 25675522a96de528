//! Building a smaller student from a teacher: keep a subset of its layers (as DistilBERT and
//! distilgpt2 did). A smaller fresh configuration is initialised as transformers does by
//! [`crate::model::init_like_transformers`].

use crate::checkpoint::LoadedModel;
use crate::error::{Error, Result};
use crate::model::{Gemma3Config, LlamaConfig, ModelConfig};

/// `count` layer indices spread evenly over `total` layers, starting at 0
/// (30 layers, 6 kept: 0, 5, 10, 15, 20, 25).
pub fn evenly_spaced_layers(total: usize, count: usize) -> Result<Vec<usize>> {
    if count == 0 || count > total {
        return Err(Error::Input(format!("cannot keep {count} of {total} layers")));
    }
    Ok((0..count).map(|i| i * total / count).collect())
}

/// A student made of the teacher's layers `keep` (in that order), with the teacher's
/// embeddings, final norm and head copied.
pub fn select_layers(teacher: &LoadedModel, keep: &[usize]) -> Result<LoadedModel> {
    let total = teacher.config.layer_count() as usize;
    if keep.is_empty() {
        return Err(Error::Input("keep at least one layer".into()));
    }
    if let Some(bad) = keep.iter().find(|&&i| i >= total) {
        return Err(Error::Input(format!(
            "layer {bad} does not exist: the teacher has {total} (0..{total})"
        )));
    }
    let (device, source) = (teacher.vs.device(), teacher.source.clone());
    let student = match &teacher.config {
        ModelConfig::Llama(c) => {
            let config = LlamaConfig {
                num_hidden_layers: keep.len() as i64,
                ..c.clone()
            };
            LoadedModel::new_llama(config, device, source)?
        }
        // Each kept layer keeps its attention type (sliding window or global).
        ModelConfig::Gemma3(c) => {
            let config = Gemma3Config {
                num_hidden_layers: keep.len() as i64,
                layer_types: Some(keep.iter().map(|&i| c.layer_type_names()[i].clone()).collect()),
                ..c.clone()
            };
            LoadedModel::new_gemma3(config, device, source)?
        }
        ModelConfig::Gpt2(_) => {
            return Err(Error::Unsupported(
                "layer selection supports Llama and Gemma 3 models".into(),
            ));
        }
    };
    let from = teacher.vs.variables();
    let mut to = student.vs.variables();
    let _guard = tch::no_grad_guard();
    for (name, var) in to.iter_mut() {
        let source_name = match name.strip_prefix("model.layers.") {
            Some(rest) => {
                let (index, tail) = rest.split_once('.').expect("layer variables have a tail");
                let index: usize = index.parse().expect("layer index");
                format!("model.layers.{}.{tail}", keep[index])
            }
            None => name.clone(),
        };
        var.f_copy_(&from[&source_name])?;
    }
    Ok(student)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn six_of_thirty_layers_are_every_fifth() {
        assert_eq!(evenly_spaced_layers(30, 6).unwrap(), [0, 5, 10, 15, 20, 25]);
        assert_eq!(evenly_spaced_layers(30, 2).unwrap(), [0, 15]);
        assert!(evenly_spaced_layers(30, 31).is_err());
    }
}
