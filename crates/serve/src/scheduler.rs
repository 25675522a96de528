//! The scheduler: one thread that owns the model and decodes every request, continuously
//! batched. Between two decode steps it admits waiting requests (each prefilled alone, up to
//! the batch limit) and drops the finished ones, whose clients left, or whose deadline passed;
//! each step then decodes all the others at once ([`BatchDecoder`]).
//!
//! Handlers talk to it through a bounded queue of [`Job`]s and receive [`Event`]s back on a
//! channel per job; a full queue is the server's backpressure (429).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use distill_student::batching::BatchDecoder;
use distill_student::tokenizer::{IncrementalDecoder, Tokenizer};
use distill_student::{CausalLm, LoadedModel};
use tokio::sync::mpsc;

use crate::api::{FinishReason, TokenLogprob, TopLogprob, Usage};
use crate::metrics::Metrics;
use crate::sampling::{LogSoftmax, Sampler, top_k};

/// One request, tokenized, and where its answer goes.
#[derive(Debug)]
pub struct Job {
    /// The prompt's token ids.
    pub prompt: Vec<i64>,
    /// The most new tokens (already within the context).
    pub max_tokens: usize,
    /// 0 is greedy.
    pub temperature: f64,
    /// Nucleus sampling's p.
    pub top_p: f64,
    /// Repeatable sampling.
    pub seed: Option<i64>,
    /// Strings that end the answer, not included in it.
    pub stop: Vec<String>,
    /// Alternatives per token, when log-probabilities were asked for.
    pub top_logprobs: Option<usize>,
    /// Decode past end-of-sequence tokens until `max_tokens`.
    pub ignore_eos: bool,
    /// When the answer is abandoned.
    pub deadline: Instant,
    /// The answer, token by token.
    pub events: mpsc::UnboundedSender<Event>,
}

/// What a job's channel receives.
#[derive(Debug)]
pub enum Event {
    /// A generated token: the text it makes final (empty while a possible stop string or a
    /// split character is held back) and, when asked for, its log-probability.
    Token {
        /// New text.
        text: String,
        /// The token's log-probability and alternatives.
        logprob: Option<TokenLogprob>,
    },
    /// The answer is complete.
    Done {
        /// Why it ended.
        finish_reason: FinishReason,
        /// Token counts.
        usage: Usage,
    },
    /// The answer cannot be completed.
    Failed(Failure),
}

/// Why a job failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// It ran past its deadline (queued and decoding together).
    Timeout,
    /// The model failed; the message says how.
    Internal(String),
}

/// What the scheduler is told at start.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Sequences decoded together at most.
    pub max_batch: usize,
    /// Jobs waiting at most.
    pub max_queue: usize,
    /// Decode each sequence as it would be decoded alone (see `GenerationConfig::batch_invariant`).
    pub batch_invariant: bool,
    /// Tokens that end an answer.
    pub stop_tokens: Vec<i64>,
}

/// The handle the HTTP side holds.
#[derive(Debug)]
pub struct Scheduler {
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    decoding: Arc<AtomicUsize>,
}

/// The queue is full: the client should retry later.
#[derive(Debug)]
pub struct Busy;

impl Scheduler {
    /// Starts the scheduler's thread, which owns `model` from now on.
    pub fn start(
        model: LoadedModel,
        tokenizer: Arc<Tokenizer>,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(settings.max_queue.max(1));
        let decoding = Arc::new(AtomicUsize::new(0));
        let thread = std::thread::Builder::new()
            .name("distill-scheduler".into())
            .spawn({
                let decoding = decoding.clone();
                move || run(&model.model, &tokenizer, rx, &settings, &metrics, &decoding)
            })
            .expect("spawning the scheduler thread");
        Self {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            decoding,
        }
    }

    /// Queues a job, or says the queue is full (or closed for shutdown).
    pub fn submit(&self, job: Job) -> Result<(), Busy> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        match jobs.as_ref() {
            Some(tx) => tx.try_send(job).map_err(|_| Busy),
            None => Err(Busy),
        }
    }

    /// Jobs waiting to be admitted.
    pub fn queued(&self) -> usize {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.as_ref().map_or(0, |tx| tx.max_capacity() - tx.capacity())
    }

    /// Sequences decoding now.
    pub fn decoding(&self) -> usize {
        self.decoding.load(Ordering::Relaxed)
    }

    /// Takes no new jobs, lets the queued and decoding ones finish, and waits for the thread.
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the scheduler thread panicked");
        }
    }
}

/// The scheduler's loop: admit, step, settle, until the queue closes and the batch is empty.
fn run(
    model: &CausalLm,
    tokenizer: &Tokenizer,
    mut jobs: mpsc::Receiver<Job>,
    settings: &Settings,
    metrics: &Metrics,
    decoding: &AtomicUsize,
) {
    let vocab = usize::try_from(model.vocab_size()).unwrap_or(0);
    let mut batch = BatchDecoder::new(model);
    batch.set_batch_invariant(settings.batch_invariant);
    let mut active: Vec<Sequence<'_>> = Vec::new();
    let context = Context {
        tokenizer,
        stop_tokens: &settings.stop_tokens,
        metrics,
    };
    loop {
        while active.len() < settings.max_batch.max(1) {
            let job = if active.is_empty() {
                match jobs.blocking_recv() {
                    Some(job) => job,
                    None => return,
                }
            } else {
                match jobs.try_recv() {
                    Ok(job) => job,
                    Err(_) => break,
                }
            };
            if let Some(sequence) = admit(&mut batch, job, &context) {
                active.push(sequence);
            }
        }
        settle(&mut batch, &mut active);
        decoding.store(active.len(), Ordering::Relaxed);
        if active.is_empty() {
            continue;
        }
        let tokens: Vec<i64> = active.iter().map(|s| s.last).collect();
        match batch.step(&tokens) {
            Ok(logits) => {
                for (sequence, row) in active.iter_mut().zip(logits.chunks_exact(vocab)) {
                    sequence.accept(row, &context);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "decode step failed: failing the batch");
                for sequence in &mut active {
                    sequence.fail(Failure::Internal(e.to_string()));
                }
            }
        }
        settle(&mut batch, &mut active);
        decoding.store(active.len(), Ordering::Relaxed);
    }
}

/// Drops finished sequences from the batch.
fn settle(batch: &mut BatchDecoder<'_>, active: &mut Vec<Sequence<'_>>) {
    let keep: Vec<bool> = active.iter().map(|s| !s.finished).collect();
    if keep.contains(&false) {
        batch.retain(&keep);
        active.retain(|s| !s.finished);
    }
}

/// What every sequence's step reads.
struct Context<'a> {
    tokenizer: &'a Tokenizer,
    stop_tokens: &'a [i64],
    metrics: &'a Metrics,
}

/// Prefills a job into the batch and takes its first token; `None` when it is already over
/// (its client left, its deadline passed, or the prefill failed).
fn admit<'t>(batch: &mut BatchDecoder<'_>, job: Job, context: &Context<'t>) -> Option<Sequence<'t>> {
    if job.events.is_closed() {
        context.metrics.cancelled();
        return None;
    }
    let mut sequence = Sequence {
        sampler: Sampler::new(job.temperature, job.top_p, job.seed),
        text: Some(context.tokenizer.incremental_decoder(true)),
        answer: String::new(),
        sent: 0,
        generated: 0,
        last: 0,
        finished: false,
        started: Instant::now(),
        job,
    };
    if sequence.timed_out() {
        return None;
    }
    match batch.admit(&sequence.job.prompt, sequence.job.max_tokens) {
        Ok(logits) => {
            sequence.accept(&logits, context);
            Some(sequence)
        }
        Err(e) => {
            sequence.fail(Failure::Internal(e.to_string()));
            None
        }
    }
}

/// A job being decoded.
struct Sequence<'t> {
    job: Job,
    sampler: Sampler,
    /// `None` once flushed.
    text: Option<IncrementalDecoder<'t>>,
    /// The answer's text so far.
    answer: String,
    /// Bytes of `answer` already sent.
    sent: usize,
    generated: usize,
    last: i64,
    finished: bool,
    started: Instant,
}

impl Sequence<'_> {
    /// Takes the next token from `logits` and sends what it makes final.
    fn accept(&mut self, logits: &[f32], context: &Context<'_>) {
        if self.job.events.is_closed() {
            context.metrics.cancelled();
            self.finished = true;
            return;
        }
        if self.timed_out() {
            return;
        }
        let token = self.sampler.pick(logits);
        self.generated += 1;
        context.metrics.generated(1);
        let token = token as i64;
        if !self.job.ignore_eos && context.stop_tokens.contains(&token) {
            return self.finish(FinishReason::Stop, None);
        }
        let logprob = self
            .job
            .top_logprobs
            .map(|k| logprob_entry(context.tokenizer, logits, token as usize, k));
        let decoder = self.text.as_mut().expect("a decoding sequence has its decoder");
        match decoder.step(token as u32) {
            Ok(Some(piece)) => self.answer.push_str(&piece),
            Ok(None) => {}
            Err(e) => return self.fail(Failure::Internal(e.to_string())),
        }
        self.last = token;
        if let Some(at) = find_stop(&self.answer, &self.job.stop) {
            // Cut at the stop string: nothing held back after it counts.
            self.answer.truncate(at);
            self.text = None;
            return self.finish(FinishReason::Stop, logprob);
        }
        if self.generated >= self.job.max_tokens {
            return self.finish(FinishReason::Length, logprob);
        }
        let visible = self.answer.len() - held_back(&self.answer, &self.job.stop);
        let text = self.answer[self.sent..visible].to_owned();
        self.sent = visible;
        self.send(Event::Token { text, logprob });
    }

    /// Flushes the text held back and sends the end of the answer.
    fn finish(&mut self, mut reason: FinishReason, logprob: Option<TokenLogprob>) {
        if let Some(decoder) = self.text.take() {
            // A split character held back at the end comes out (as U+FFFD where incomplete).
            match decoder.finish() {
                Ok(rest) => self.answer.push_str(&rest),
                Err(e) => return self.fail(Failure::Internal(e.to_string())),
            }
            if let Some(at) = find_stop(&self.answer, &self.job.stop) {
                self.answer.truncate(at);
                reason = FinishReason::Stop;
            }
        }
        let text = self.answer.get(self.sent..).unwrap_or_default().to_owned();
        self.sent = self.answer.len();
        if !text.is_empty() || logprob.is_some() {
            self.send(Event::Token { text, logprob });
        }
        let usage = Usage {
            prompt_tokens: self.job.prompt.len(),
            completion_tokens: self.generated,
            total_tokens: self.job.prompt.len() + self.generated,
        };
        tracing::debug!(
            tokens = self.generated,
            seconds = self.started.elapsed().as_secs_f64(),
            ?reason,
            "answer finished"
        );
        self.send(Event::Done {
            finish_reason: reason,
            usage,
        });
        self.finished = true;
    }

    /// Ends the job with a failure.
    fn fail(&mut self, failure: Failure) {
        self.send(Event::Failed(failure));
        self.finished = true;
    }

    /// Fails the job once its deadline has passed; whether it had.
    fn timed_out(&mut self) -> bool {
        if Instant::now() < self.job.deadline {
            return false;
        }
        self.fail(Failure::Timeout);
        true
    }

    fn send(&mut self, event: Event) {
        if self.job.events.send(event).is_err() {
            self.finished = true;
        }
    }
}

/// Where the first stop string starts in `text`.
fn find_stop(text: &str, stops: &[String]) -> Option<usize> {
    stops
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// How many bytes at the end of `text` could begin a stop string, and so are not sent yet.
fn held_back(text: &str, stops: &[String]) -> usize {
    stops
        .iter()
        .flat_map(|stop| {
            (1..stop.len())
                .rev()
                .filter(|&k| stop.is_char_boundary(k) && text.ends_with(&stop[..k]))
                .take(1)
        })
        .max()
        .unwrap_or(0)
}

/// The chosen token's log-probability and the `k` most likely alternatives.
fn logprob_entry(tokenizer: &Tokenizer, logits: &[f32], token: usize, k: usize) -> TokenLogprob {
    let normaliser = LogSoftmax::new(logits);
    let text = |id: usize| tokenizer.decode(&[id as u32], false).unwrap_or_default();
    let token_text = text(token);
    TokenLogprob {
        bytes: token_text.as_bytes().to_vec(),
        token: token_text,
        logprob: normaliser.of(logits, token),
        top_logprobs: top_k(logits, k)
            .into_iter()
            .map(|id| {
                let token = text(id);
                TopLogprob {
                    bytes: token.as_bytes().to_vec(),
                    token,
                    logprob: normaliser.of(logits, id),
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_are_found_and_their_prefixes_held_back() {
        let stops = vec!["\n\nUser:".to_owned(), "END".to_owned()];
        assert_eq!(find_stop("hello END there", &stops), Some(6));
        assert_eq!(find_stop("a\n\nUser: b END", &stops), Some(1));
        assert_eq!(find_stop("nothing", &stops), None);
        assert_eq!(held_back("hello EN", &stops), 2);
        assert_eq!(held_back("hello\n\nUs", &stops), 4);
        assert_eq!(held_back("hello", &stops), 0);
        assert_eq!(held_back("héllo", &["é!".to_owned()]), 0);
        assert_eq!(held_back("hé", &["é!".to_owned()]), 2);
    }
}
