//! The [`Teacher`] trait: messages and sampling parameters in, one completion out.
//!
//! A teacher makes exactly one attempt per call. Retrying, rate limiting and timeouts are the
//! caller's policy (the [`engine`](crate::engine) applies them), so every implementation gets
//! the same behaviour and errors carry what the policy needs ([`Error::class`]).
//!
//! [`Error::class`]: crate::Error::class

use std::time::Duration;

use distill_data::{FinishReason, Message, TokenLogprob, Usage};

use crate::error::Result;

/// The most alternatives per token that OpenAI's API returns.
pub const MAX_TOP_LOGPROBS: u8 = 20;

/// Sampling parameters for one request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationParams {
    /// Sampling temperature (0 to 2); `None` leaves the provider's default.
    pub temperature: Option<f32>,
    /// The most tokens to generate; `None` leaves the provider's default.
    pub max_tokens: Option<u32>,
    /// A seed for providers that support best-effort determinism.
    pub seed: Option<i64>,
    /// How many choices to generate (the provider's `n`).
    pub n: u8,
    /// Alternatives to return per generated token, 0 to [`MAX_TOP_LOGPROBS`]. With 0 no
    /// logprobs are requested at all.
    pub top_logprobs: u8,
}

impl Default for GenerationParams {
    fn default() -> Self {
        GenerationParams {
            temperature: Some(0.7),
            max_tokens: Some(512),
            seed: None,
            n: 1,
            top_logprobs: 0,
        }
    }
}

impl GenerationParams {
    /// Checks the ranges OpenAI's API accepts, so a bad value fails before any request.
    pub fn validate(&self) -> Result<()> {
        let bad = |key: &str, problem: String| crate::Error::Config {
            key: key.into(),
            problem,
        };
        if self.top_logprobs > MAX_TOP_LOGPROBS {
            return Err(bad(
                "top_logprobs",
                format!("{} is over the maximum of {MAX_TOP_LOGPROBS}", self.top_logprobs),
            ));
        }
        if self.n == 0 {
            return Err(bad("n", "must be at least 1".into()));
        }
        if let Some(t) = self.temperature
            && !(0.0..=2.0).contains(&t)
        {
            return Err(bad("temperature", format!("{t} is outside 0..=2")));
        }
        if self.max_tokens == Some(0) {
            return Err(bad("max_tokens", "must be at least 1".into()));
        }
        Ok(())
    }
}

/// One generated choice.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    /// The generated text (empty when the provider returned no content, e.g. after a content
    /// filter stopped it).
    pub text: String,
    /// Why generation stopped, if the provider said.
    pub finish_reason: Option<FinishReason>,
    /// Per-token logprobs, when requested and returned.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// Azure OpenAI's per-choice `content_filter_results`, verbatim.
    pub content_filter_results: Option<serde_json::Value>,
}

/// A teacher's answer to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The choices, in the provider's order (one unless `n > 1`).
    pub choices: Vec<Choice>,
    /// Billed token usage, if the provider said.
    pub usage: Option<Usage>,
    /// Wall-clock time from sending the request to having parsed the answer.
    pub latency: Duration,
    /// The model that answered, as the provider named it.
    pub model: String,
    /// The provider's `created` timestamp (Unix seconds), if any.
    pub created: Option<i64>,
    /// Azure OpenAI's `prompt_filter_results`, verbatim.
    pub prompt_filter_results: Option<serde_json::Value>,
}

impl Completion {
    /// The first choice (every successful completion has at least one).
    pub fn first(&self) -> Option<&Choice> {
        self.choices.first()
    }
}

/// Who a teacher is, for the dataset's `teacher` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeacherId {
    /// `openai`, `openai-compatible`, `azure`, `local`, …
    pub provider: String,
    /// The model, or the Azure deployment.
    pub model: String,
}

/// A model that answers chat prompts. Implementations make one attempt per call.
///
/// The crate provides [`OpenAiTeacher`](crate::OpenAiTeacher) (OpenAI and any
/// OpenAI-compatible server) and [`AzureTeacher`](crate::AzureTeacher); a local model can
/// implement it too.
#[async_trait::async_trait]
pub trait Teacher: Send + Sync {
    /// The provider and model, recorded in every example.
    fn id(&self) -> TeacherId;

    /// Sends one request and returns the completion, or an error that says whether a retry
    /// can help ([`Error::class`](crate::Error::class)).
    async fn complete(&self, messages: &[Message], params: &GenerationParams) -> Result<Completion>;

    /// Metadata recorded in every example this teacher answers, for example the vocabulary hash
    /// of a local teacher whose logprobs a student with the same tokenizer can use directly.
    fn example_metadata(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::Map::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_ranges() {
        assert!(GenerationParams::default().validate().is_ok());
        let p = GenerationParams {
            top_logprobs: 21,
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().to_string().contains("top_logprobs"));
        let p = GenerationParams {
            temperature: Some(2.5),
            ..Default::default()
        };
        assert!(p.validate().is_err());
        let p = GenerationParams {
            n: 0,
            ..Default::default()
        };
        assert!(p.validate().is_err());
        let p = GenerationParams {
            top_logprobs: 20,
            temperature: Some(0.0),
            ..Default::default()
        };
        assert!(p.validate().is_ok());
    }
}
