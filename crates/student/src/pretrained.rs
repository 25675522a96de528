//! A model together with its tokenizer: what `chat`, `export`, `eval` and the lab load.

use std::path::Path;
use std::time::Instant;

use distill_data::{TokenLogprob, TopLogprob};
use tch::{Device, Kind, Tensor};

use crate::checkpoint::{InferenceDtype, LoadedModel, hf};
use crate::error::Result;
use crate::generate::{GenerationConfig, generate, new_token_limit};
use crate::model::{ForwardInput, Precision};
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

    /// The token ids of a conversation rendered through the chat template, ending with the
    /// prompt for the model's answer.
    pub fn prompt_ids(&self, messages: &[Message]) -> Result<Vec<i64>> {
        let text = self.tokenizer.render_chat(messages, true)?;
        Ok(self
            .tokenizer
            .encode(&text, false)?
            .into_iter()
            .map(i64::from)
            .collect())
    }

    /// The log-probability of each `answer` token after `prompt`, and the `top_k` most likely
    /// tokens at its position (`top_logprobs[0]` is the greedy choice), from one teacher-forced
    /// forward pass over the prompt and the answer alone. Tokens carry their bytes.
    pub fn score(&self, prompt: &[i64], answer: &[i64], top_k: usize) -> Result<Vec<TokenLogprob>> {
        let _guard = tch::no_grad_guard();
        if prompt.is_empty() || answer.is_empty() {
            return Ok(Vec::new());
        }
        let full: Vec<i64> = prompt.iter().chain(answer).copied().collect();
        let input = Tensor::from_slice(&full)
            .unsqueeze(0)
            .to_device(self.model.model.device());
        // The output head at the answer's positions only: with a 262k vocabulary, the prompt's
        // logits would be most of the memory.
        let start = prompt.len() as i64 - 1;
        let positions =
            Tensor::arange_start(start, start + answer.len() as i64, (Kind::Int64, input.device()));
        let rows = (self.model.model)
            .forward_rows(&ForwardInput::new(&input), &positions)
            .to_kind(Kind::Float)
            .log_softmax(-1, Kind::Float)
            .to_device(Device::Cpu);
        let top_k = top_k.min(rows.size()[1] as usize);
        let (values, indices) = rows.topk(top_k as i64, -1, true, true);
        let chosen = rows.gather(1, &Tensor::from_slice(answer).unsqueeze(1), false);
        let values = Vec::<f32>::try_from(values.view(-1))?;
        let indices = Vec::<i64>::try_from(indices.view(-1))?;
        let chosen = Vec::<f32>::try_from(chosen.view(-1))?;
        let spell = |id: i64| {
            let bytes = self.tokenizer.token_bytes(id as u32).unwrap_or_else(|| {
                let spelled = self.tokenizer.id_to_token(id as u32).unwrap_or_default();
                spelled.into_bytes()
            });
            (String::from_utf8_lossy(&bytes).into_owned(), bytes)
        };
        Ok(answer
            .iter()
            .enumerate()
            .map(|(j, &id)| {
                let (token, bytes) = spell(id);
                let top_logprobs = (0..top_k)
                    .map(|r| {
                        let (token, bytes) = spell(indices[j * top_k + r]);
                        TopLogprob {
                            token,
                            bytes: Some(bytes),
                            logprob: f64::from(values[j * top_k + r]),
                        }
                    })
                    .collect();
                TokenLogprob {
                    token,
                    bytes: Some(bytes),
                    logprob: f64::from(chosen[j]),
                    top_logprobs,
                }
            })
            .collect())
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
