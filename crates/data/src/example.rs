//! [`Example`]: one prompt, the teacher's answer, and what we know about how it was made.
//!
//! The serde form of `Example` *is* the full on-disk format (version [`FORMAT_VERSION`]); see
//! `docs/dataset-format.md`.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Version of the full format written in every full-format line as `"format_version"`.
pub const FORMAT_VERSION: u32 = 1;

/// The most top alternatives per token that OpenAI's API returns, and that we accept.
pub const MAX_TOP_LOGPROBS: usize = 20;

/// Free-form per-example metadata (for example `{"answer_key": "B"}`).
pub type Metadata = serde_json::Map<String, serde_json::Value>;

/// Who said a chat message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions that frame the conversation.
    System,
    /// The user's turn.
    User,
    /// The model's turn.
    Assistant,
}

impl Role {
    /// The role's name as in OpenAI's chat format.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// Who said it.
    pub role: Role,
    /// What was said.
    pub content: String,
}

impl Message {
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Message {
            role: Role::System,
            content: content.into(),
        }
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Message {
            role: Role::User,
            content: content.into(),
        }
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Message {
            role: Role::Assistant,
            content: content.into(),
        }
    }
}

/// Why the teacher stopped generating. Unknown reasons are kept verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum FinishReason {
    /// A natural stop or a stop sequence.
    Stop,
    /// The token limit was reached: the response is cut off.
    Length,
    /// The provider's content filter removed or stopped the response.
    ContentFilter,
    /// The model asked for a tool call.
    ToolCalls,
    /// Anything else, as the provider spelled it.
    Other(String),
}

impl FinishReason {
    /// The reason as the OpenAI API spells it.
    pub fn as_str(&self) -> &str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ContentFilter => "content_filter",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Other(s) => s,
        }
    }
}

impl From<String> for FinishReason {
    fn from(s: String) -> Self {
        match s.as_str() {
            "stop" => FinishReason::Stop,
            "length" => FinishReason::Length,
            "content_filter" => FinishReason::ContentFilter,
            "tool_calls" => FinishReason::ToolCalls,
            _ => FinishReason::Other(s),
        }
    }
}

impl From<FinishReason> for String {
    fn from(r: FinishReason) -> Self {
        match r {
            FinishReason::Other(s) => s,
            r => r.as_str().to_owned(),
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Token counts the provider billed for one request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens in the prompt.
    pub prompt_tokens: u64,
    /// Tokens in the response.
    pub completion_tokens: u64,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// How the teacher produced the response.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TeacherInfo {
    /// The model (or Azure deployment) name, e.g. `gpt-4o`.
    pub model: String,
    /// The provider, e.g. `openai`, `azure`, `openai-compatible`, `local`.
    pub provider: String,
    /// Why generation stopped, if the provider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    /// Billed token usage, if the provider said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// Wall-clock time of the request in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// When the response was created, in Unix seconds (OpenAI's `created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<i64>,
}

/// One alternative token at a position, with its log-probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// The token's UTF-8 bytes, where the provider gave them (a token can be part of a
    /// multi-byte character, so `token` alone may be lossy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<Vec<u8>>,
    /// Natural-log probability.
    pub logprob: f64,
}

/// One generated token, its log-probability, and the most likely alternatives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// The token's UTF-8 bytes, where the provider gave them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<Vec<u8>>,
    /// Natural-log probability of the sampled token.
    pub logprob: f64,
    /// Up to [`MAX_TOP_LOGPROBS`] alternatives, most likely first.
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// Which part of the dataset an example belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Training data.
    Train,
    /// Validation data.
    #[serde(alias = "validation")]
    Val,
    /// Held-out test data.
    Test,
}

impl Split {
    /// All splits, in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The split's name as written on disk.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One distillation example: a prompt, the teacher's response, and metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Stable id: [`Example::id_for`] of `messages` unless the producer chose its own.
    pub id: String,
    /// The prompt as chat messages (system and user; earlier turns may include assistant).
    pub messages: Vec<Message>,
    /// The teacher's response text.
    pub response: String,
    /// How the response was produced; absent for data imported from the lab format.
    pub teacher: Option<TeacherInfo>,
    /// Per-token log-probabilities of `response`, where the teacher returned them.
    pub logprobs: Option<Vec<TokenLogprob>>,
    /// The split, once assigned.
    pub split: Option<Split>,
    /// Free-form metadata, e.g. the answer key of a multiple-choice question.
    pub metadata: Metadata,
}

impl Example {
    /// An example with the content-hash id of `messages` and nothing else set.
    pub fn new(messages: Vec<Message>, response: impl Into<String>) -> Self {
        Example {
            id: Self::id_for(&messages),
            messages,
            response: response.into(),
            teacher: None,
            logprobs: None,
            split: None,
            metadata: Metadata::new(),
        }
    }

    /// The stable id of a prompt: the first 16 bytes of SHA-256, in lowercase hex (32
    /// characters), over a length-prefixed encoding of the messages (see
    /// `docs/dataset-format.md`). The same messages always give the same id, on any machine.
    pub fn id_for(messages: &[Message]) -> String {
        let mut h = Sha256::new();
        h.update(b"distill-id-v1\0");
        for m in messages {
            h.update(m.role.as_str().as_bytes());
            h.update([0u8]);
            h.update((m.content.len() as u64).to_le_bytes());
            h.update(m.content.as_bytes());
        }
        hex(&h.finalize()[..16])
    }

    /// The text of the last user message, which is the "prompt" of the lab format.
    pub fn prompt_text(&self) -> Option<&str> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(|m| m.content.as_str())
    }

    /// The system prompt, if any.
    pub fn system_text(&self) -> Option<&str> {
        self.messages
            .iter()
            .find(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
    }

    /// The teacher's finish reason, if known.
    pub fn finish_reason(&self) -> Option<&FinishReason> {
        self.teacher.as_ref().and_then(|t| t.finish_reason.as_ref())
    }

    /// Checks the rules every example must meet before it is written: a non-empty id, a
    /// prompt that ends with a user message, and well-formed logprobs (finite, at most
    /// [`MAX_TOP_LOGPROBS`] alternatives). Returns what is wrong.
    pub fn check(&self) -> std::result::Result<(), String> {
        if self.id.is_empty() {
            return Err("empty id".into());
        }
        match self.messages.last() {
            None => return Err("no prompt messages".into()),
            Some(m) if m.role != Role::User => {
                return Err(format!("the last prompt message is {}, not user", m.role));
            }
            Some(_) => {}
        }
        for (i, t) in self.logprobs.iter().flatten().enumerate() {
            if !t.logprob.is_finite() {
                return Err(format!("logprob of token {i} is not finite"));
            }
            if t.top_logprobs.len() > MAX_TOP_LOGPROBS {
                return Err(format!(
                    "token {i} has {} top logprobs (at most {MAX_TOP_LOGPROBS})",
                    t.top_logprobs.len()
                ));
            }
            if t.top_logprobs.iter().any(|a| !a.logprob.is_finite()) {
                return Err(format!("a top logprob of token {i} is not finite"));
            }
        }
        Ok(())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

// The full format on the wire. A borrowed twin for writing avoids cloning large logprob
// vectors; the owned twin checks the version on reading.
#[derive(Serialize)]
struct WireRef<'a> {
    format_version: u32,
    id: &'a str,
    messages: &'a [Message],
    response: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    teacher: Option<&'a TeacherInfo>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<&'a [TokenLogprob]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    split: Option<Split>,
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    metadata: &'a Metadata,
}

#[derive(Deserialize)]
struct Wire {
    format_version: u32,
    id: String,
    messages: Vec<Message>,
    response: String,
    #[serde(default)]
    teacher: Option<TeacherInfo>,
    #[serde(default)]
    logprobs: Option<Vec<TokenLogprob>>,
    #[serde(default)]
    split: Option<Split>,
    #[serde(default)]
    metadata: Metadata,
}

impl Serialize for Example {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        WireRef {
            format_version: FORMAT_VERSION,
            id: &self.id,
            messages: &self.messages,
            response: &self.response,
            teacher: self.teacher.as_ref(),
            logprobs: self.logprobs.as_deref(),
            split: self.split,
            metadata: &self.metadata,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Example {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let w = Wire::deserialize(d)?;
        if w.format_version != FORMAT_VERSION {
            return Err(serde::de::Error::custom(format_args!(
                "unsupported format_version {} (this reader knows {FORMAT_VERSION})",
                w.format_version
            )));
        }
        Ok(Example {
            id: w.id,
            messages: w.messages,
            response: w.response,
            teacher: w.teacher,
            logprobs: w.logprobs,
            split: w.split,
            metadata: w.metadata,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_stable_and_content_sensitive() {
        let a = vec![Message::system("be brief"), Message::user("hi")];
        let id = Example::id_for(&a);
        assert_eq!(id.len(), 32);
        assert_eq!(id, Example::id_for(&a.clone()));
        // Pinned so that an accidental change of the hashing scheme is caught: ids are
        // written to disk and used for resume and splits. Python's hashlib gives the same
        // value for the scheme in docs/dataset-format.md.
        assert_eq!(id, "7176ddd3ed387b35f974ea26ab4eb7e1");
        // Moving text between messages changes the id (length prefixes).
        let b = vec![Message::system("be brie"), Message::user("fhi")];
        assert_ne!(id, Example::id_for(&b));
        let c = vec![Message::user("be brief"), Message::user("hi")];
        assert_ne!(id, Example::id_for(&c));
    }

    #[test]
    fn finish_reason_round_trips_unknown_values() {
        for s in ["stop", "length", "content_filter", "tool_calls", "eos"] {
            let r: FinishReason = serde_json::from_str(&format!("\"{s}\"")).unwrap();
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{s}\""));
        }
        assert_eq!(
            FinishReason::from("eos".to_string()),
            FinishReason::Other("eos".into())
        );
    }

    #[test]
    fn full_format_has_version_and_rejects_others() {
        let e = Example::new(vec![Message::user("q")], "a");
        let line = serde_json::to_string(&e).unwrap();
        assert!(line.starts_with("{\"format_version\":1,"), "{line}");
        let back: Example = serde_json::from_str(&line).unwrap();
        assert_eq!(back, e);
        let v2 = line.replace("\"format_version\":1", "\"format_version\":2");
        let err = serde_json::from_str::<Example>(&v2).unwrap_err();
        assert!(err.to_string().contains("unsupported format_version 2"), "{err}");
    }

    #[test]
    fn split_accepts_validation_alias() {
        let s: Split = serde_json::from_str("\"validation\"").unwrap();
        assert_eq!(s, Split::Val);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"val\"");
    }

    #[test]
    fn check_catches_bad_examples() {
        let mut e = Example::new(vec![Message::user("q")], "a");
        assert!(e.check().is_ok());
        e.messages.push(Message::assistant("x"));
        assert!(e.check().unwrap_err().contains("not user"));
        e.messages.pop();
        let alt = TopLogprob {
            token: "a".into(),
            bytes: None,
            logprob: -1.0,
        };
        e.logprobs = Some(vec![TokenLogprob {
            token: "a".into(),
            bytes: Some(vec![97]),
            logprob: -0.1,
            top_logprobs: vec![alt; 21],
        }]);
        assert!(e.check().unwrap_err().contains("21 top logprobs"));
    }
}
