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
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use distill_data::{Example, ExampleWriter, Prompt, SyncPolicy, Usage, WriterOptions};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::convert::{cost, live_example, refusal};
use crate::error::{Error, ErrorClass, Result};
use crate::failures::FailureLog;
pub use crate::failures::{FailureRecord, failures_path};
use crate::limiter::{RateLimiter, RateLimits};
use crate::output::open_output;
use crate::pricing::{Accounting, PriceTable};
use crate::retry::{Attempts, RetryPolicy, within};
use crate::teacher::{Completion, GenerationParams, Teacher, TeacherId};

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
    /// Stop taking new prompts once this run's priced spend reaches this many US dollars
    /// (positive); requests already in flight finish (at most `concurrency` of them past the
    /// line). Unpriced requests count nothing toward it, and a resumed run counts from zero.
    pub max_cost_usd: Option<f64>,
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
            max_cost_usd: None,
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
        check_cost_budget(self.max_cost_usd)
    }
}

/// A cost budget ([`GenerateOptions::max_cost_usd`]) must be a positive number of dollars.
/// Callers that take one before starting an engine check it here, as the engine will.
pub fn check_cost_budget(max_cost_usd: Option<f64>) -> Result<()> {
    match max_cost_usd {
        Some(max) if !(max.is_finite() && max > 0.0) => Err(Error::Options(format!(
            "the cost budget must be a positive number of dollars, not {max}"
        ))),
        _ => Ok(()),
    }
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
    /// The run is over and returns this summary (a run stopped by a fatal error returns the
    /// error and sends no `Finished`).
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
    /// The priced spend reached [`GenerateOptions::max_cost_usd`] before the file was full.
    BudgetReached,
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

/// What the request tasks share with the collector.
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

/// How one prompt ended: answered, failed, or left for a resumed run.
type Outcome = Attempts<Box<Completion>>;

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
        let mut run = self.start(prompts.into_iter(), &cancel)?;
        while let Some((prompt, outcome)) = run.next().await? {
            run.settle(prompt, outcome).await?;
        }
        run.finish(&cancel)
    }

    /// Opens the output and the failures file and says that the run started.
    fn start<I: Iterator<Item = Prompt>>(&self, source: I, cancel: &CancellationToken) -> Result<Run<'_, I>> {
        let opts = &self.options;
        opts.validate()?;
        let writer = open_output(
            &opts.output,
            opts.resume,
            WriterOptions {
                sync: opts.sync,
                ..Default::default()
            },
        )?;
        let resumed = writer.completed_ids().len();
        let failures = FailureLog::start(&opts.output)?;
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
        Ok(Run {
            opts,
            teacher: self.teacher.id(),
            shared,
            writer: Some(writer),
            failures,
            feed: Feed {
                source,
                dispatched: HashSet::new(),
                exhausted: false,
            },
            tasks: JoinSet::new(),
            stopping: false,
            over_budget: false,
            fatal: None,
        })
    }
}

/// One run of the engine: the collector's state between the tasks it spawns.
struct Run<'a, I> {
    opts: &'a GenerateOptions,
    teacher: TeacherId,
    shared: Arc<Shared>,
    /// Out only while an append runs on the blocking pool.
    writer: Option<ExampleWriter>,
    failures: FailureLog,
    feed: Feed<I>,
    tasks: JoinSet<(Prompt, Outcome)>,
    /// No new work is taken (cancelled, over budget, or after a fatal error).
    stopping: bool,
    /// The spend reached the budget.
    over_budget: bool,
    fatal: Option<Error>,
}

impl<I: Iterator<Item = Prompt>> Run<'_, I> {
    /// Spawns requests while there is room, then waits for the next prompt to end; `None`
    /// once nothing is in flight and nothing more may start.
    async fn next(&mut self) -> Result<Option<(Prompt, Outcome)>> {
        loop {
            if !self.stopping {
                self.fill(0);
            }
            let joined = tokio::select! {
                joined = self.tasks.join_next() => joined,
                _ = self.shared.stop.cancelled(), if !self.stopping => {
                    self.stopping = true;
                    self.shared.emit(Event::Stopping);
                    tracing::info!(in_flight = self.tasks.len(), "stopping: no new work, waiting for requests in flight");
                    continue;
                }
            };
            let Some(joined) = joined else { return Ok(None) };
            let ended = joined.map_err(Error::Task)?;
            self.shared.counters.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Ok(Some(ended));
        }
    }

    /// Spawns requests while fewer than `concurrency` are in flight and
    /// `done + reserved + in flight < N`.
    fn fill(&mut self, reserved: usize) {
        let done = self.shared.counters.done.load(Ordering::Relaxed) + reserved;
        let room = |tasks: &JoinSet<_>| {
            tasks.len() < self.opts.concurrency && done + tasks.len() < self.opts.num_examples
        };
        while room(&self.tasks) {
            let writer = self.writer.as_ref();
            let Some(prompt) = self.feed.take(|id| writer.is_some_and(|w| w.contains(id))) else {
                break;
            };
            self.shared.counters.in_flight.fetch_add(1, Ordering::Relaxed);
            let shared = self.shared.clone();
            self.tasks.spawn(async move {
                let outcome = attempt_prompt(&shared, &prompt).await;
                (prompt, outcome)
            });
        }
    }

    /// Writes an answer, or records a failure; a fatal error stops the run.
    async fn settle(&mut self, prompt: Prompt, outcome: Outcome) -> Result<()> {
        match outcome {
            Attempts::Done(completion) => {
                // Start the next request before this example's write (and fsync), counting
                // the example as done so that the file can never exceed N.
                if !self.stopping {
                    self.fill(1);
                }
                self.write(prompt, &completion).await
            }
            Attempts::Failed { error, attempts } => {
                self.fail(&prompt, error.reason(), attempts)?;
                if error.class() == ErrorClass::Fatal && self.fatal.is_none() {
                    tracing::error!(id = %prompt.id, error = %error, "fatal error: stopping the run");
                    self.fatal = Some(Error::Fatal {
                        id: prompt.id,
                        source: Box::new(error),
                    });
                    self.stopping = true;
                    self.shared.stop.cancel();
                }
                Ok(())
            }
            Attempts::Cancelled => Ok(()),
        }
    }

    async fn write(&mut self, prompt: Prompt, completion: &Completion) -> Result<()> {
        let mut example = live_example(&prompt, completion, &self.teacher, &self.opts.params);
        example.metadata.extend(self.shared.teacher.example_metadata());
        let writer = self.writer.take().expect("the writer is back after every append");
        let (writer, written) = append_blocking(writer, example).await?;
        self.writer = Some(writer);
        // The answer is billed whether or not the file takes it.
        let cost = cost(&self.opts.prices, completion, &self.teacher, 1.0);
        let spent = {
            let counters = &self.shared.counters;
            let mut accounting = counters.accounting.lock().unwrap_or_else(|p| p.into_inner());
            accounting.add(completion.usage.as_ref(), cost);
            accounting.cost_usd
        };
        self.check_budget(spent);
        if let Some(reason) = refusal(written)? {
            return self.fail(&prompt, reason, 1);
        }
        self.shared.counters.done.fetch_add(1, Ordering::Relaxed);
        self.shared.emit(Event::Written {
            id: prompt.id,
            latency: completion.latency,
            usage: completion.usage,
        });
        Ok(())
    }

    /// Stops taking new prompts once `spent` reaches the budget.
    fn check_budget(&mut self, spent: f64) {
        if let Some(max) = self.opts.max_cost_usd
            && spent >= max
            && !self.stopping
        {
            tracing::info!(
                spent,
                max,
                in_flight = self.tasks.len(),
                "cost budget reached: no new requests"
            );
            self.over_budget = true;
            self.stopping = true;
            self.shared.emit(Event::Stopping);
        }
    }

    fn fail(&mut self, prompt: &Prompt, reason: String, attempts: u32) -> Result<()> {
        let record = self.failures.record(prompt, reason, attempts)?;
        self.shared.counters.failed.fetch_add(1, Ordering::Relaxed);
        self.shared.emit(Event::Failed {
            id: record.id,
            attempts,
            reason: record.reason,
        });
        Ok(())
    }

    /// Syncs the output and reports why the run ended; a fatal error is returned instead of a
    /// summary, and no [`Event::Finished`] is sent for it.
    fn finish(mut self, cancel: &CancellationToken) -> Result<Summary> {
        if let Some(writer) = &mut self.writer {
            writer.sync()?;
        }
        if let Some(error) = self.fatal.take() {
            return Err(error);
        }
        let stop = if self.shared.counters.done.load(Ordering::Relaxed) >= self.opts.num_examples {
            StopReason::Completed
        } else if self.over_budget {
            StopReason::BudgetReached
        } else if self.stopping || cancel.is_cancelled() {
            StopReason::Cancelled
        } else {
            StopReason::SourceExhausted
        };
        let summary = Summary {
            progress: self.shared.progress(),
            stop,
            failures_file: self.failures.written(),
            prices_as_of: self.opts.prices.as_of.clone(),
        };
        tracing::info!(
            done = summary.progress.done,
            failed = summary.progress.failed,
            stop = ?summary.stop,
            "generation finished"
        );
        self.shared.emit(Event::Finished(summary.clone()));
        Ok(summary)
    }
}

/// The prompt source, and which prompts this run has already taken from it.
struct Feed<I> {
    source: I,
    dispatched: HashSet<String>,
    exhausted: bool,
}

impl<I: Iterator<Item = Prompt>> Feed<I> {
    /// The next prompt not yet written nor taken; `None` once the source is exhausted.
    fn take(&mut self, written: impl Fn(&str) -> bool) -> Option<Prompt> {
        while !self.exhausted {
            let Some(prompt) = self.source.next() else {
                self.exhausted = true;
                break;
            };
            if !written(&prompt.id) && self.dispatched.insert(prompt.id.clone()) {
                return Some(prompt);
            }
        }
        None
    }
}

/// Up to `max_attempts` attempts at one prompt, each admitted by the rate limiter.
async fn attempt_prompt(shared: &Shared, prompt: &Prompt) -> Outcome {
    let estimate = estimate_tokens(prompt, &shared.params);
    let attempt = move || async move {
        let permit = tokio::select! {
            biased;
            _ = shared.stop.cancelled() => return None,
            p = shared.limiter.acquire(estimate) => p,
        };
        let result = within(
            shared.timeout,
            shared.teacher.complete(&prompt.messages, &shared.params),
        )
        .await;
        permit.settle(
            result
                .as_ref()
                .ok()
                .and_then(|c| c.usage.map(|u| u.total_tokens())),
        );
        Some(result.map(Box::new))
    };
    let on_retry = |retry: crate::retry::Retry<'_>| {
        let reason = retry.error.reason();
        shared.counters.retries.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(id = %prompt.id, attempt = retry.attempt, delay = ?retry.delay, %reason, "retrying");
        shared.emit(Event::Retrying {
            id: prompt.id.clone(),
            attempt: retry.attempt,
            delay: retry.delay,
            reason,
        });
    };
    shared.retry.attempt(&shared.stop, attempt, on_retry).await
}

/// Prompt characters / 4 plus the completion budget: what OpenAI counts against a TPM limit.
fn estimate_tokens(prompt: &Prompt, params: &GenerationParams) -> u64 {
    estimate_usage(prompt, params).total_tokens()
}

/// A prompt's usage at most: its characters / 4 (with each message's framing) and the whole
/// completion budget.
fn estimate_usage(prompt: &Prompt, params: &GenerationParams) -> Usage {
    let chars: usize = prompt.messages.iter().map(|m| m.content.len() + 16).sum();
    Usage {
        prompt_tokens: (chars / 4) as u64,
        completion_tokens: u64::from(params.max_tokens.unwrap_or(512)),
    }
}

/// About what answering every prompt would cost, in US dollars, at `model`'s price in `prices`:
/// prompt tokens estimated as characters / 4, every answer as long as `max_tokens` allows, no
/// retries; `None` when the model has no price.
pub fn estimate_cost(
    prompts: &[Prompt],
    params: &GenerationParams,
    prices: &PriceTable,
    model: &str,
) -> Option<f64> {
    let price = prices.get(model)?;
    Some(
        prompts
            .iter()
            .map(|p| price.cost(&estimate_usage(p, params)))
            .sum(),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

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
