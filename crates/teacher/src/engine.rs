//! The generation engine: prompts in, a crash-safe dataset out.
//!
//! - **Bounded concurrency**: at most [`GenerateOptions::concurrency`] requests in flight.
//! - **Rate limits**: every attempt passes the client-side [`RateLimiter`].
//! - **Retries**: transient errors are retried with [`RetryPolicy`], honouring the server's wait
//!   hints; permanent ones are not. A prompt that still fails goes to the failures file
//!   ([`failures_path`]) and the run goes on. A fatal error (bad credentials, exhausted quota)
//!   stops the run: every later request would fail the same way.
//! - **Exactly N**: a prompt is only dispatched while `written + in flight < N`, and the
//!   writer refuses duplicate ids, so the file never holds more than N examples or an id twice.
//!   Failed prompts are replaced by later prompts from the source.
//! - **Resume and stop**: with `resume`, ids already in the file are skipped. When the
//!   cancellation token fires the engine takes no new work and starts no retries, lets
//!   in-flight requests finish and writes them, and leaves a file that `resume` completes.
//!   A `kill -9` leaves at most a torn last line, which the writer cuts on reopen.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distill_data::{Example, ExampleWriter, Prompt, SyncPolicy, TeacherInfo, Usage, WriterOptions};
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorClass, Result};
use crate::limiter::{RateLimiter, RateLimits};
use crate::pricing::{Accounting, PriceTable};
use crate::retry::RetryPolicy;
use crate::teacher::{Completion, GenerationParams, Teacher};

/// Options for one generation run.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// How many examples the output file should hold when the run is done.
    pub num_examples: usize,
    /// The dataset file (full-format JSONL).
    pub output: PathBuf,
    /// Sampling parameters (`n` must be 1: one example per prompt).
    pub params: GenerationParams,
    /// Requests in flight at once.
    pub concurrency: usize,
    /// Client-side rate limits.
    pub limits: RateLimits,
    /// Retry policy for transient errors.
    pub retry: RetryPolicy,
    /// Deadline for one attempt, from sending to a parsed answer.
    pub request_timeout: Duration,
    /// Continue an existing file, skipping the ids it holds. Without it, an existing non-empty
    /// file is an error rather than something to overwrite.
    pub resume: bool,
    /// Prices for the cost accounting.
    pub prices: PriceTable,
    /// When the dataset writer fsyncs.
    pub sync: SyncPolicy,
}

impl GenerateOptions {
    /// Defaults: concurrency 8, no rate limits, 6 attempts, 600 s per attempt, fsync per record.
    pub fn new(num_examples: usize, output: impl Into<PathBuf>) -> Self {
        GenerateOptions {
            num_examples,
            output: output.into(),
            params: GenerationParams::default(),
            concurrency: 8,
            limits: RateLimits::default(),
            retry: RetryPolicy::default(),
            // OpenAI's own SDKs wait 600 s. A single-slot local server (llama.cpp) queues
            // requests, and the queueing counts against this deadline.
            request_timeout: Duration::from_secs(600),
            resume: false,
            prices: PriceTable::default(),
            sync: SyncPolicy::EveryRecord,
        }
    }

    fn validate(&self) -> Result<()> {
        self.params.validate()?;
        if self.params.n != 1 {
            return Err(Error::Options(
                "n must be 1: the engine writes one example per prompt".into(),
            ));
        }
        if self.concurrency == 0 {
            return Err(Error::Options("concurrency must be at least 1".into()));
        }
        if self.retry.max_attempts == 0 {
            return Err(Error::Options("max_attempts must be at least 1".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::Options("the request timeout must be positive".into()));
        }
        Ok(())
    }
}

/// The failures file for `output`: `data/x.jsonl` → `data/x.failures.jsonl`.
pub fn failures_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    output.with_file_name(format!("{stem}.failures.jsonl"))
}

/// One line of the failures file.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct FailureRecord {
    /// The prompt id.
    pub id: String,
    /// The last user message.
    pub prompt: String,
    /// The full prompt.
    pub messages: Vec<distill_data::Message>,
    /// Why it failed (the last error).
    pub reason: String,
    /// Attempts made.
    pub attempts: u32,
}

/// What happened.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The run started; `resumed` examples were already in the file.
    Started {
        /// Examples wanted in total.
        target: usize,
        /// Examples already in the file.
        resumed: usize,
    },
    /// An example was written.
    Written {
        /// Its id.
        id: String,
        /// The successful attempt's latency.
        latency: Duration,
        /// Its usage.
        usage: Option<Usage>,
    },
    /// A transient error; the prompt is retried after `delay`.
    Retrying {
        /// The prompt id.
        id: String,
        /// The attempt that failed.
        attempt: u32,
        /// The wait before the next attempt.
        delay: Duration,
        /// The error, in one line.
        reason: String,
    },
    /// A prompt went to the failures file.
    Failed {
        /// The prompt id.
        id: String,
        /// Attempts made.
        attempts: u32,
        /// The error, in one line.
        reason: String,
    },
    /// Cancellation was seen: no new work; waiting for requests in flight.
    Stopping,
    /// The run is over.
    Finished(Summary),
}

/// Counters at the time of an event.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Examples wanted in total.
    pub target: usize,
    /// Examples in the file (resumed plus written by this run).
    pub done: usize,
    /// Examples that were already in the file at the start.
    pub resumed: usize,
    /// Prompts sent to the failures file by this run.
    pub failed: usize,
    /// Requests in flight.
    pub in_flight: usize,
    /// Retries made so far.
    pub retries: u64,
    /// Usage and cost of this run's successful requests.
    pub accounting: Accounting,
    /// Time since the run started.
    pub elapsed: Duration,
}

/// An event with the counters after it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressEvent {
    /// What happened.
    pub event: Event,
    /// The counters after it.
    pub progress: Progress,
}

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The file holds the requested number of examples.
    Completed,
    /// The prompt source ran out first (too few prompts, or too many failures).
    SourceExhausted,
    /// The caller cancelled.
    Cancelled,
    /// A fatal error stopped the run; [`Engine::run`] returns it.
    Fatal,
}

/// The final account of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The counters at the end.
    pub progress: Progress,
    /// Why the run ended.
    pub stop: StopReason,
    /// The failures file, when this run failed any prompt.
    pub failures_file: Option<PathBuf>,
    /// Where the prices came from.
    pub prices_as_of: String,
}

/// Receives progress events; a closed receiver is ignored.
pub type EventSender = UnboundedSender<ProgressEvent>;

/// Runs a teacher over prompts into a dataset file.
pub struct Engine {
    teacher: Arc<dyn Teacher>,
    options: GenerateOptions,
    events: Option<EventSender>,
}

/// Counters shared between the collector and the request tasks.
#[derive(Debug, Default)]
struct Counters {
    done: AtomicUsize,
    failed: AtomicUsize,
    in_flight: AtomicUsize,
    retries: AtomicU64,
    accounting: Mutex<Accounting>,
}

struct Shared {
    teacher: Arc<dyn Teacher>,
    params: GenerationParams,
    retry: RetryPolicy,
    timeout: Duration,
    limiter: RateLimiter,
    stop: CancellationToken,
    counters: Counters,
    events: Option<EventSender>,
    target: usize,
    resumed: usize,
    started: tokio::time::Instant,
}

impl Shared {
    fn progress(&self) -> Progress {
        let c = &self.counters;
        Progress {
            target: self.target,
            done: c.done.load(Ordering::Relaxed),
            resumed: self.resumed,
            failed: c.failed.load(Ordering::Relaxed),
            in_flight: c.in_flight.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            accounting: *c.accounting.lock().unwrap_or_else(|p| p.into_inner()),
            elapsed: self.started.elapsed(),
        }
    }

    fn emit(&self, event: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(ProgressEvent {
                event,
                progress: self.progress(),
            });
        }
    }
}

/// How one prompt ended.
enum Outcome {
    Success(Box<Completion>),
    Failed {
        error: Error,
        attempts: u32,
    },
    /// Cancelled before it could finish; left for a resumed run.
    Abandoned,
}

impl Engine {
    /// An engine for `teacher` with `options`.
    pub fn new(teacher: Arc<dyn Teacher>, options: GenerateOptions) -> Self {
        Engine {
            teacher,
            options,
            events: None,
        }
    }

    /// Sends progress events to `events`.
    pub fn with_events(mut self, events: EventSender) -> Self {
        self.events = Some(events);
        self
    }

    /// Generates until the output holds `num_examples` examples, the prompts run out, or
    /// `cancel` fires. Prompts are taken in order; ids already written are skipped.
    pub async fn run(
        &self,
        prompts: impl IntoIterator<Item = Prompt>,
        cancel: CancellationToken,
    ) -> Result<Summary> {
        let opts = &self.options;
        opts.validate()?;
        let mut writer = open_output(opts)?;
        let resumed = writer.completed_ids().len();
        let failures_file = failures_path(&opts.output);
        let mut failures = FailureLog::start(failures_file.clone())?;
        let shared = Arc::new(Shared {
            teacher: self.teacher.clone(),
            params: opts.params.clone(),
            retry: opts.retry.clone(),
            timeout: opts.request_timeout,
            limiter: RateLimiter::new(opts.limits),
            // A child token: a fatal error stops this run's retries without touching the caller's.
            stop: cancel.child_token(),
            counters: Counters {
                done: AtomicUsize::new(resumed),
                ..Default::default()
            },
            events: self.events.clone(),
            target: opts.num_examples,
            resumed,
            started: tokio::time::Instant::now(),
        });
        shared.emit(Event::Started {
            target: opts.num_examples,
            resumed,
        });
        tracing::info!(
            output = %opts.output.display(),
            target = opts.num_examples,
            resumed,
            concurrency = opts.concurrency,
            "generation started"
        );

        let teacher_id = self.teacher.id();
        let mut feed = Feed {
            source: prompts.into_iter(),
            dispatched: HashSet::new(),
            exhausted: false,
        };
        let mut tasks: JoinSet<(Prompt, Outcome)> = JoinSet::new();
        let mut stopping = false;
        let mut fatal: Option<Error> = None;

        loop {
            if !stopping {
                feed.fill(&mut tasks, &writer, &shared, opts, 0);
            }
            if tasks.is_empty() {
                break;
            }
            let joined = tokio::select! {
                joined = tasks.join_next() => joined,
                _ = shared.stop.cancelled(), if !stopping => {
                    stopping = true;
                    shared.emit(Event::Stopping);
                    tracing::info!(in_flight = tasks.len(), "stopping: no new work, waiting for requests in flight");
                    continue;
                }
            };
            let Some(joined) = joined else { break };
            let (prompt, outcome) = joined.map_err(Error::Task)?;
            shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            match outcome {
                Outcome::Success(completion) => {
                    // Start the next request before this example's write (and fsync), counting
                    // the example as done so that the file can never exceed N.
                    if !stopping {
                        feed.fill(&mut tasks, &writer, &shared, opts, 1);
                    }
                    let example = to_example(
                        &prompt,
                        &completion,
                        &teacher_id.provider,
                        &teacher_id.model,
                        &opts.params,
                    );
                    let (w, result) = append_blocking(writer, example).await?;
                    writer = w;
                    match result {
                        Ok(()) => {
                            let usage = completion.usage;
                            let model = if completion.model.is_empty() {
                                &teacher_id.model
                            } else {
                                &completion.model
                            };
                            let cost = usage.as_ref().and_then(|u| {
                                opts.prices
                                    .cost(model, u, 1.0)
                                    .or_else(|| opts.prices.cost(&teacher_id.model, u, 1.0))
                            });
                            shared
                                .counters
                                .accounting
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .add(usage.as_ref(), cost);
                            shared.counters.done.fetch_add(1, Ordering::Relaxed);
                            shared.emit(Event::Written {
                                id: prompt.id,
                                latency: completion.latency,
                                usage,
                            });
                        }
                        // The answer breaks a format rule (say a non-finite logprob): this prompt
                        // fails, the run goes on.
                        Err(distill_data::Error::InvalidExample { reason, .. }) => {
                            failures.record(&shared, &prompt, format!("invalid example: {reason}"), 1)?;
                        }
                        Err(other) => return Err(other.into()),
                    }
                }
                Outcome::Failed { error, attempts } => {
                    failures.record(&shared, &prompt, error.reason(), attempts)?;
                    if error.class() == ErrorClass::Fatal && fatal.is_none() {
                        tracing::error!(id = %prompt.id, error = %error, "fatal error: stopping the run");
                        fatal = Some(Error::Fatal {
                            id: prompt.id.clone(),
                            source: Box::new(error),
                        });
                        stopping = true;
                        shared.stop.cancel();
                    }
                }
                Outcome::Abandoned => {}
            }
        }

        writer.sync()?;
        let stop = if fatal.is_some() {
            StopReason::Fatal
        } else if shared.counters.done.load(Ordering::Relaxed) >= opts.num_examples {
            StopReason::Completed
        } else if stopping || cancel.is_cancelled() {
            StopReason::Cancelled
        } else {
            StopReason::SourceExhausted
        };
        let summary = Summary {
            progress: shared.progress(),
            stop,
            failures_file: failures.written.then_some(failures_file),
            prices_as_of: opts.prices.as_of.clone(),
        };
        tracing::info!(
            done = summary.progress.done,
            failed = summary.progress.failed,
            stop = ?summary.stop,
            "generation finished"
        );
        shared.emit(Event::Finished(summary.clone()));
        match fatal {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }
}

/// The prompt source, and which prompts this run has already taken from it.
struct Feed<I> {
    source: I,
    dispatched: HashSet<String>,
    exhausted: bool,
}

impl<I: Iterator<Item = Prompt>> Feed<I> {
    /// Spawns requests while there is room: fewer than `concurrency` in flight and
    /// `done + reserved + in flight < N`. Skips ids already written or already taken.
    fn fill(
        &mut self,
        tasks: &mut JoinSet<(Prompt, Outcome)>,
        writer: &ExampleWriter,
        shared: &Arc<Shared>,
        opts: &GenerateOptions,
        reserved: usize,
    ) {
        let done = shared.counters.done.load(Ordering::Relaxed) + reserved;
        while !self.exhausted && tasks.len() < opts.concurrency && done + tasks.len() < opts.num_examples {
            let Some(prompt) = self.source.next() else {
                self.exhausted = true;
                break;
            };
            if writer.contains(&prompt.id) || !self.dispatched.insert(prompt.id.clone()) {
                continue;
            }
            shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
            let task_shared = shared.clone();
            tasks.spawn(async move {
                let outcome = attempt_prompt(&task_shared, &prompt).await;
                (prompt, outcome)
            });
        }
    }
}

/// Up to `max_attempts` attempts at one prompt.
async fn attempt_prompt(shared: &Shared, prompt: &Prompt) -> Outcome {
    let estimate = estimate_tokens(prompt, &shared.params);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let permit = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Outcome::Abandoned,
            p = shared.limiter.acquire(estimate) => p,
        };
        let result = match tokio::time::timeout(
            shared.timeout,
            shared.teacher.complete(&prompt.messages, &shared.params),
        )
        .await
        {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout(shared.timeout)),
        };
        let billed = result
            .as_ref()
            .ok()
            .and_then(|c| c.usage.map(|u| u.total_tokens()));
        permit.settle(billed);
        let error = match result {
            Ok(completion) => return Outcome::Success(Box::new(completion)),
            Err(e) => e,
        };
        let hint = match error.class() {
            ErrorClass::Transient { retry_after } if attempt < shared.retry.max_attempts => retry_after,
            _ => {
                return Outcome::Failed {
                    error,
                    attempts: attempt,
                };
            }
        };
        if shared.stop.is_cancelled() {
            return Outcome::Abandoned;
        }
        let delay = shared.retry.delay(attempt, hint, &mut rand::rng());
        shared.counters.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(id = %prompt.id, attempt, ?delay, reason = %error.reason(), "retrying");
        shared.emit(Event::Retrying {
            id: prompt.id.clone(),
            attempt,
            delay,
            reason: error.reason(),
        });
        tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return Outcome::Abandoned,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Prompt characters / 4 plus the completion budget: what OpenAI counts against a TPM limit.
fn estimate_tokens(prompt: &Prompt, params: &GenerationParams) -> u64 {
    let chars: usize = prompt.messages.iter().map(|m| m.content.len() + 16).sum();
    (chars / 4) as u64 + u64::from(params.max_tokens.unwrap_or(512))
}

fn to_example(
    prompt: &Prompt,
    completion: &Completion,
    provider: &str,
    model: &str,
    params: &GenerationParams,
) -> Example {
    let choice = completion.first();
    let mut example = prompt
        .clone()
        .into_example(choice.map(|c| c.text.clone()).unwrap_or_default());
    example.teacher = Some(TeacherInfo {
        model: if completion.model.is_empty() {
            model.to_owned()
        } else {
            completion.model.clone()
        },
        provider: provider.to_owned(),
        finish_reason: choice.and_then(|c| c.finish_reason.clone()),
        usage: completion.usage,
        latency_ms: Some(completion.latency.as_millis() as u64),
        created: completion.created,
    });
    if params.top_logprobs > 0 {
        example.logprobs = choice.and_then(|c| c.logprobs.clone());
    }
    let mut filters = serde_json::Map::new();
    if let Some(p) = &completion.prompt_filter_results {
        filters.insert("prompt".into(), p.clone());
    }
    if let Some(c) = choice.and_then(|c| c.content_filter_results.clone()) {
        filters.insert("completion".into(), c);
    }
    if !filters.is_empty() {
        example
            .metadata
            .insert("content_filter".into(), serde_json::Value::Object(filters));
    }
    example
}

fn open_output(opts: &GenerateOptions) -> Result<ExampleWriter> {
    if !opts.resume
        && let Ok(meta) = std::fs::metadata(&opts.output)
        && meta.len() > 0
    {
        return Err(Error::Options(format!(
            "{} already exists; pass resume to continue it, or choose another output",
            opts.output.display()
        )));
    }
    if let Some(dir) = opts.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_owned(),
            source,
        })?;
    }
    let writer = ExampleWriter::open_with(
        &opts.output,
        WriterOptions {
            sync: opts.sync,
            ..Default::default()
        },
    )?;
    if let Some(torn) = writer.torn_tail() {
        tracing::warn!(
            bytes = torn.len,
            "removed a torn last line left by an interrupted run"
        );
    }
    Ok(writer)
}

/// Appends on the blocking pool so an fsync never stalls the runtime's workers.
async fn append_blocking(
    mut writer: ExampleWriter,
    example: Example,
) -> Result<(ExampleWriter, distill_data::Result<()>)> {
    tokio::task::spawn_blocking(move || {
        let r = writer.append(&example);
        (writer, r)
    })
    .await
    .map_err(Error::Task)
}

/// The failures file: truncated at the start of each run, so it lists exactly the prompts this
/// run gave up on (a resumed run retries earlier failures, which are not in the dataset).
struct FailureLog {
    path: PathBuf,
    file: Option<std::fs::File>,
    written: bool,
}

impl FailureLog {
    /// Removes the previous run's file: its prompts are retried by this run, so keeping it
    /// would list prompts that end up in the dataset.
    fn start(path: PathBuf) -> Result<Self> {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(Error::Io { path, source }),
        }
        Ok(FailureLog {
            path,
            file: None,
            written: false,
        })
    }

    fn record(&mut self, shared: &Shared, prompt: &Prompt, reason: String, attempts: u32) -> Result<()> {
        let id = prompt.id.as_str();
        if self.file.is_none() {
            let file = std::fs::File::create(&self.path).map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
            self.file = Some(file);
        }
        let record = FailureRecord {
            id: id.to_owned(),
            prompt: prompt
                .messages
                .iter()
                .rev()
                .find(|m| m.role == distill_data::Role::User)
                .map(|m| m.content.clone())
                .unwrap_or_default(),
            messages: prompt.messages.clone(),
            reason: reason.clone(),
            attempts,
        };
        let mut line = serde_json::to_vec(&record).map_err(|e| Error::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        line.push(b'\n');
        if let Some(f) = &mut self.file {
            // One write per record keeps lines whole if the process dies.
            f.write_all(&line).map_err(|source| Error::Io {
                path: self.path.clone(),
                source,
            })?;
        }
        self.written = true;
        shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(id, attempts, reason = %reason, "prompt failed");
        shared.emit(Event::Failed {
            id: id.to_owned(),
            attempts,
            reason,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_file_sits_next_to_the_output() {
        assert_eq!(
            failures_path(Path::new("data/x.jsonl")),
            Path::new("data/x.failures.jsonl")
        );
        assert_eq!(failures_path(Path::new("out")), Path::new("out.failures.jsonl"));
    }

    #[test]
    fn token_estimate_counts_the_budget() {
        let p = Prompt::from_text(None, "x".repeat(400));
        let params = GenerationParams {
            max_tokens: Some(100),
            ..Default::default()
        };
        assert_eq!(estimate_tokens(&p, &params), 104 + 100);
    }
}
