//! Confidence intervals by bootstrap resampling, like rouge-score's
//! `scoring.BootstrapAggregator`.
//!
//! For each score type the per-pair (precision, recall, F) rows are resampled with
//! replacement `n_samples` times; each resample's mean is kept, and low, mid and
//! high are the `(1 - ci) / 2`, 50th and `1 - (1 - ci) / 2` percentiles of those
//! means (numpy's linear method, see [`crate::stats::percentile`]). As in
//! rouge-score, "mid" is the median of the bootstrap means, not the plain mean.
//!
//! Resampling is deterministic for a seed, but the generator is SplitMix64, not
//! numpy's, so intervals agree with rouge-score's statistically, not bit for bit.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::rouge::{RougeScore, RougeScores, RougeType};
use crate::stats::{SplitMix64, percentile_sorted};

/// Bootstrap options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// The confidence level, in [0, 1] (rouge-score's default 0.95).
    pub confidence_interval: f64,
    /// Resamples, at least 1 (rouge-score's default 1000).
    pub n_samples: usize,
    /// The generator's seed.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        BootstrapConfig {
            confidence_interval: 0.95,
            n_samples: 1000,
            seed: 0,
        }
    }
}

/// Low, mid and high bounds of each measure (rouge-score's `AggregateScore`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AggregateScore {
    /// The lower bound.
    pub low: RougeScore,
    /// The median of the bootstrap means.
    pub mid: RougeScore,
    /// The upper bound.
    pub high: RougeScore,
}

/// Collects per-pair scores and aggregates them with confidence intervals.
#[derive(Debug, Clone)]
pub struct BootstrapAggregator {
    config: BootstrapConfig,
    scores: Vec<(RougeType, Vec<RougeScore>)>,
}

impl BootstrapAggregator {
    /// An empty aggregator; fails on a confidence level outside [0, 1] or zero
    /// samples, as rouge-score does.
    pub fn new(config: BootstrapConfig) -> Result<Self> {
        if !(0.0..=1.0).contains(&config.confidence_interval) {
            return Err(Error::InvalidConfig(
                "confidence_interval must be in range [0, 1]".into(),
            ));
        }
        if config.n_samples == 0 {
            return Err(Error::InvalidConfig("n_samples must be positive".into()));
        }
        Ok(BootstrapAggregator {
            config,
            scores: Vec::new(),
        })
    }

    /// Adds the scores of one pair.
    pub fn add_scores(&mut self, scores: &RougeScores) {
        for &(t, s) in &scores.scores {
            match self.scores.iter_mut().find(|(u, _)| *u == t) {
                Some((_, v)) => v.push(s),
                None => self.scores.push((t, vec![s])),
            }
        }
    }

    /// The interval of each score type, in the order the types were first added.
    pub fn aggregate(&self) -> Result<Vec<(RougeType, AggregateScore)>> {
        if self.scores.is_empty() {
            return Err(Error::Empty("scores"));
        }
        let mut rng = SplitMix64::new(self.config.seed);
        let delta = (1.0 - self.config.confidence_interval) / 2.0;
        let qs = [100.0 * delta, 100.0 * 0.5, 100.0 * (1.0 - delta)];
        let mut out = Vec::with_capacity(self.scores.len());
        for (t, rows) in &self.scores {
            let n = rows.len();
            let mut means = [
                Vec::with_capacity(self.config.n_samples),
                Vec::with_capacity(self.config.n_samples),
                Vec::with_capacity(self.config.n_samples),
            ];
            for _ in 0..self.config.n_samples {
                let mut sum = [0.0; 3];
                for _ in 0..n {
                    let r = rows[rng.below(n as u64) as usize];
                    sum[0] += r.precision;
                    sum[1] += r.recall;
                    sum[2] += r.fmeasure;
                }
                for k in 0..3 {
                    means[k].push(sum[k] / n as f64);
                }
            }
            let mut bounds = [RougeScore::default(); 3];
            for m in &mut means {
                m.sort_by(f64::total_cmp);
            }
            for (j, q) in qs.iter().enumerate() {
                bounds[j] = RougeScore {
                    precision: percentile_sorted(&means[0], *q)?,
                    recall: percentile_sorted(&means[1], *q)?,
                    fmeasure: percentile_sorted(&means[2], *q)?,
                };
            }
            out.push((
                *t,
                AggregateScore {
                    low: bounds[0],
                    mid: bounds[1],
                    high: bounds[2],
                },
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rouge::RougeScorer;

    #[test]
    fn interval_brackets_the_mean_and_is_reproducible() {
        let scorer = RougeScorer::new(&[RougeType::N(1)], false).unwrap();
        let mut agg = BootstrapAggregator::new(BootstrapConfig {
            seed: 42,
            ..Default::default()
        })
        .unwrap();
        let pairs = [
            ("a b c d", "a b c d"),
            ("a b c d", "a x y z"),
            ("one two", "one two three"),
            ("p q", "r s"),
        ];
        let mut total = 0.0;
        for (t, p) in pairs {
            let s = scorer.score(t, p);
            total += s.get(RougeType::N(1)).unwrap().fmeasure;
            agg.add_scores(&s);
        }
        let mean = total / pairs.len() as f64;
        let a = agg.aggregate().unwrap();
        let f = a[0].1;
        assert!(f.low.fmeasure <= f.mid.fmeasure && f.mid.fmeasure <= f.high.fmeasure);
        assert!(f.low.fmeasure < mean && mean < f.high.fmeasure);
        assert!((f.mid.fmeasure - mean).abs() < 0.05, "{f:?} vs {mean}");
        assert_eq!(agg.aggregate().unwrap(), a);
    }

    #[test]
    fn identical_scores_give_a_zero_width_interval() {
        let mut agg = BootstrapAggregator::new(BootstrapConfig::default()).unwrap();
        for _ in 0..10 {
            agg.add_scores(&RougeScores {
                scores: vec![(RougeType::L, RougeScore::new(0.5, 0.25))],
            });
        }
        let a = agg.aggregate().unwrap()[0].1;
        assert_eq!(a.low, a.high);
        assert!((a.mid.precision - 0.5).abs() < 1e-15);
    }

    #[test]
    fn rejects_bad_config() {
        assert!(
            BootstrapAggregator::new(BootstrapConfig {
                confidence_interval: 1.5,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            BootstrapAggregator::new(BootstrapConfig {
                n_samples: 0,
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            BootstrapAggregator::new(BootstrapConfig::default())
                .unwrap()
                .aggregate()
                .is_err()
        );
    }
}
