//! Tokenizers and chat templates, with the same ids and text as transformers.
//!
//! A [`Tokenizer`] comes from a GGUF file's metadata ([`Tokenizer::from_gguf`], a byte-level BPE
//! built the way transformers' GGUF converter builds it) or from a Hugging Face directory
//! ([`Tokenizer::from_hf_dir`]: `tokenizer.json`, `tokenizer_config.json`, chat template files).
//! [`Tokenizer::save_hf`] writes a directory that `AutoTokenizer.from_pretrained` loads with the
//! same ids. [`ChatTemplate`] renders the model's Jinja chat template.
//!
//! ```no_run
//! use distill_student::tokenizer::{Message, Tokenizer};
//!
//! let tokenizer = Tokenizer::from_gguf_file("SmolLM2-135M-Instruct.Q4_1.gguf")?;
//! let prompt = tokenizer.render_chat(&[Message::user("Hi!")], true)?;
//! let ids = tokenizer.encode(&prompt, false)?;
//! let mut stream = tokenizer.incremental_decoder(true);
//! for &id in &ids {
//!     if let Some(text) = stream.step(id)? {
//!         print!("{text}");
//!     }
//! }
//! print!("{}", stream.finish()?);
//! # Ok::<(), distill_student::tokenizer::Error>(())
//! ```

mod chat;
pub(crate) mod gguf;
mod gguf_spm;
mod hf;
mod jinja;
mod spelling;

use std::fmt;
use std::path::{Path, PathBuf};

use distill_gguf::GgufFile;
use sha2::{Digest, Sha256};

use crate::error::ErrorKind;

pub use chat::{CHATML_TEMPLATE, ChatTemplate, DEFAULT_TEMPLATE, Message};

/// Everything that can go wrong building or using a tokenizer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file that does not parse, or JSON that could not be written.
    #[error("{}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A `tokenizer.json` that the tokenizers library rejects.
    #[error("{}", path.display())]
    TokenizerFile {
        /// The file.
        path: PathBuf,
        /// What the tokenizers library reported.
        #[source]
        source: tokenizers::Error,
    },
    /// A configuration value of the wrong type or shape (`tokenizer_config.json` and friends).
    #[error("{}: `{key}`: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The GGUF file could not be read.
    #[error(transparent)]
    Gguf(#[from] distill_gguf::Error),
    /// GGUF tokenizer metadata that is missing, of the wrong type, or inconsistent.
    #[error("{}: metadata `{key}`: {reason}", path.display())]
    GgufMetadata {
        /// The GGUF file.
        path: PathBuf,
        /// The metadata key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A GGUF tokenizer model other than byte-level BPE (`gpt2`).
    #[error("{}: tokenizer model `{model}` is not supported (supported: gpt2)", path.display())]
    UnsupportedModel {
        /// The GGUF file.
        path: PathBuf,
        /// The value of `tokenizer.ggml.model`.
        model: String,
    },
    /// The tokenizers library failed to build, encode, decode or serialize.
    #[error("the tokenizers library failed")]
    Tokenizers(#[source] tokenizers::Error),
    /// A special token that bos/eos insertion needs is not in the vocabulary.
    #[error("special token {0:?} is not in the vocabulary")]
    SpecialTokenNotInVocab(String),
    /// The bos/eos post-processor's template is not one the tokenizers library accepts.
    #[error("post-processor: {0}")]
    PostProcessor(String),
    /// The bos/eos post-processor could not be built.
    #[error("cannot build the bos/eos post-processor")]
    PostProcessorBuild(#[source] tokenizers::processors::template::TemplateProcessingBuilderError),
    /// A chat template that does not compile or fails to render.
    #[error("chat template `{name}`")]
    Template {
        /// The template's name (`default` for a single template).
        name: String,
        /// The template error, with its line.
        #[source]
        source: minijinja::Error,
    },
    /// A chat template from a model file (GGUF metadata, `tokenizer_config.json`, a `.jinja`
    /// file) that does not compile.
    #[error("{}: chat template `{name}`", path.display())]
    TemplateFile {
        /// The file the template came from.
        path: PathBuf,
        /// The template's name (`default` for a single template).
        name: String,
        /// The template error, with its line.
        #[source]
        source: minijinja::Error,
    },
    /// Named chat templates without one called `default`.
    #[error("the model has several chat templates ({}) and none is named `default`", names.join(", "))]
    NoDefaultTemplate {
        /// The names there are.
        names: Vec<String>,
    },
}

impl Error {
    /// The kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Io { source, .. } => ErrorKind::of_io(source),
            Error::Gguf(e) => ErrorKind::of_gguf(e),
            Error::Json { .. }
            | Error::TokenizerFile { .. }
            | Error::Config { .. }
            | Error::GgufMetadata { .. }
            | Error::SpecialTokenNotInVocab(_)
            | Error::PostProcessor(_)
            | Error::PostProcessorBuild(_)
            | Error::TemplateFile { .. }
            | Error::NoDefaultTemplate { .. } => ErrorKind::Malformed,
            Error::UnsupportedModel { .. } => ErrorKind::Unsupported,
            Error::Tokenizers(_) | Error::Template { .. } => ErrorKind::Input,
        }
    }

    /// Names the file a template came from (other errors are returned unchanged).
    fn in_file(self, path: &Path) -> Self {
        match self {
            Error::Template { name, source } => Error::TemplateFile {
                path: path.to_path_buf(),
                name,
                source,
            },
            other => other,
        }
    }
}

/// A `Result` with this module's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The named special tokens, as text (`None` when the model has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    /// Beginning of sequence.
    pub bos: Option<String>,
    /// End of sequence (for chat models, usually the end of a turn).
    pub eos: Option<String>,
    /// Unknown token.
    pub unk: Option<String>,
    /// Padding.
    pub pad: Option<String>,
}

impl SpecialTokens {
    /// The tokens that are set, with their transformers names (`bos_token`, `eos_token`, …).
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("bos_token", &self.bos),
            ("eos_token", &self.eos),
            ("unk_token", &self.unk),
            ("pad_token", &self.pad),
        ]
        .into_iter()
        .filter_map(|(name, token)| token.as_deref().map(|t| (name, t)))
    }
}

/// What the loaders gather; [`Tokenizer::assemble`] derives the rest.
struct Parts {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    add_bos: bool,
    add_eos: bool,
    eos_ids: Vec<u32>,
    chat_template: Option<ChatTemplate>,
    model_max_length: Option<u64>,
    /// Keys of the source `tokenizer_config.json` this module does not manage, kept for saving.
    config_extra: serde_json::Map<String, serde_json::Value>,
}

/// A tokenizer (the `tokenizers` library underneath) with its special tokens and chat template.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    special: SpecialTokens,
    add_bos: bool,
    add_eos: bool,
    eos_ids: Vec<u32>,
    chat_template: Option<ChatTemplate>,
    model_max_length: Option<u64>,
    config_extra: serde_json::Map<String, serde_json::Value>,
    vocab_size: usize,
    vocab_hash: String,
    spelling: spelling::Spelling,
}

impl fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The inner tokenizer's Debug prints the whole vocabulary.
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size)
            .field("special", &self.special)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .field("eos_ids", &self.eos_ids)
            .field("chat_template", &self.chat_template)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer described by a GGUF file's metadata (`tokenizer.ggml.*`), exactly as
    /// transformers' GGUF converter does for byte-level BPE (`tokenizer.ggml.model = gpt2`).
    ///
    /// Malformed metadata (missing keys, ids outside the vocabulary, arrays of different lengths,
    /// merges of unknown tokens) gives an error, never a panic.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        gguf::from_gguf(gguf)
    }

    /// Reads a GGUF file's header and builds its tokenizer (see [`Self::from_gguf`]).
    pub fn from_gguf_file(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_gguf(&GgufFile::read_header(path)?)
    }

    /// Loads a Hugging Face tokenizer directory: `tokenizer.json` (required), and when present
    /// `tokenizer_config.json`, `special_tokens_map.json`, `chat_template.jinja`,
    /// `additional_chat_templates/*.jinja` and `generation_config.json` (for extra eos ids).
    ///
    /// As in transformers 5, template files take priority over `chat_template` in the config,
    /// and `tokenizer.json`'s post-processor decides whether bos/eos are added.
    pub fn from_hf_dir(dir: impl AsRef<Path>) -> Result<Self> {
        hf::from_hf_dir(dir.as_ref())
    }

    /// Writes `tokenizer.json`, `tokenizer_config.json` and the chat template files to `dir`
    /// (created if needed), so that `AutoTokenizer.from_pretrained(dir)` gives the same ids.
    pub fn save_hf(&self, dir: impl AsRef<Path>) -> Result<()> {
        hf::save_hf(self, dir.as_ref())
    }

    fn assemble(parts: Parts) -> Result<Self> {
        let Parts {
            inner,
            special,
            add_bos,
            add_eos,
            eos_ids,
            chat_template,
            model_max_length,
            config_extra,
        } = parts;
        let model_max = inner.get_vocab(false).into_values().max();
        let added_max = inner.get_added_tokens_decoder().into_keys().max();
        let vocab_size = model_max.max(added_max).map_or(0, |id| id as usize + 1);
        let vocab_hash = vocab_hash(&inner, vocab_size);
        let mut eos_unique = Vec::with_capacity(eos_ids.len());
        for id in eos_ids {
            if !eos_unique.contains(&id) {
                eos_unique.push(id);
            }
        }
        let spelling = spelling::Spelling::of(&inner);
        Ok(Self {
            inner,
            special,
            add_bos,
            add_eos,
            eos_ids: eos_unique,
            chat_template,
            model_max_length,
            config_extra,
            vocab_size,
            vocab_hash,
            spelling,
        })
    }

    /// Token ids of `text`. With `add_special_tokens`, the model's bos/eos are added as its
    /// post-processor says. Special tokens written in the text (`<|im_start|>`) are always
    /// recognised, as transformers does by default.
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(Error::Tokenizers)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`; with `skip_special_tokens`, special tokens are left out. Ids outside the
    /// vocabulary are skipped. Invalid UTF-8 becomes U+FFFD, as in transformers.
    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(Error::Tokenizers)
    }

    /// A decoder for token-by-token output that only ever emits complete UTF-8 text.
    pub fn incremental_decoder(&self, skip_special_tokens: bool) -> IncrementalDecoder<'_> {
        IncrementalDecoder {
            tokenizer: self,
            skip_special_tokens,
            ids: Vec::new(),
            prefix: String::new(),
            prefix_index: 0,
        }
    }

    /// Ids that end generation: the eos token, then any end-of-turn/end-of-message tokens the model
    /// names (GGUF `eot`/`eom` ids, `generation_config.json`'s `eos_token_id`). No duplicates.
    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// The bos token's id, if the model has one.
    pub fn bos_token_id(&self) -> Option<u32> {
        self.special
            .bos
            .as_deref()
            .and_then(|t| self.inner.token_to_id(t))
    }

    /// The padding token's id, if the model has one.
    pub fn pad_token_id(&self) -> Option<u32> {
        self.special
            .pad
            .as_deref()
            .and_then(|t| self.inner.token_to_id(t))
    }

    /// The named special tokens.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Whether [`encode`](Self::encode) with special tokens starts with bos (GGUF-built
    /// tokenizers) or what `tokenizer_config.json` says (HF directories).
    pub fn adds_bos_token(&self) -> bool {
        self.add_bos
    }

    /// Whether encoding with special tokens ends with eos (see [`Self::adds_bos_token`]).
    pub fn adds_eos_token(&self) -> bool {
        self.add_eos
    }

    /// The number of token ids: one past the largest id, added tokens included. An embedding
    /// matrix needs at least this many rows.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// A stable hash of the vocabulary (id → token text, added tokens included), as 64 hex digits.
    ///
    /// Two tokenizers with the same hash map every id to the same token, so a teacher's logits
    /// line up with a student's. It does not cover merges or pre-tokenization.
    pub fn vocab_hash(&self) -> &str {
        &self.vocab_hash
    }

    /// The id of a token (as spelled in the vocabulary), if any.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token (as spelled in the vocabulary) of an id, if any.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The bytes token `id` stands for in text, where the vocabulary's spelling is known
    /// (byte-level BPE, or SentencePiece-style pieces with byte fallback).
    pub fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        self.spelling.bytes(&self.inner.id_to_token(id)?)
    }

    /// The id of the single token standing for `bytes`, else of the token written `text` as it
    /// is (special tokens); `None` when no one token spells them.
    pub fn token_for_bytes(&self, bytes: &[u8], text: &str) -> Option<u32> {
        self.spelling
            .spellings(bytes)
            .iter()
            .find_map(|spelled| self.inner.token_to_id(spelled))
            .or_else(|| self.inner.token_to_id(text))
    }

    /// The model's own chat template, if it has one.
    pub fn chat_template(&self) -> Option<&ChatTemplate> {
        self.chat_template.as_ref()
    }

    /// Replaces the chat template (given the tokenizer's special tokens); it is saved by [`Self::save_hf`].
    pub fn set_chat_template(&mut self, template: Option<ChatTemplate>) {
        self.chat_template = template.map(|t| t.with_special_tokens(self.special.clone()));
    }

    /// Renders a conversation with the model's chat template, or, only when the model has none,
    /// with the ChatML fallback ([`CHATML_TEMPLATE`]).
    pub fn render_chat(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        match &self.chat_template {
            Some(template) => template.render(messages, add_generation_prompt),
            None => {
                tracing::debug!("the model has no chat template; using ChatML");
                ChatTemplate::chatml()
                    .with_special_tokens(self.special.clone())
                    .render(messages, add_generation_prompt)
            }
        }
    }

    /// The longest input the model was trained for, when known (GGUF `<arch>.context_length`,
    /// or `model_max_length` in `tokenizer_config.json`).
    pub fn model_max_length(&self) -> Option<u64> {
        self.model_max_length
    }

    /// The underlying `tokenizers` tokenizer, for what this type does not wrap (offsets, batches).
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// SHA-256 over a versioned tag and, for each id in order, its token's length and bytes (or a
/// marker for an id without a token).
fn vocab_hash(inner: &tokenizers::Tokenizer, vocab_size: usize) -> String {
    let mut hasher = Sha256::new();
    hasher.update(b"distill-vocab-v1\0");
    for id in 0..vocab_size {
        match inner.id_to_token(id as u32) {
            Some(token) => {
                hasher.update((token.len() as u32).to_le_bytes());
                hasher.update(token.as_bytes());
            }
            None => hasher.update(u32::MAX.to_le_bytes()),
        }
    }
    hasher.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Turns a stream of token ids into text pieces, holding back incomplete UTF-8 (a character
/// split across byte-level tokens) until the rest arrives. Made by [`Tokenizer::incremental_decoder`].
///
/// The pieces from [`step`](Self::step), followed by [`finish`](Self::finish), add up to
/// [`Tokenizer::decode`] of all the ids.
pub struct IncrementalDecoder<'a> {
    tokenizer: &'a Tokenizer,
    skip_special_tokens: bool,
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

impl fmt::Debug for IncrementalDecoder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IncrementalDecoder")
            .field("pending_ids", &self.ids)
            .finish_non_exhaustive()
    }
}

impl IncrementalDecoder<'_> {
    /// Adds one id; returns the new text, or `None` while the text so far ends in an incomplete character.
    pub fn step(&mut self, id: u32) -> Result<Option<String>> {
        // The tokenizers library's `DecodeStream` algorithm, on state we own so that `finish` can flush it.
        tokenizers::step_decode_stream(
            &self.tokenizer.inner,
            vec![id],
            self.skip_special_tokens,
            &mut self.ids,
            &mut self.prefix,
            &mut self.prefix_index,
        )
        .map_err(Error::Tokenizers)
    }

    /// Ends the stream: returns the text still held back (incomplete characters as U+FFFD).
    pub fn finish(self) -> Result<String> {
        let text = self.tokenizer.decode(&self.ids, self.skip_special_tokens)?;
        match text.strip_prefix(self.prefix.as_str()) {
            Some(rest) => Ok(rest.to_owned()),
            None => Err(Error::Tokenizers(
                format!(
                    "decoded text {text:?} does not extend the text already emitted ({:?})",
                    self.prefix
                )
                .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_tokens_iterate_in_transformers_order() {
        let special = SpecialTokens {
            bos: Some("<s>".into()),
            eos: None,
            unk: Some("<unk>".into()),
            pad: None,
        };
        let names: Vec<_> = special.iter().collect();
        assert_eq!(names, [("bos_token", "<s>"), ("unk_token", "<unk>")]);
    }
}
