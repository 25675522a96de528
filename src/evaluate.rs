//! A model evaluated against a teacher's answers: the lab's evaluation stage and `distill eval`.
//!
//! Each model answers the held-out prompts one at a time, greedily (so the answers, and with
//! them every quality figure, are the same on every run), timed as a server would be timed
//! (time to first token, request latency, tokens per second). Its answers are scored against
//! the teacher's stored answers with BLEU and ROUGE, and the teacher's own tokens are scored
//! under the model (held-out cross-entropy, teacher forcing).

use std::path::{Path, PathBuf};
use std::time::Instant;

use distill_data::{Example, Message};
use distill_eval::latency::{GenerationOutput, Generator, LatencyConfig, LatencyReport, SystemClock};
use distill_eval::texts::{TextScoreOptions, TextScores, score_texts};
use distill_student::tch::{self, Device, Kind};
use distill_student::train::batch::collate;
use distill_student::train::data::{Preparer, SoftSource};
use distill_student::train::loss::cross_entropy_sum;
use distill_student::{ForwardInput, GenerationConfig, Precision, Pretrained};
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// How models are evaluated. The same settings give the same quality figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSettings {
    /// The most tokens each answer may have.
    pub max_new_tokens: usize,
    /// Unmeasured requests before timing starts (they warm caches and allocators).
    pub warmup_requests: usize,
    /// The longest prompt plus teacher answer scored for cross-entropy, in tokens.
    pub max_seq_len: usize,
    /// Prompts every model also answers for the report, outside the timing.
    pub showcase_prompts: Vec<String>,
}

/// The lab manual's own test prompt.
pub const MANUAL_TEST_PROMPT: &str = "Explain the concept of machine learning to a 10-year old.";

impl Default for EvalSettings {
    fn default() -> Self {
        EvalSettings {
            max_new_tokens: 128,
            warmup_requests: 1,
            max_seq_len: 1024,
            showcase_prompts: vec![MANUAL_TEST_PROMPT.to_owned()],
        }
    }
}

/// Which part a model plays in a comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The model whose answers are the references.
    Teacher,
    /// The trained student.
    Student,
    /// The student before training: what training has to beat.
    Untrained,
}

/// What was measured for one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEval {
    /// A display name.
    pub name: String,
    /// Its part in the comparison.
    pub role: Role,
    /// Where it was loaded from, if it has files of its own.
    pub source: Option<PathBuf>,
    /// Parameters.
    pub parameters: u64,
    /// Bytes on disk of its files, if it has any.
    pub disk_bytes: Option<u64>,
    /// Peak resident memory the model adds to the process to serve: the process's peak while
    /// it answers the prompts minus its size before the model was loaded (free memory handed
    /// back to the kernel first, so that an earlier model's leftovers do not hide it).
    pub resident_bytes: Option<u64>,
    /// Seconds to load it.
    pub load_seconds: f64,
    /// Time to first token, request latency and throughput over the held-out prompts.
    pub latency: LatencyReport,
    /// Its answers scored with the teacher's answers as references.
    pub vs_teacher: TextScores,
    /// Mean cross-entropy (nats per token) of the teacher's answer tokens under this model.
    pub teacher_token_cross_entropy: f64,
    /// Its answers, in the order of the held-out examples.
    pub answers: Vec<String>,
    /// Its answers to [`EvalSettings::showcase_prompts`].
    pub showcase: Vec<String>,
}

impl ModelEval {
    /// ROUGE-L F1 against the teacher.
    pub fn rouge_l(&self) -> f64 {
        rouge_f1(&self.vs_teacher, distill_eval::rouge::RougeType::L)
    }
}

/// The mean F1 of one ROUGE type, or 0 when it was not computed.
pub fn rouge_f1(scores: &TextScores, kind: distill_eval::rouge::RougeType) -> f64 {
    scores.rouge.get(kind).map_or(0.0, |s| s.fmeasure)
}

/// A model to evaluate: its weights and where they came from.
pub struct Candidate {
    /// A display name.
    pub name: String,
    /// Its part in the comparison.
    pub role: Role,
    /// The loaded model.
    pub model: Pretrained,
    /// Its files (for the size on disk), if it has any.
    pub source: Option<PathBuf>,
    /// Seconds it took to load.
    pub load_seconds: f64,
    /// Resident bytes of the process before it was loaded (from
    /// [`distill_eval::memory::start_peak_measurement`]).
    pub rss_before: Option<u64>,
}

impl Candidate {
    /// Loads `path` (a `.gguf` file or an HF directory) on the CPU, timing the load.
    pub fn load(name: &str, role: Role, path: &Path) -> Result<Self> {
        let rss_before = distill_eval::memory::start_peak_measurement().ok();
        let started = Instant::now();
        let model = Pretrained::load(path, Device::Cpu)?;
        Ok(Candidate {
            name: name.to_owned(),
            role,
            model,
            source: Some(path.to_owned()),
            load_seconds: started.elapsed().as_secs_f64(),
            rss_before,
        })
    }
}

/// Evaluates `candidate` on `examples` (each with the teacher's answer as `response`),
/// calling `progress(done, total)` after each answer.
pub fn evaluate(
    mut candidate: Candidate,
    examples: &[Example],
    settings: &EvalSettings,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<ModelEval> {
    if examples.is_empty() {
        return Err(crate::Error::Input(
            "no held-out examples to evaluate on (the dataset has no `test` split)".into(),
        ));
    }
    let parameters = candidate.model.model.parameter_count();
    // Cross-entropy first, on the weights as loaded (generation re-lays them out).
    let teacher_token_cross_entropy =
        teacher_token_cross_entropy(&candidate.model, examples, settings.max_seq_len)?;
    // The peak that counts is serving's: the cross-entropy's scratch is left out of it.
    let _ = distill_eval::memory::start_peak_measurement();
    candidate.model.prepare_for_generation(Precision::F32);
    let mut generator = ChatGenerator {
        model: &candidate.model,
        conversations: examples.iter().map(|e| e.messages.clone()).collect(),
        config: greedy(&candidate.model, settings.max_new_tokens),
        answers: vec![String::new(); examples.len()],
    };
    let keys: Vec<String> = (0..examples.len()).map(|i| i.to_string()).collect();
    let latency_config = LatencyConfig {
        warmup_runs: settings.warmup_requests,
        runs_per_prompt: 1,
    };
    let warmup = settings.warmup_requests;
    let latency = distill_eval::latency::measure_latency_with(
        &mut generator,
        &keys,
        &latency_config,
        &SystemClock::default(),
        &mut |done, total| {
            if done > warmup {
                progress(done - warmup, total - warmup);
            }
        },
    )?;
    let resident_bytes = candidate
        .rss_before
        .zip(distill_eval::memory::peak_rss_bytes().ok())
        .map(|(before, peak)| peak.saturating_sub(before));
    let mut showcase = Vec::with_capacity(settings.showcase_prompts.len());
    for prompt in &settings.showcase_prompts {
        let messages = [distill_student::tokenizer::Message::new("user", prompt.clone())];
        showcase.push(
            candidate
                .model
                .chat(&messages, &generator.config, &mut |_| {})?
                .text,
        );
    }
    let references: Vec<&str> = examples.iter().map(|e| e.response.as_str()).collect();
    let vs_teacher = score_texts(&generator.answers, &references, &TextScoreOptions::default())?;
    let disk_bytes = match &candidate.source {
        Some(path) => Some(distill_eval::size::disk_size(path)?),
        None => None,
    };
    Ok(ModelEval {
        name: candidate.name,
        role: candidate.role,
        source: candidate.source,
        parameters,
        disk_bytes,
        resident_bytes,
        load_seconds: candidate.load_seconds,
        latency,
        vs_teacher,
        teacher_token_cross_entropy,
        answers: generator.answers,
        showcase,
    })
}

/// Greedy decoding up to `max_new_tokens`, stopping at the tokenizer's end tokens.
pub fn greedy(model: &Pretrained, max_new_tokens: usize) -> GenerationConfig {
    model.generation_config(max_new_tokens)
}

/// Answers the conversation whose index is the prompt text, keeping each answer.
struct ChatGenerator<'m> {
    model: &'m Pretrained,
    conversations: Vec<Vec<Message>>,
    config: GenerationConfig,
    answers: Vec<String>,
}

impl Generator for ChatGenerator<'_> {
    fn generate(
        &mut self,
        prompt: &str,
        on_token: &mut dyn FnMut(&str),
    ) -> std::result::Result<GenerationOutput, distill_eval::BoxError> {
        let index: usize = prompt.parse()?;
        let messages: Vec<distill_student::tokenizer::Message> =
            self.conversations[index].iter().map(Into::into).collect();
        let reply = self.model.chat(&messages, &self.config, &mut |piece| {
            if !piece.is_empty() {
                on_token(piece)
            }
        })?;
        self.answers[index] = reply.text.clone();
        Ok(GenerationOutput {
            text: reply.text,
            completion_tokens: reply.completion_tokens,
            prompt_tokens: Some(reply.prompt_tokens),
        })
    }
}

/// Mean cross-entropy of the teacher's response tokens (and the closing end token) under
/// `model`, with the prompt as context.
pub fn teacher_token_cross_entropy(
    model: &Pretrained,
    examples: &[Example],
    max_seq_len: usize,
) -> Result<f64> {
    let nll = answer_nll(model, examples, max_seq_len, false)?;
    Ok(nll.nats / nll.tokens as f64)
}

/// The negative log-likelihood of the teacher's answers under a model, in total.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AnswerNll {
    /// Nats over every answer token and each closing end token.
    pub nats: f64,
    /// Tokens scored, in the model's tokenization.
    pub tokens: usize,
    /// UTF-8 bytes of the answers scored.
    pub bytes: usize,
}

impl AnswerNll {
    /// Bits per answer byte: comparable between models whatever their tokenizers.
    pub fn bits_per_byte(&self) -> f64 {
        self.nats / std::f64::consts::LN_2 / self.bytes.max(1) as f64
    }
}

/// The negative log-likelihood of the teacher's response tokens (and the closing end token)
/// under `model`, with the prompt as context. Answers cut by `max_seq_len` are refused, so
/// that tokens and bytes cover the same text.
pub fn teacher_answer_nll(model: &Pretrained, examples: &[Example], max_seq_len: usize) -> Result<AnswerNll> {
    answer_nll(model, examples, max_seq_len, true)
}

/// [`teacher_answer_nll`]; unless `whole`, answers cut by `max_seq_len` count as far as they go.
fn answer_nll(
    model: &Pretrained,
    examples: &[Example],
    max_seq_len: usize,
    whole: bool,
) -> Result<AnswerNll> {
    let preparer = Preparer::new(&model.tokenizer, max_seq_len, SoftSource::None)?;
    let (sequences, stats) = preparer.prepare(examples, Path::new("<held-out examples>"))?;
    if whole && (stats.truncated > 0 || stats.dropped_long_prompt > 0) {
        return Err(crate::Error::Input(format!(
            "{} held-out examples are longer than {max_seq_len} tokens",
            stats.truncated + stats.dropped_long_prompt
        )));
    }
    let _guard = tch::no_grad_guard();
    let (mut sum, mut count) = (0.0, 0usize);
    let indices: Vec<usize> = (0..sequences.len()).collect();
    for chunk in indices.chunks(8) {
        let batch = collate(&sequences, chunk, 0, model.model.model.device());
        let logits = model
            .model
            .model
            .forward(&ForwardInput::new(&batch.input_ids), None);
        let vocab = logits.size()[2];
        let rows = logits
            .reshape([-1, vocab])
            .index_select(0, &batch.positions)
            .to_kind(Kind::Float);
        sum += cross_entropy_sum(&rows, &batch.targets).double_value(&[]);
        count += batch.targets_count;
    }
    if count == 0 {
        return Err(crate::Error::Input(
            "the held-out examples have no answer tokens to score".into(),
        ));
    }
    Ok(AnswerNll {
        nats: sum,
        tokens: count,
        bytes: examples.iter().map(|e| e.response.len()).sum(),
    })
}
