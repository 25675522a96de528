//! OpenAI's wire format: the requests the server accepts and the answers it sends, as the
//! `openai` clients parse them. Unknown request fields are ignored, as vLLM and llama.cpp do.

use serde::{Deserialize, Serialize};

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// The served model's name.
    pub model: String,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Sampling controls shared with `/v1/completions`.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// The newer name of `max_tokens`.
    pub max_completion_tokens: Option<u64>,
    /// Return the chosen tokens' log-probabilities.
    pub logprobs: Option<bool>,
    /// Alternatives per token, 0 to 20 (needs `logprobs`).
    pub top_logprobs: Option<u32>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// The served model's name.
    pub model: String,
    /// One prompt (a string, or an array holding one string).
    pub prompt: Prompt,
    /// Sampling controls shared with `/v1/chat/completions`.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// Alternatives per token, 0 to 20 (the legacy API's `logprobs: N`).
    pub logprobs: Option<u32>,
}

/// What both endpoints take.
#[derive(Debug, Deserialize)]
pub struct SamplingFields {
    /// 0 to 2; 0 is greedy. OpenAI's default is 1.
    pub temperature: Option<f64>,
    /// Nucleus sampling, in (0, 1].
    pub top_p: Option<f64>,
    /// The most new tokens.
    pub max_tokens: Option<u64>,
    /// Up to 4 strings that end the answer (not included in it).
    pub stop: Option<Stop>,
    /// Seed for sampling: the same seed and request give the same answer.
    pub seed: Option<i64>,
    /// Answers to generate; only 1.
    pub n: Option<u32>,
    /// Stream server-sent events.
    pub stream: Option<bool>,
    /// `include_usage` adds a last chunk with the token counts.
    pub stream_options: Option<StreamOptions>,
    /// Go on past end-of-sequence tokens until `max_tokens` (vLLM's and llama.cpp's
    /// extension; load tests use it so that every answer is the same length).
    pub ignore_eos: Option<bool>,
}

/// `stream_options`.
#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    /// Send a chunk with `usage` before `[DONE]`.
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl Stop {
    /// The stop strings.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            Stop::One(s) => vec![s],
            Stop::Many(v) => v,
        }
    }
}

/// A completion prompt.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    /// A string.
    Text(String),
    /// An array of strings (only one is accepted).
    Batch(Vec<String>),
}

/// One chat message.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    /// system, developer, user or assistant.
    pub role: String,
    /// A string, or text parts.
    pub content: Option<Content>,
}

/// A message's content.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// `[{"type": "text", "text": …}]`.
    Parts(Vec<ContentPart>),
}

/// One content part; only text parts are accepted.
#[derive(Debug, Deserialize)]
pub struct ContentPart {
    /// The part's type (`text`).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    pub text: Option<String>,
}

/// Why an answer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token or a stop string.
    Stop,
    /// `max_tokens`, or the end of the context.
    Length,
}

/// Token counts.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Both.
    pub total_tokens: usize,
}

/// One token and its log-probability (chat format).
#[derive(Debug, Clone, Serialize)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Natural-log probability under the model (before temperature).
    pub logprob: f32,
    /// The text's UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The most likely tokens at this position, most likely first.
    pub top_logprobs: Vec<TopLogprob>,
}

/// An alternative token.
#[derive(Debug, Clone, Serialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Natural-log probability.
    pub logprob: f32,
    /// The text's UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// `logprobs` of a chat choice.
#[derive(Debug, Clone, Serialize)]
pub struct ChoiceLogprobs {
    /// One entry per generated token.
    pub content: Vec<TokenLogprob>,
}

/// A chat completion.
#[derive(Debug, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-…`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// The one answer.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
    /// The server and model, for reproducibility with `seed`.
    pub system_fingerprint: String,
}

/// A chat answer.
#[derive(Debug, Serialize)]
pub struct ChatChoice {
    /// 0.
    pub index: u32,
    /// The assistant's message.
    pub message: AssistantMessage,
    /// Per-token log-probabilities, when asked for.
    pub logprobs: Option<ChoiceLogprobs>,
    /// Why it ended.
    pub finish_reason: FinishReason,
}

/// The assistant's message.
#[derive(Debug, Serialize)]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: &'static str,
    /// The answer.
    pub content: String,
}

/// A streamed chat chunk.
#[derive(Debug, Serialize)]
pub struct ChatChunk {
    /// The same id in every chunk of an answer.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// One choice, or none in the usage chunk.
    pub choices: Vec<ChunkChoice>,
    /// Only in the last chunk, when `stream_options.include_usage` is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// As in [`ChatCompletion`].
    pub system_fingerprint: String,
}

/// A chunk's choice.
#[derive(Debug, Serialize)]
pub struct ChunkChoice {
    /// 0.
    pub index: u32,
    /// The new text.
    pub delta: Delta,
    /// The new tokens' log-probabilities, when asked for.
    pub logprobs: Option<ChoiceLogprobs>,
    /// Set in the last chunk of the answer.
    pub finish_reason: Option<FinishReason>,
}

/// A chunk's new text.
#[derive(Debug, Default, Serialize)]
pub struct Delta {
    /// `assistant` in the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// A text completion (or one streamed chunk of it).
#[derive(Debug, Serialize)]
pub struct TextCompletion {
    /// `cmpl-…`.
    pub id: String,
    /// `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The served model's name.
    pub model: String,
    /// The one answer (none in a streamed usage chunk).
    pub choices: Vec<TextChoice>,
    /// Token counts (streamed: only in the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// As in [`ChatCompletion`].
    pub system_fingerprint: String,
}

/// A text answer.
#[derive(Debug, Serialize)]
pub struct TextChoice {
    /// 0.
    pub index: u32,
    /// The (new) text.
    pub text: String,
    /// Legacy log-probabilities, when asked for.
    pub logprobs: Option<LegacyLogprobs>,
    /// Why it ended; `null` in streamed chunks before the last.
    pub finish_reason: Option<FinishReason>,
}

/// The completions API's log-probabilities.
#[derive(Debug, Default, Serialize)]
pub struct LegacyLogprobs {
    /// Each token's text.
    pub tokens: Vec<String>,
    /// Each token's log-probability.
    pub token_logprobs: Vec<f32>,
    /// Each position's alternatives, token text to log-probability.
    pub top_logprobs: Vec<serde_json::Map<String, serde_json::Value>>,
    /// Each token's byte offset in the answer.
    pub text_offset: Vec<usize>,
}

/// `GET /v1/models`.
#[derive(Debug, Serialize)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    /// The served model.
    pub data: Vec<ModelCard>,
}

/// One model.
#[derive(Debug, Serialize)]
pub struct ModelCard {
    /// The name requests use.
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// Unix seconds when the server started.
    pub created: u64,
    /// `distill`.
    pub owned_by: &'static str,
}
