//! Picking each request's next token from its row of logits, with its own temperature, top-p
//! and seed, and the log-probabilities it asked for. Runs on the scheduler's thread, on plain
//! `f32` rows: a batch's rows each follow their own request's settings.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One request's sampling settings and random stream.
#[derive(Debug)]
pub struct Sampler {
    temperature: f64,
    top_p: f64,
    rng: StdRng,
}

impl Sampler {
    /// `temperature` 0 is greedy; `seed` makes sampling repeatable.
    pub fn new(temperature: f64, top_p: f64, seed: Option<i64>) -> Self {
        let rng = match seed {
            Some(seed) => StdRng::seed_from_u64(seed as u64),
            None => StdRng::from_os_rng(),
        };
        Self {
            temperature,
            top_p,
            rng,
        }
    }

    /// The next token: the most likely (lowest id on ties) when greedy, else a draw from the
    /// tempered distribution cut to the top-p nucleus.
    pub fn pick(&mut self, logits: &[f32]) -> usize {
        if self.temperature <= 0.0 {
            return argmax(logits);
        }
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let weights: Vec<f64> = logits
            .iter()
            .map(|&l| ((f64::from(l) - f64::from(max)) / self.temperature).exp())
            .collect();
        let total: f64 = weights.iter().sum();
        let mut order: Vec<usize> = (0..logits.len()).collect();
        let mut kept = order.len();
        if self.top_p < 1.0 {
            order.sort_unstable_by(|&a, &b| weights[b].total_cmp(&weights[a]).then(a.cmp(&b)));
            // The smallest set whose mass reaches p; the first token always stays.
            let mut mass = 0.0;
            kept = 0;
            for &i in &order {
                mass += weights[i] / total;
                kept += 1;
                if mass >= self.top_p {
                    break;
                }
            }
        }
        let nucleus = &order[..kept];
        let nucleus_mass: f64 = nucleus.iter().map(|&i| weights[i]).sum();
        let mut r = self.rng.random::<f64>() * nucleus_mass;
        for &i in nucleus {
            r -= weights[i];
            if r < 0.0 {
                return i;
            }
        }
        *nucleus.last().expect("a nucleus holds at least one token")
    }
}

/// The index of the largest logit, the lowest on ties.
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// Log-probabilities of a row of logits, computed once per row.
#[derive(Debug, Clone, Copy)]
pub struct LogSoftmax {
    shift: f64,
}

impl LogSoftmax {
    /// The row's normaliser (log-sum-exp, in f64).
    pub fn new(logits: &[f32]) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits
            .iter()
            .map(|&l| (f64::from(l) - f64::from(max)).exp())
            .sum();
        Self {
            shift: f64::from(max) + sum.ln(),
        }
    }

    /// The log-probability of token `i`.
    pub fn of(&self, logits: &[f32], i: usize) -> f32 {
        (f64::from(logits[i]) - self.shift) as f32
    }
}

/// The `k` most likely tokens of a row, most likely first (lowest id on ties).
pub fn top_k(logits: &[f32], k: usize) -> Vec<usize> {
    let mut best: Vec<usize> = Vec::with_capacity(k + 1);
    if k == 0 {
        return best;
    }
    for (i, &l) in logits.iter().enumerate() {
        if best.len() == k && l <= logits[best[k - 1]] {
            continue;
        }
        let at = best.partition_point(|&j| logits[j] >= l);
        best.insert(at, i);
        best.truncate(k);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(Sampler::new(0.0, 1.0, None).pick(&[1.0, 2.0, 0.5]), 1);
    }

    #[test]
    fn top_k_is_sorted_with_ties_by_id() {
        assert_eq!(top_k(&[0.1, 0.9, 0.5, 0.9, -2.0], 3), vec![1, 3, 2]);
        assert_eq!(top_k(&[0.1, 0.2], 5), vec![1, 0]);
        assert!(top_k(&[0.1], 0).is_empty());
    }

    #[test]
    fn log_softmax_sums_to_one() {
        let logits = [1.0f32, 2.0, 3.0, -50.0];
        let ls = LogSoftmax::new(&logits);
        let total: f64 = (0..4).map(|i| f64::from(ls.of(&logits, i)).exp()).sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!(
            (ls.of(&logits, 2) - (3.0 - (1f64.exp() + 2f64.exp() + 3f64.exp() + (-50f64).exp()).ln() as f32))
                .abs()
                < 1e-6
        );
    }

    #[test]
    fn a_seed_repeats_and_top_p_cuts_the_tail() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.3).collect();
        let draw = |seed| {
            let mut s = Sampler::new(1.0, 1.0, Some(seed));
            (0..20).map(|_| s.pick(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        // One token holds almost all the mass: a nucleus of 0.5 is that token alone.
        let mut peaked = vec![0.0f32; 10];
        peaked[4] = 20.0;
        let mut s = Sampler::new(1.0, 0.5, Some(1));
        assert!((0..100).all(|_| s.pick(&peaked) == 4));
        // At temperature 2 every logit value is drawn (7 distinct values here).
        let mut s = Sampler::new(2.0, 1.0, Some(1));
        let values: std::collections::BTreeSet<usize> = (0..500).map(|_| s.pick(&logits) % 7).collect();
        assert_eq!(values.len(), 7);
    }
}
