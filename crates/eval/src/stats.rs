//! Percentiles and a small deterministic random number generator.

use crate::error::{Error, Result};

/// The `q`-th percentile (0 <= q <= 100) of `values` by linear interpolation
/// between closest ranks: numpy's default `method="linear"` (Hyndman and Fan's
/// type 7). For sorted `x` of length n, the rank is `h = (q / 100) * (n - 1)` and
/// the result `x[floor(h)] + (h - floor(h)) * (x[floor(h) + 1] - x[floor(h)])`.
/// So p50 of `[1, 2, 3, 4]` is 2.5 and p100 is the maximum.
pub fn percentile(values: &[f64], q: f64) -> Result<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    percentile_sorted(&sorted, q)
}

/// [`percentile`] of values already sorted ascending.
pub fn percentile_sorted(sorted: &[f64], q: f64) -> Result<f64> {
    if sorted.is_empty() {
        return Err(Error::Empty("values"));
    }
    if !(0.0..=100.0).contains(&q) {
        return Err(Error::InvalidConfig(format!(
            "percentile must be in [0, 100], got {q}"
        )));
    }
    if sorted.iter().any(|v| v.is_nan()) {
        return Err(Error::InvalidConfig("percentile of NaN values".into()));
    }
    let h = (q / 100.0) * (sorted.len() - 1) as f64;
    let lo = h.floor();
    let t = h - lo;
    let lo = lo as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let (a, b) = (sorted[lo], sorted[hi]);
    let diff = b - a;
    // numpy's `_lerp`, which interpolates from the nearer end for accuracy.
    Ok(if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    })
}

/// SplitMix64 (Steele, Lea and Flood, 2014): a tiny, fast, seedable generator,
/// good enough for bootstrap resampling. It is not numpy's generator, so
/// resampled statistics match numpy's statistically, not bit for bit.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator with this seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A uniform integer in `0..n` (n > 0), without modulo bias (Lemire's method).
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_percentiles() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(percentile(&v, 50.0).unwrap(), 2.5);
        assert_eq!(percentile(&v, 0.0).unwrap(), 1.0);
        assert_eq!(percentile(&v, 100.0).unwrap(), 4.0);
        assert!((percentile(&v, 95.0).unwrap() - 3.85).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 99.0).unwrap(), 7.0);
        assert!(percentile(&[], 50.0).is_err());
        assert!(percentile(&v, 101.0).is_err());
        assert!(percentile(&[f64::NAN], 50.0).is_err());
    }

    #[test]
    fn uniform_draws_cover_the_range() {
        let mut rng = SplitMix64::new(7);
        let mut seen = [0u32; 5];
        for _ in 0..5000 {
            seen[rng.below(5) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
        let mut again = SplitMix64::new(7);
        assert_eq!(SplitMix64::new(7).next_u64(), again.next_u64());
    }
}
