//! A model together with its tokenizer: what `chat`, `export`, `eval` and the lab load.

use std::path::Path;
use std::time::Instant;

use tch::Device;

use crate::checkpoint::{InferenceDtype, LoadedModel, hf};
use crate::error::Result;
use crate::generate::{GenerationConfig, generate, new_token_limit};
use crate::model::Precision;
use crate::tokenizer::{Message, Tokenizer};

/// A causal language model and the tokenizer it was trained with.
#[derive(Debug)]
pub struct Pretrained {
    /// The network and its weights.
    pub model: LoadedModel,
    /// Its tokenizer and chat template.
    pub tokenizer: Tokenizer,
}

/// The text of one reply, and what producing it cost.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The generated text, without the stop token.
    pub text: String,
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Whether generation ended on a stop token (rather than the token limit).
    pub stopped: bool,
    /// Seconds from the start until the first new token.
    pub first_token_seconds: f64,
    /// Seconds in all.
    pub total_seconds: f64,
}

impl Pretrained {
    /// Loads a `.gguf` file or an HF directory, with its tokenizer, onto `device`.
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        let path = path.as_ref();
        let tokenizer = Self::tokenizer(path)?;
        Ok(Self {
            model: LoadedModel::load(path, device)?,
            tokenizer,
        })
    }

    /// Loads a `.gguf` file or an HF directory, with its tokenizer, onto `device`, ready to
    /// generate from weights in `dtype` (see [`LoadedModel::load_for_inference`]).
    pub fn load_for_inference(path: impl AsRef<Path>, device: Device, dtype: InferenceDtype) -> Result<Self> {
        let path = path.as_ref();
        let tokenizer = Self::tokenizer(path)?;
        Ok(Self {
            model: LoadedModel::load_for_inference(path, device, dtype)?,
            tokenizer,
        })
    }

    /// The tokenizer of a `.gguf` file or an HF directory. Read before the weights: what
    /// building it frees is then reused by the weights instead of adding to the peak.
    fn tokenizer(path: &Path) -> Result<Tokenizer> {
        Ok(if path.is_dir() {
            Tokenizer::from_hf_dir(path)?
        } else {
            Tokenizer::from_gguf_file(path)?
        })
    }

    /// Readies the weights for generation in `precision` (see [`LoadedModel::prepare_for_generation`]).
    pub fn prepare_for_generation(&mut self, precision: Precision) {
        self.model.prepare_for_generation(precision);
    }

    /// Writes an HF directory (config, safetensors, tokenizer, chat template) that transformers loads.
    pub fn save_hf(&self, dir: impl AsRef<Path>) -> Result<()> {
        let dir = dir.as_ref();
        hf::save_dir(&self.model, dir)?;
        self.tokenizer.save_hf(dir)?;
        Ok(())
    }

    /// Generation settings that stop at the tokenizer's end-of-sequence tokens.
    pub fn generation_config(&self, max_new_tokens: usize) -> GenerationConfig {
        GenerationConfig {
            max_new_tokens,
            stop_tokens: self
                .tokenizer
                .eos_token_ids()
                .iter()
                .map(|&t| i64::from(t))
                .collect(),
            pad_token: self.tokenizer.pad_token_id().map_or(0, i64::from),
            ..GenerationConfig::default()
        }
    }

    /// Answers a conversation through the chat template, streaming text pieces to `on_text`.
    pub fn chat(
        &self,
        messages: &[Message],
        config: &GenerationConfig,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Reply> {
        let started = Instant::now();
        let prompt = self.tokenizer.render_chat(messages, true)?;
        let ids: Vec<i64> = self
            .tokenizer
            .encode(&prompt, false)?
            .into_iter()
            .map(i64::from)
            .collect();
        let mut stream = self.tokenizer.incremental_decoder(true);
        let mut first_token = None;
        let mut failure = None;
        let out = generate(
            &self.model.model,
            std::slice::from_ref(&ids),
            config,
            &mut |_, token| {
                first_token.get_or_insert_with(|| started.elapsed().as_secs_f64());
                match stream.step(token as u32) {
                    Ok(Some(piece)) => on_text(&piece),
                    Ok(None) => {}
                    Err(e) => failure = Some(e),
                }
            },
        )?;
        if let Some(e) = failure {
            return Err(e.into());
        }
        let rest = stream.finish()?;
        on_text(&rest);
        let new_tokens = &out[0];
        let tokens: Vec<u32> = new_tokens.iter().map(|&t| t as u32).collect();
        Ok(Reply {
            text: self.tokenizer.decode(&tokens, true)?,
            prompt_tokens: ids.len(),
            completion_tokens: new_tokens.len(),
            stopped: new_tokens.len() < new_token_limit(&self.model.model, ids.len(), config.max_new_tokens),
            first_token_seconds: first_token.unwrap_or_default(),
            total_seconds: started.elapsed().as_secs_f64(),
        })
    }
}
