//! From [`Example`]s to token sequences: the chat template, label masking, truncation, and the
//! mapping of a teacher's stored top-k tokens onto the student's vocabulary.
//!
//! An example becomes `full = prompt + response + eos`, where `prompt` is the chat template
//! rendered with the generation prompt. The model reads `full[..n-1]` and is trained to predict
//! `full[1..]`; targets inside the prompt are [`IGNORE`]. Soft targets (teacher top-k) line up
//! with the response tokens; the closing eos has a hard target only.

use std::convert::Infallible;
use std::path::Path;

use distill_data::{Example, Split, TokenLogprob, TopLogprob};

use super::align::align;
use super::error::{Error, Result};
use crate::tokenizer::{Message, Tokenizer};

/// Target value of positions that are not trained (prompt and padding), as in PyTorch.
pub const IGNORE: i64 = -100;

/// The metadata key under which a dataset records the [`Tokenizer::vocab_hash`] of the teacher
/// that produced its logprobs. When it differs from the student's, the teacher's tokens are
/// aligned with the student's on byte spans instead of mapped one for one.
pub const TEACHER_VOCAB_HASH_KEY: &str = "teacher_vocab_hash";

/// One teacher alternative at a position: a student token id and its log-probability.
pub type SoftEntry = (u32, f32);

/// A stretch of the response where the teacher's and the student's tokens both begin and end
/// (one token on each side where they share a vocabulary): the unit of the vocabulary-free
/// losses ([`super::config::LossKind::Uld`], [`super::config::LossKind::Alm`]).
#[derive(Debug, Clone, PartialEq)]
pub struct SpanTarget {
    /// Its first target, counted from [`Sequence::first_target`].
    pub start: usize,
    /// Its student tokens (at least one).
    pub len: usize,
    /// The teacher's log-probability of the span: the sum over its tokens.
    pub teacher_logprob: f32,
    /// For one token on each side, the teacher's probabilities at that position (the stored
    /// top-k and the sampled token), most likely first; empty otherwise.
    pub teacher_top: Vec<f32>,
}

/// One example, tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct Sequence {
    /// The example's id.
    pub id: String,
    /// What the model reads (`full[..n-1]`, cut to the maximum length).
    pub input_ids: Vec<i64>,
    /// What it must predict at each input position (`full[1..]`), [`IGNORE`] in the prompt.
    pub targets: Vec<i64>,
    /// Index of the first trained target; all targets from here on are trained.
    pub first_target: usize,
    /// Teacher distributions for targets `first_target + j`, `j < soft.len()`: the stored top-k
    /// (plus the chosen token), most likely first. Empty without soft labels.
    pub soft: Vec<Vec<SoftEntry>>,
    /// The response's spans, front to back, from the dataset's logprobs (each ends within the
    /// trained targets). Empty without them.
    pub spans: Vec<SpanTarget>,
    /// Whether the example was cut to fit the maximum length.
    pub truncated: bool,
}

impl Sequence {
    /// Input length in tokens.
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    /// Whether there is no input (never true for a prepared sequence).
    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Number of trained targets.
    pub fn trained(&self) -> usize {
        self.targets.len() - self.first_target
    }

    /// The sequence `prompt + response`, trained on the response (hard labels only), cut to
    /// `max_seq_len` inputs; `None` when the prompt leaves no room for a response.
    pub fn from_ids(id: &str, prompt: &[i64], response: &[i64], max_seq_len: usize) -> Option<Self> {
        if prompt.is_empty() || prompt.len() > max_seq_len || response.is_empty() {
            return None;
        }
        let full: Vec<i64> = prompt.iter().chain(response).copied().collect();
        let keep = (full.len() - 1).min(max_seq_len);
        let first_target = prompt.len() - 1;
        let mut targets = full[1..=keep].to_vec();
        targets[..first_target].fill(IGNORE);
        Some(Sequence {
            id: id.to_owned(),
            input_ids: full[..keep].to_vec(),
            targets,
            first_target,
            soft: Vec::new(),
            spans: Vec::new(),
            truncated: keep < full.len() - 1,
        })
    }
}

/// Where soft labels come from while preparing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftSource {
    /// Hard labels only: responses are tokenized from their text.
    None,
    /// The dataset's stored logprobs: responses are the teacher's own tokens, mapped to student ids.
    Dataset,
}

/// What preparation did, for logs and `training_args.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DataStats {
    /// Examples read for this split.
    pub examples: usize,
    /// Sequences kept.
    pub sequences: usize,
    /// Sequences cut to the maximum length.
    pub truncated: usize,
    /// Examples dropped because the prompt alone filled the maximum length.
    pub dropped_long_prompt: usize,
    /// Input tokens over all kept sequences.
    pub input_tokens: usize,
    /// Trained target tokens over all kept sequences.
    pub target_tokens: usize,
    /// Trained targets with a teacher distribution (soft labels); the rest have hard labels.
    pub soft_targets: usize,
    /// Trained targets inside a span of teacher tokens ([`SpanTarget`]), which the span
    /// likelihood loss covers whatever the tokenizers.
    pub span_targets: usize,
    /// Examples whose teacher tokenized differently from the student (another vocabulary, or
    /// tokens the student cannot spell), aligned on byte spans ([`super::align`]).
    pub cross_tokenizer_examples: usize,
}

/// Tokenizes examples for training.
#[derive(Debug)]
pub struct Preparer<'a> {
    tokenizer: &'a Tokenizer,
    max_seq_len: usize,
    soft: SoftSource,
    eos: i64,
    spans: bool,
}

impl<'a> Preparer<'a> {
    /// A preparer for `tokenizer`. Every response ends with the end-of-sequence token its chat
    /// template closes an answer with (Gemma's `<end_of_turn>`, ChatML's `<|im_end|>`), or else
    /// its first one.
    pub fn new(tokenizer: &'a Tokenizer, max_seq_len: usize, soft: SoftSource) -> Result<Self> {
        let eos = answer_terminator(tokenizer)
            .or_else(|| tokenizer.eos_token_ids().first().copied())
            .ok_or_else(|| {
                Error::Config("the student's tokenizer has no eos token to end responses with".into())
            })?;
        Ok(Self {
            tokenizer,
            max_seq_len,
            soft,
            eos: i64::from(eos),
            spans: false,
        })
    }

    /// Also keeps each response's [`SpanTarget`]s (the vocabulary-free losses need them; they
    /// cost about a top-k of floats per token).
    pub fn with_spans(mut self, spans: bool) -> Self {
        self.spans = spans;
        self
    }

    /// Tokenizes every example; `source` names the file in errors.
    pub fn prepare(&self, examples: &[Example], source: &Path) -> Result<(Vec<Sequence>, DataStats)> {
        let mut stats = DataStats {
            examples: examples.len(),
            ..DataStats::default()
        };
        let mut out = Vec::with_capacity(examples.len());
        for example in examples {
            let (sequence, aligned) = self.sequence_with_path(example, source)?;
            stats.cross_tokenizer_examples += usize::from(aligned);
            match sequence {
                Some(seq) => {
                    stats.truncated += usize::from(seq.truncated);
                    stats.input_tokens += seq.len();
                    stats.target_tokens += seq.trained();
                    stats.soft_targets += seq.soft.iter().filter(|e| !e.is_empty()).count();
                    stats.span_targets += seq.spans.iter().map(|s| s.len).sum::<usize>();
                    out.push(seq);
                }
                None => stats.dropped_long_prompt += 1,
            }
        }
        stats.sequences = out.len();
        Ok((out, stats))
    }

    /// One example, or `None` when its prompt leaves no room for a response.
    pub fn sequence(&self, example: &Example, source: &Path) -> Result<Option<Sequence>> {
        Ok(self.sequence_with_path(example, source)?.0)
    }

    /// [`Self::sequence`], and whether its teacher tokens were aligned across tokenizers.
    fn sequence_with_path(&self, example: &Example, source: &Path) -> Result<(Option<Sequence>, bool)> {
        let messages: Vec<Message> = example.messages.iter().map(Message::from).collect();
        let prompt_text = self.tokenizer.render_chat(&messages, true)?;
        let prompt: Vec<i64> = self
            .tokenizer
            .encode(&prompt_text, false)?
            .into_iter()
            .map(i64::from)
            .collect();
        let (response, aligned) = match self.soft {
            SoftSource::None => {
                let ids = self.tokenizer.encode(&example.response, false)?;
                let ids = ids.into_iter().map(i64::from).collect();
                (Response::hard(ids), false)
            }
            SoftSource::Dataset => self.teacher_tokens(example, source)?,
        };
        let mut answer = response.ids.clone();
        answer.push(self.eos);
        let Response { soft, mut spans, .. } = response;
        if !self.spans {
            spans.clear();
        }
        let sequence = Sequence::from_ids(&example.id, &prompt, &answer, self.max_seq_len).map(|mut seq| {
            let trained = seq.trained();
            seq.soft = soft;
            seq.soft.truncate(trained);
            seq.spans = spans;
            seq.spans.retain(|s| s.start + s.len <= trained);
            seq
        });
        Ok((sequence, aligned))
    }

    /// The response's tokens and their teacher distributions, and whether they were aligned
    /// across tokenizers. A teacher with the student's vocabulary (same hash, or no hash and
    /// every token spelled by the student) gives its own tokens, mapped to student ids; any
    /// other is aligned on byte spans ([`super::align`]).
    fn teacher_tokens(&self, example: &Example, source: &Path) -> Result<(Response, bool)> {
        let fail = |reason: String| Error::Example {
            path: source.into(),
            id: example.id.clone(),
            reason,
        };
        let same_hash = match example.metadata.get(TEACHER_VOCAB_HASH_KEY) {
            Some(hash) => {
                let hash = hash
                    .as_str()
                    .ok_or_else(|| fail(format!("metadata `{TEACHER_VOCAB_HASH_KEY}` is not a string")))?;
                Some(hash == self.tokenizer.vocab_hash())
            }
            None => None,
        };
        let logprobs = example.logprobs.as_ref().ok_or_else(|| {
            fail("has no logprobs; soft-label losses need teacher logprobs in every training example (or a teacher model)".into())
        })?;
        if let Some(position) = logprobs
            .iter()
            .position(|t| t.token.is_empty() && t.bytes.is_none())
        {
            return Err(fail(format!(
                "logprob {position} has neither token text nor bytes, so it cannot be matched to the student's tokens"
            )));
        }
        if same_hash != Some(false) {
            match self.mapped_tokens(example, source, logprobs) {
                Ok(response) => return Ok((response, false)),
                // Without a hash, a token the student cannot spell means another vocabulary.
                Err(Error::UnmappedToken { .. }) if same_hash.is_none() => {}
                Err(e) => return Err(e),
            }
        }
        Ok((self.aligned_tokens(logprobs).map_err(fail)?, true))
    }

    /// The teacher's own tokens as student ids, each with its top-k alternatives.
    fn mapped_tokens(&self, example: &Example, source: &Path, logprobs: &[TokenLogprob]) -> Result<Response> {
        let mut ids = Vec::with_capacity(logprobs.len());
        let mut soft = Vec::with_capacity(logprobs.len());
        let mut spans = Vec::with_capacity(logprobs.len());
        for (position, t) in logprobs.iter().enumerate() {
            let map = |token: &str, bytes: Option<&[u8]>| {
                map_token(self.tokenizer, token, bytes).ok_or_else(|| Error::UnmappedToken {
                    path: source.into(),
                    id: example.id.clone(),
                    position,
                    token: token.to_string(),
                })
            };
            let chosen = map(&t.token, t.bytes.as_deref())?;
            ids.push(i64::from(chosen));
            soft.push(soft_entries(t, chosen, |alt| {
                map(&alt.token, alt.bytes.as_deref()).map(Some)
            })?);
            spans.push(SpanTarget {
                start: position,
                len: 1,
                teacher_logprob: t.logprob as f32,
                teacher_top: teacher_top(t),
            });
        }
        Ok(Response { ids, soft, spans })
    }

    /// The teacher's text as the student tokenizes it, aligned with the teacher's tokens on
    /// byte spans: a student token spelling exactly one teacher token's bytes gets that
    /// position's alternatives that are single student tokens (the rest of the mass is the
    /// loss's rest bucket); the others get hard labels only, and every span the sum of its
    /// teacher tokens' log-probabilities.
    fn aligned_tokens(&self, logprobs: &[TokenLogprob]) -> std::result::Result<Response, String> {
        let spelled = |t: &TokenLogprob| t.bytes.clone().unwrap_or_else(|| t.token.clone().into_bytes());
        let teacher: Vec<Vec<u8>> = logprobs.iter().map(spelled).collect();
        let text = String::from_utf8(teacher.concat())
            .map_err(|_| "the teacher's tokens do not spell UTF-8 text".to_string())?;
        let ids = self.tokenizer.encode(&text, false).map_err(|e| e.to_string())?;
        let mut student_lens = ids
            .iter()
            .map(|&id| self.tokenizer.token_bytes(id).map(|b| b.len()))
            .collect::<Option<Vec<usize>>>()
            .ok_or("the student's tokenizer spells tokens in an unknown alphabet (neither byte-level BPE nor SentencePiece pieces), so their bytes are unknown")?;
        // SentencePiece vocabularies with a dummy prefix (Llama 2, Mistral) spell a space
        // before the first token that the text does not have.
        let phantom_space = student_lens.iter().sum::<usize>() == text.len() + 1
            && !text.starts_with(' ')
            && ids
                .first()
                .and_then(|&id| self.tokenizer.token_bytes(id))
                .is_some_and(|b| b.first() == Some(&b' '));
        if phantom_space {
            student_lens[0] -= 1;
        }
        // A token that spells no bytes (some APIs send such; a lone dummy prefix) takes no part
        // in the alignment: it keeps its hard label.
        let spelling: Vec<usize> = (0..teacher.len()).filter(|&t| !teacher[t].is_empty()).collect();
        let teacher_lens: Vec<usize> = spelling.iter().map(|&t| teacher[t].len()).collect();
        let spelled: Vec<usize> = (0..ids.len()).filter(|&s| student_lens[s] > 0).collect();
        let spelled_lens: Vec<usize> = spelled.iter().map(|&s| student_lens[s]).collect();
        let alignment = align(&teacher_lens, &spelled_lens).map_err(|e| e.to_string())?;
        let mut teacher_of = vec![None; ids.len()];
        for (k, t) in alignment.teacher_of_student().into_iter().enumerate() {
            teacher_of[spelled[k]] = t;
        }
        let soft = teacher_of
            .into_iter()
            .zip(&ids)
            .map(|(teacher, &chosen)| {
                let Some(t) = teacher.map(|t| &logprobs[spelling[t]]) else {
                    return Vec::new();
                };
                // One-to-one: the student's token spells the teacher's sampled token.
                // Alternatives the student cannot spell as one token join the rest bucket.
                let spellable = |alt: &TopLogprob| {
                    Ok::<_, Infallible>(map_token(self.tokenizer, &alt.token, alt.bytes.as_deref()))
                };
                let Ok(entries) = soft_entries(t, chosen, spellable);
                entries
            })
            .collect();
        let spans = alignment
            .spans
            .iter()
            .map(|span| {
                let teacher = span.teacher.clone().map(|t| &logprobs[spelling[t]]);
                let start = spelled[span.student.start];
                SpanTarget {
                    start,
                    len: spelled[span.student.end - 1] + 1 - start,
                    teacher_logprob: teacher.clone().map(|t| t.logprob).sum::<f64>() as f32,
                    teacher_top: if span.is_one_to_one() {
                        teacher.map(teacher_top).next().unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                }
            })
            .collect();
        let ids = ids.into_iter().map(i64::from).collect();
        Ok(Response { ids, soft, spans })
    }
}

/// The end-of-sequence token the chat template writes right after an answer, if any.
fn answer_terminator(tokenizer: &Tokenizer) -> Option<u32> {
    const ANSWER: &str = "\u{1}answer\u{1}";
    let chat = [Message::user("question"), Message::assistant(ANSWER)];
    let text = tokenizer.render_chat(&chat, false).ok()?;
    let after = &text[text.find(ANSWER)? + ANSWER.len()..];
    let first = *tokenizer.encode(after, false).ok()?.first()?;
    tokenizer.eos_token_ids().contains(&first).then_some(first)
}

/// A response as student ids, with what the teacher said about it.
struct Response {
    ids: Vec<i64>,
    soft: Vec<Vec<SoftEntry>>,
    spans: Vec<SpanTarget>,
}

impl Response {
    /// Hard labels only.
    fn hard(ids: Vec<i64>) -> Self {
        Self {
            ids,
            soft: Vec::new(),
            spans: Vec::new(),
        }
    }
}

/// The teacher's probabilities at a position, most likely first: its alternatives, and the
/// sampled token where they miss it. Vocabulary-free, so nothing is lost to unmapped tokens.
fn teacher_top(t: &TokenLogprob) -> Vec<f32> {
    let spelled = |token: &str, bytes: Option<&[u8]>| bytes.map_or(token.as_bytes().to_vec(), <[u8]>::to_vec);
    let chosen = spelled(&t.token, t.bytes.as_deref());
    let mut top: Vec<f32> = t.top_logprobs.iter().map(|a| a.logprob.exp() as f32).collect();
    if !t
        .top_logprobs
        .iter()
        .any(|a| spelled(&a.token, a.bytes.as_deref()) == chosen)
    {
        top.push(t.logprob.exp() as f32);
    }
    top.sort_by(|a, b| b.total_cmp(a));
    top
}

/// A position's teacher distribution over student ids: each alternative `student_id` gives an
/// id for, once, most likely first; then the sampled token `chosen` where the alternatives miss
/// it (a sampled token need not be among them, and its probability is known too).
fn soft_entries<E>(
    t: &TokenLogprob,
    chosen: u32,
    mut student_id: impl FnMut(&TopLogprob) -> std::result::Result<Option<u32>, E>,
) -> std::result::Result<Vec<SoftEntry>, E> {
    let mut entries: Vec<SoftEntry> = Vec::with_capacity(t.top_logprobs.len() + 1);
    for alt in &t.top_logprobs {
        if let Some(id) = student_id(alt)?
            && !entries.iter().any(|&(e, _)| e == id)
        {
            entries.push((id, alt.logprob as f32));
        }
    }
    if !entries.iter().any(|&(e, _)| e == chosen) {
        entries.push((chosen, t.logprob as f32));
    }
    Ok(entries)
}

/// Keeps the examples of a dataset file that belong to training (`split` unset or `train`) or
/// to validation (`val`). `test` examples are never trained on.
pub fn split_examples(examples: Vec<Example>) -> (Vec<Example>, Vec<Example>) {
    let mut train = Vec::new();
    let mut val = Vec::new();
    for e in examples {
        match e.split {
            None | Some(Split::Train) => train.push(e),
            Some(Split::Val) => val.push(e),
            Some(Split::Test) => {}
        }
    }
    (train, val)
}

/// The student id of a teacher token: the one student token standing for its bytes (or text),
/// else the token written as its text (special tokens).
pub fn map_token(tokenizer: &Tokenizer, token: &str, bytes: Option<&[u8]>) -> Option<u32> {
    tokenizer.token_for_bytes(bytes.unwrap_or(token.as_bytes()), token)
}

#[cfg(test)]
mod tests {
    use distill_data::{Example, Message, TokenLogprob};

    use super::*;

    /// A Llama 2-style SentencePiece tokenizer: a dummy-prefix normalizer, byte fallback.
    fn dummy_prefix_tokenizer(dir: &Path) -> Tokenizer {
        let json = serde_json::json!({
            "version": "1.0",
            "added_tokens": [
                {"id": 0, "content": "<unk>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true},
                {"id": 2, "content": "</s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}
            ],
            "normalizer": {"type": "Sequence", "normalizers": [
                {"type": "Prepend", "prepend": "▁"},
                {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}
            ]},
            "pre_tokenizer": null,
            "post_processor": null,
            "decoder": {"type": "Sequence", "decoders": [
                {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"},
                {"type": "Strip", "content": " ", "start": 1, "stop": 0}
            ]},
            "model": {"type": "BPE", "dropout": null, "unk_token": "<unk>", "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": true, "byte_fallback": true, "ignore_merges": false,
                "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "▁": 3, "a": 4, "b": 5, "▁a": 6, "ab": 7, "▁ab": 8},
                "merges": [["▁", "a"], ["a", "b"], ["▁a", "b"]]}
        });
        std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
        let config = serde_json::json!({"eos_token": "</s>", "unk_token": "<unk>"});
        std::fs::write(dir.join("tokenizer_config.json"), config.to_string()).unwrap();
        Tokenizer::from_hf_dir(dir).unwrap()
    }

    #[test]
    fn a_dummy_prefix_is_not_counted_as_a_byte_of_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let tokenizer = dummy_prefix_tokenizer(dir.path());
        // "ab ab" is ▁ab ▁ab to the student: a first token spelling a space the text lacks.
        let ids = tokenizer.encode("ab ab", false).unwrap();
        assert_eq!(ids, [8, 8]);
        assert_eq!(tokenizer.token_bytes(8).unwrap(), b" ab");
        let token = |text: &str| TokenLogprob {
            token: text.into(),
            bytes: Some(text.as_bytes().to_vec()),
            logprob: -0.5,
            top_logprobs: Vec::new(),
        };
        let mut example = Example::new(vec![Message::user("q")], "ab ab");
        example.logprobs = Some(vec![token("ab"), token(" ab")]);
        example
            .metadata
            .insert(TEACHER_VOCAB_HASH_KEY.into(), "another".into());
        let preparer = Preparer::new(&tokenizer, 64, SoftSource::Dataset)
            .unwrap()
            .with_spans(true);
        let sequence = preparer
            .sequence(&example, Path::new("x.jsonl"))
            .unwrap()
            .unwrap();
        // Both student tokens spell exactly one teacher token each.
        assert_eq!(sequence.soft, vec![vec![(8, -0.5)], vec![(8, -0.5)]]);
        assert_eq!(sequence.spans.len(), 2);
    }
}
