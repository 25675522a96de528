//! `GET /metrics`: counters and a latency histogram in Prometheus' text format.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the request-latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// The server's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cancelled: AtomicU64,
    latency: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// Gauges read when the metrics are scraped.
#[derive(Debug, Clone, Copy)]
pub struct Gauges {
    /// Requests waiting to be admitted.
    pub queued: usize,
    /// Sequences decoding.
    pub decoding: usize,
}

impl Metrics {
    /// Counts a request to `route` answered with `status`.
    pub fn request(&self, route: &str, status: u16) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests.entry((route.to_owned(), status)).or_default() += 1;
    }

    /// Records a completed answer: its prompt tokens and how long it took in all.
    pub fn answered(&self, prompt_tokens: usize, seconds: f64) {
        self.prompt_tokens
            .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        let mut latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        for (count, &bound) in latency.counts.iter_mut().zip(&BUCKETS) {
            if seconds <= bound {
                *count += 1;
            }
        }
        latency.count += 1;
        latency.sum += seconds;
    }

    /// Counts generated tokens.
    pub fn generated(&self, tokens: u64) {
        self.completion_tokens.fetch_add(tokens, Ordering::Relaxed);
    }

    /// Counts a request whose client left before its answer was complete.
    pub fn cancelled(&self) {
        self.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition format.
    pub fn render(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP distill_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(out, "# TYPE distill_requests_total counter");
        for ((route, status), n) in self.requests.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "distill_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let counters = [
            (
                "distill_prompt_tokens_total",
                "Prompt tokens of answered requests.",
                &self.prompt_tokens,
            ),
            (
                "distill_completion_tokens_total",
                "Tokens generated.",
                &self.completion_tokens,
            ),
            (
                "distill_cancelled_total",
                "Requests whose client left before the answer was complete.",
                &self.cancelled,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "distill_queue_depth",
                "Requests waiting to be admitted.",
                gauges.queued,
            ),
            (
                "distill_batch_size",
                "Sequences decoding together.",
                gauges.decoding,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let latency = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        let name = "distill_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time from a completion request to its last token."
        );
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (count, bound) in latency.counts.iter().zip(BUCKETS) {
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
        }
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", latency.count);
        let _ = writeln!(out, "{name}_sum {}", latency.sum);
        let _ = writeln!(out, "{name}_count {}", latency.count);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_holds_every_series() {
        let metrics = Metrics::default();
        metrics.request("/v1/chat/completions", 200);
        metrics.request("/v1/chat/completions", 200);
        metrics.request("/v1/completions", 400);
        metrics.answered(12, 0.3);
        metrics.generated(5);
        let text = metrics.render(Gauges {
            queued: 2,
            decoding: 3,
        });
        for line in [
            "distill_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2",
            "distill_requests_total{route=\"/v1/completions\",status=\"400\"} 1",
            "distill_prompt_tokens_total 12",
            "distill_completion_tokens_total 5",
            "distill_queue_depth 2",
            "distill_batch_size 3",
            "distill_request_duration_seconds_bucket{le=\"0.25\"} 0",
            "distill_request_duration_seconds_bucket{le=\"0.5\"} 1",
            "distill_request_duration_seconds_bucket{le=\"+Inf\"} 1",
            "distill_request_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing `{line}` in:\n{text}");
        }
    }
}
