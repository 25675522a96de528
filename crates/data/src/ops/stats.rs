//! Dataset statistics: counts, length histograms, usage and cost.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use super::filter::TokenCounter;
use crate::example::{Example, Usage};

/// A histogram of lengths in power-of-two buckets: bucket 0 holds 0, bucket `k ≥ 1` holds
/// `2^(k-1) ..= 2^k - 1`. Fixed size, so it summarises any number of examples.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Histogram {
    /// Values recorded.
    pub count: u64,
    /// Their sum.
    pub sum: u64,
    /// The smallest (0 when empty).
    pub min: u64,
    /// The largest.
    pub max: u64,
    buckets: Vec<u64>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            count: 0,
            sum: 0,
            min: 0,
            max: 0,
            buckets: vec![0; 65],
        }
    }
}

impl Histogram {
    /// Records one value.
    pub fn add(&mut self, value: u64) {
        self.min = if self.count == 0 {
            value
        } else {
            self.min.min(value)
        };
        self.max = self.max.max(value);
        self.count += 1;
        self.sum = self.sum.saturating_add(value);
        self.buckets[(u64::BITS - value.leading_zeros()) as usize] += 1;
    }

    /// The mean, or 0 when empty.
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum as f64 / self.count as f64
        }
    }

    /// The non-empty buckets as `(low, high, count)`, both bounds inclusive.
    pub fn buckets(&self) -> impl Iterator<Item = (u64, u64, u64)> + '_ {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(k, &c)| match k {
                0 => (0, 0, c),
                64 => (1 << 63, u64::MAX, c),
                k => (1 << (k - 1), (1 << k) - 1, c),
            })
    }

    /// An upper bound on the `q` quantile (0 ≤ q ≤ 1): the top of the bucket that holds it,
    /// capped at the maximum.
    pub fn quantile_upper_bound(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (_, hi, c) in self.buckets() {
            seen += c;
            if seen >= rank {
                return hi.min(self.max);
            }
        }
        self.max
    }
}

/// Prices in currency units (e.g. USD) per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pricing {
    /// Price per million prompt tokens.
    pub prompt_per_million: f64,
    /// Price per million completion tokens.
    pub completion_per_million: f64,
}

impl Pricing {
    /// The cost of `usage`.
    pub fn cost(&self, usage: &Usage) -> f64 {
        (usage.prompt_tokens as f64 * self.prompt_per_million
            + usage.completion_tokens as f64 * self.completion_per_million)
            / 1e6
    }
}

/// Statistics of a dataset. Build with [`StatsBuilder`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// Examples seen.
    pub examples: u64,
    /// Examples with logprobs.
    pub with_logprobs: u64,
    /// Examples whose response is empty or whitespace.
    pub empty_responses: u64,
    /// Examples per split (`unassigned` for none).
    pub by_split: BTreeMap<String, u64>,
    /// Examples per finish reason (`unknown` for none).
    pub by_finish_reason: BTreeMap<String, u64>,
    /// Examples per teacher model (`unknown` for none).
    pub by_model: BTreeMap<String, u64>,
    /// Prompt lengths (all messages), in the builder's token unit.
    pub prompt_tokens: Histogram,
    /// Response lengths, in the builder's token unit.
    pub response_tokens: Histogram,
    /// Billed usage summed over the examples that report it.
    pub usage: Usage,
    /// Examples that report usage.
    pub with_usage: u64,
    /// Teacher latency in milliseconds, over the examples that report it.
    pub latency_ms: Histogram,
    /// Cost of `usage` at the builder's pricing, if it was given.
    pub cost: Option<f64>,
}

/// Accumulates [`Stats`] one example at a time, in constant memory.
pub struct StatsBuilder<'a> {
    tokens: TokenCounter<'a>,
    pricing: Option<Pricing>,
    stats: Stats,
}

impl<'a> StatsBuilder<'a> {
    /// A builder measuring lengths with `tokens` and costing usage at `pricing`.
    pub fn new(tokens: TokenCounter<'a>, pricing: Option<Pricing>) -> Self {
        StatsBuilder {
            tokens,
            pricing,
            stats: Stats {
                examples: 0,
                with_logprobs: 0,
                empty_responses: 0,
                by_split: BTreeMap::new(),
                by_finish_reason: BTreeMap::new(),
                by_model: BTreeMap::new(),
                prompt_tokens: Histogram::default(),
                response_tokens: Histogram::default(),
                usage: Usage::default(),
                with_usage: 0,
                latency_ms: Histogram::default(),
                cost: pricing.map(|_| 0.0),
            },
        }
    }

    /// Adds one example.
    pub fn add(&mut self, e: &Example) {
        let s = &mut self.stats;
        s.examples += 1;
        s.with_logprobs += u64::from(e.logprobs.is_some());
        s.empty_responses += u64::from(e.response.trim().is_empty());
        let split = e.split.map_or("unassigned", |s| s.as_str());
        *s.by_split.entry(split.to_owned()).or_default() += 1;
        let reason = e.finish_reason().map_or("unknown", |r| r.as_str());
        *s.by_finish_reason.entry(reason.to_owned()).or_default() += 1;
        let model = e.teacher.as_ref().map_or("unknown", |t| t.model.as_str());
        *s.by_model.entry(model.to_owned()).or_default() += 1;
        let prompt: usize = e.messages.iter().map(|m| (self.tokens)(&m.content)).sum();
        s.prompt_tokens.add(prompt as u64);
        s.response_tokens.add((self.tokens)(&e.response) as u64);
        if let Some(t) = &e.teacher {
            if let Some(u) = &t.usage {
                s.with_usage += 1;
                s.usage.prompt_tokens = s.usage.prompt_tokens.saturating_add(u.prompt_tokens);
                s.usage.completion_tokens = s.usage.completion_tokens.saturating_add(u.completion_tokens);
                if let (Some(p), Some(c)) = (&self.pricing, &mut s.cost) {
                    *c += p.cost(u);
                }
            }
            if let Some(ms) = t.latency_ms {
                s.latency_ms.add(ms);
            }
        }
    }

    /// The statistics so far.
    pub fn finish(self) -> Stats {
        self.stats
    }
}

impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "examples:        {}", self.examples)?;
        writeln!(f, "with logprobs:   {}", self.with_logprobs)?;
        writeln!(f, "empty responses: {}", self.empty_responses)?;
        let map = |f: &mut fmt::Formatter<'_>, name: &str, m: &BTreeMap<String, u64>| {
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(f, "{name:<17}{}", parts.join(", "))
        };
        map(f, "splits:", &self.by_split)?;
        map(f, "finish reasons:", &self.by_finish_reason)?;
        map(f, "models:", &self.by_model)?;
        for (name, h) in [
            ("prompt length", &self.prompt_tokens),
            ("response length", &self.response_tokens),
        ] {
            writeln!(
                f,
                "{name}: mean {:.1}, min {}, p50 ≤ {}, p90 ≤ {}, max {}",
                h.mean(),
                h.min,
                h.quantile_upper_bound(0.5),
                h.quantile_upper_bound(0.9),
                h.max
            )?;
            for (lo, hi, c) in h.buckets() {
                writeln!(f, "  {lo:>7}..={hi:<7} {c}")?;
            }
        }
        writeln!(
            f,
            "usage ({} examples): {} prompt + {} completion tokens",
            self.with_usage, self.usage.prompt_tokens, self.usage.completion_tokens
        )?;
        if self.latency_ms.count > 0 {
            writeln!(
                f,
                "latency: mean {:.0} ms, max {} ms",
                self.latency_ms.mean(),
                self.latency_ms.max
            )?;
        }
        if let Some(c) = self.cost {
            writeln!(f, "cost: {c:.4}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::{FinishReason, Message, Split, TeacherInfo};
    use crate::ops::filter::count_words;

    #[test]
    fn histogram_buckets_are_powers_of_two() {
        let mut h = Histogram::default();
        for v in [0, 1, 2, 3, 4, 7, 8, 1000, u64::MAX] {
            h.add(v);
        }
        let b: Vec<_> = h.buckets().collect();
        assert_eq!(b[0], (0, 0, 1));
        assert_eq!(b[1], (1, 1, 1));
        assert_eq!(b[2], (2, 3, 2));
        assert_eq!(b[3], (4, 7, 2));
        assert_eq!(b[4], (8, 15, 1));
        assert_eq!(b[5], (512, 1023, 1));
        assert_eq!(b[6], (1 << 63, u64::MAX, 1));
        assert_eq!((h.min, h.max, h.count), (0, u64::MAX, 9));
        assert_eq!(Histogram::default().quantile_upper_bound(0.5), 0);
    }

    #[test]
    fn quantile_bound_holds() {
        let mut h = Histogram::default();
        for v in 1..=100 {
            h.add(v);
        }
        assert_eq!(h.quantile_upper_bound(0.5), 63);
        assert_eq!(h.quantile_upper_bound(1.0), 100);
        assert!((h.mean() - 50.5).abs() < 1e-12);
    }

    #[test]
    fn stats_count_usage_and_cost() {
        let mut a = Example::new(vec![Message::user("one two")], "three four five");
        a.split = Some(Split::Train);
        a.teacher = Some(TeacherInfo {
            model: "gpt-4o".into(),
            provider: "openai".into(),
            finish_reason: Some(FinishReason::Stop),
            usage: Some(Usage {
                prompt_tokens: 1_000_000,
                completion_tokens: 500_000,
            }),
            latency_ms: Some(800),
            created: None,
        });
        let b = Example::new(vec![Message::user("q")], " ");
        let pricing = Pricing {
            prompt_per_million: 2.5,
            completion_per_million: 10.0,
        };
        let mut sb = StatsBuilder::new(&count_words, Some(pricing));
        sb.add(&a);
        sb.add(&b);
        let s = sb.finish();
        assert_eq!(s.examples, 2);
        assert_eq!(s.empty_responses, 1);
        assert_eq!(s.by_split["train"], 1);
        assert_eq!(s.by_split["unassigned"], 1);
        assert_eq!(s.by_finish_reason["stop"], 1);
        assert_eq!(s.by_model["unknown"], 1);
        assert_eq!(s.prompt_tokens.sum, 3);
        assert_eq!(s.response_tokens.max, 3);
        assert_eq!(s.with_usage, 1);
        assert!((s.cost.unwrap() - 7.5).abs() < 1e-9);
        let text = s.to_string();
        assert!(text.contains("cost: 7.5000"), "{text}");
        assert!(serde_json::to_string(&s).unwrap().contains("\"examples\":2"));
    }
}
