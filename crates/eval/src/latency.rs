//! Generation latency: time to first token, per-token latency, throughput and
//! request latency percentiles.
//!
//! Models come in through [`Generator`]; the `distill` facade implements it for a
//! loaded model (`distill::evaluate`), and a caller can for a server or a remote
//! teacher. Timing uses a [`Clock`] so tests can drive it deterministically.
//!
//! Definitions, per measured request (warm-up requests are run and discarded):
//! - **request latency**: from calling `generate` to its return;
//! - **time to first token (TTFT)**: from the call to the first `on_token`;
//! - **inter-token latency**: the gaps between consecutive `on_token` calls;
//! - **time per output token (TPOT)**: `(latency - TTFT) / (tokens - 1)`;
//! - **tokens/s**: completion tokens of all requests over their summed latency.
//!
//! Percentiles use linear interpolation between closest ranks
//! ([`crate::stats::percentile`]).

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{BoxError, Error, Result};
use crate::stats::percentile_sorted;

/// What one generation produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationOutput {
    /// The generated text.
    pub text: String,
    /// Generated tokens, as the model counts them.
    pub completion_tokens: usize,
    /// Prompt tokens, if known.
    pub prompt_tokens: Option<usize>,
}

/// A text generator under test.
pub trait Generator {
    /// Generates a completion of `prompt`, calling `on_token` with each piece of
    /// text as soon as it is produced.
    fn generate(
        &mut self,
        prompt: &str,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<GenerationOutput, BoxError>;
}

/// A monotonic clock.
pub trait Clock {
    /// Time since an arbitrary fixed origin.
    fn now(&self) -> Duration;
}

/// The system's monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// Measurement options.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyConfig {
    /// Requests run first and not measured (they warm caches and allocators).
    pub warmup_runs: usize,
    /// How many times each prompt is measured.
    pub runs_per_prompt: usize,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        LatencyConfig {
            warmup_runs: 2,
            runs_per_prompt: 1,
        }
    }
}

/// The timing of one measured request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestTiming {
    /// Index of the prompt.
    pub prompt: usize,
    /// Request latency.
    pub latency: Duration,
    /// Time to first token; `None` if the generator streamed nothing.
    pub ttft: Option<Duration>,
    /// Completion tokens reported by the generator.
    pub completion_tokens: usize,
    /// Number of `on_token` calls.
    pub streamed_pieces: usize,
}

/// Summary statistics of a set of durations, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub count: usize,
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest value.
    pub min: f64,
    /// 50th percentile.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest value.
    pub max: f64,
}

impl Summary {
    /// Summarises `values` (seconds); `None` if there are none.
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let p = |q| percentile_sorted(&sorted, q).ok();
        Some(Summary {
            count: sorted.len(),
            mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
            min: sorted[0],
            p50: p(50.0)?,
            p95: p(95.0)?,
            p99: p(99.0)?,
            max: sorted[sorted.len() - 1],
        })
    }
}

/// Everything measured over a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LatencyReport {
    /// Each measured request, in order.
    pub requests: Vec<RequestTiming>,
    /// Request latency (s).
    pub request_latency: Summary,
    /// Time to first token (s), over requests that streamed.
    pub ttft: Option<Summary>,
    /// Inter-token latency (s), over all gaps of all requests.
    pub inter_token: Option<Summary>,
    /// Time per output token (s), over requests with at least two tokens.
    pub tpot: Option<Summary>,
    /// Completion tokens over summed request latency.
    pub tokens_per_second: f64,
    /// Total completion tokens of the measured requests.
    pub completion_tokens: usize,
}

/// Measures `generator` on `prompts` with the system clock.
pub fn measure_latency<G, S>(
    generator: &mut G,
    prompts: &[S],
    config: &LatencyConfig,
) -> Result<LatencyReport>
where
    G: Generator + ?Sized,
    S: AsRef<str>,
{
    measure_latency_with(
        generator,
        prompts,
        config,
        &SystemClock::default(),
        &mut |_, _| {},
    )
}

/// Measures `generator` on `prompts` with `clock`, calling `progress(done,
/// total)` after each request (warm-up included).
pub fn measure_latency_with<G, S>(
    generator: &mut G,
    prompts: &[S],
    config: &LatencyConfig,
    clock: &dyn Clock,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<LatencyReport>
where
    G: Generator + ?Sized,
    S: AsRef<str>,
{
    if prompts.is_empty() {
        return Err(Error::Empty("prompts"));
    }
    if config.runs_per_prompt == 0 {
        return Err(Error::InvalidConfig("runs_per_prompt must be at least 1".into()));
    }
    let total = config.warmup_runs + prompts.len() * config.runs_per_prompt;
    let mut done = 0;
    for i in 0..config.warmup_runs {
        let prompt = prompts[i % prompts.len()].as_ref();
        generator
            .generate(prompt, &mut |_| {})
            .map_err(|source| Error::Model {
                during: "warm-up generation",
                source,
            })?;
        done += 1;
        progress(done, total);
    }

    let mut requests = Vec::with_capacity(prompts.len() * config.runs_per_prompt);
    let mut gaps = Vec::new();
    for (index, prompt) in prompts.iter().enumerate() {
        for _ in 0..config.runs_per_prompt {
            let start = clock.now();
            let mut first = None;
            let mut last = None;
            let mut pieces = 0;
            let output = generator
                .generate(prompt.as_ref(), &mut |_| {
                    let now = clock.now();
                    if first.is_none() {
                        first = Some(now);
                    }
                    if let Some(prev) = last {
                        gaps.push(now.saturating_sub(prev).as_secs_f64());
                    }
                    last = Some(now);
                    pieces += 1;
                })
                .map_err(|source| Error::Model {
                    during: "generation",
                    source,
                })?;
            let end = clock.now();
            tracing::trace!(
                prompt = index,
                latency_s = end.saturating_sub(start).as_secs_f64(),
                pieces,
                "request"
            );
            requests.push(RequestTiming {
                prompt: index,
                latency: end.saturating_sub(start),
                ttft: first.map(|f| f.saturating_sub(start)),
                completion_tokens: output.completion_tokens,
                streamed_pieces: pieces,
            });
            done += 1;
            progress(done, total);
        }
    }

    let latencies: Vec<f64> = requests.iter().map(|r| r.latency.as_secs_f64()).collect();
    let ttfts: Vec<f64> = requests
        .iter()
        .filter_map(|r| r.ttft.map(|t| t.as_secs_f64()))
        .collect();
    let tpots: Vec<f64> = requests
        .iter()
        .filter(|r| r.completion_tokens >= 2)
        .filter_map(|r| {
            let ttft = r.ttft?;
            Some(r.latency.saturating_sub(ttft).as_secs_f64() / (r.completion_tokens - 1) as f64)
        })
        .collect();
    let completion_tokens: usize = requests.iter().map(|r| r.completion_tokens).sum();
    let busy: f64 = latencies.iter().sum();
    Ok(LatencyReport {
        request_latency: Summary::of(&latencies).ok_or(Error::Empty("measured requests"))?,
        ttft: Summary::of(&ttfts),
        inter_token: Summary::of(&gaps),
        tpot: Summary::of(&tpots),
        tokens_per_second: if busy > 0.0 {
            completion_tokens as f64 / busy
        } else {
            0.0
        },
        completion_tokens,
        requests,
    })
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;

    /// A clock advanced by hand.
    #[derive(Clone, Default)]
    struct FakeClock(Rc<Cell<Duration>>);

    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            self.0.get()
        }
    }

    /// Takes `prefill` before the first token and `step` per further token, and
    /// emits as many tokens as the prompt has words.
    struct FakeModel {
        clock: FakeClock,
        prefill: Duration,
        step: Duration,
        calls: usize,
    }

    impl Generator for FakeModel {
        fn generate(
            &mut self,
            prompt: &str,
            on_token: &mut dyn FnMut(&str),
        ) -> Result<GenerationOutput, BoxError> {
            self.calls += 1;
            let words: Vec<&str> = prompt.split_whitespace().collect();
            for (i, w) in words.iter().enumerate() {
                let dt = if i == 0 { self.prefill } else { self.step };
                self.clock.0.set(self.clock.0.get() + dt);
                on_token(w);
            }
            Ok(GenerationOutput {
                text: prompt.into(),
                completion_tokens: words.len(),
                prompt_tokens: None,
            })
        }
    }

    #[test]
    fn timings_follow_the_definitions() {
        let clock = FakeClock::default();
        let ms = Duration::from_millis;
        let mut model = FakeModel {
            clock: clock.clone(),
            prefill: ms(100),
            step: ms(10),
            calls: 0,
        };
        let prompts = ["a b c d e", "a b c"];
        let config = LatencyConfig {
            warmup_runs: 3,
            runs_per_prompt: 2,
        };
        let mut seen = Vec::new();
        let r = measure_latency_with(&mut model, &prompts, &config, &clock, &mut |d, t| {
            seen.push((d, t))
        })
        .unwrap();
        assert_eq!(model.calls, 7);
        assert_eq!(seen.last(), Some(&(7, 7)));
        assert_eq!(r.requests.len(), 4);
        assert_eq!(r.requests[0].latency, ms(140));
        assert_eq!(r.requests[2].latency, ms(120));
        assert_eq!(r.requests[0].ttft, Some(ms(100)));
        let ttft = r.ttft.unwrap();
        assert!((ttft.p50 - 0.1).abs() < 1e-12);
        let gaps = r.inter_token.unwrap();
        assert_eq!(gaps.count, 4 * 2 + 2 * 2);
        assert!((gaps.max - 0.01).abs() < 1e-12);
        assert!((r.tpot.unwrap().mean - 0.01).abs() < 1e-12);
        assert_eq!(r.completion_tokens, 16);
        assert!((r.tokens_per_second - 16.0 / 0.52).abs() < 1e-9);
        // Latencies 0.14, 0.14, 0.12, 0.12: p50 = 0.13, p95 = 0.14.
        assert!((r.request_latency.p50 - 0.13).abs() < 1e-12);
        assert!((r.request_latency.p95 - 0.14).abs() < 1e-12);
    }

    #[test]
    fn model_errors_and_bad_input_are_reported() {
        struct Failing;
        impl Generator for Failing {
            fn generate(&mut self, _: &str, _: &mut dyn FnMut(&str)) -> Result<GenerationOutput, BoxError> {
                Err("out of memory".into())
            }
        }
        let err = measure_latency(&mut Failing, &["x"], &LatencyConfig::default()).unwrap_err();
        assert!(matches!(err, Error::Model { .. }));
        assert!(measure_latency(&mut Failing, &[] as &[&str], &LatencyConfig::default()).is_err());
    }
}
