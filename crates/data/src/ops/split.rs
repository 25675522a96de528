//! Deterministic train/val/test assignment by id hash.
//!
//! An example's split depends only on its id and the ratios, never on its position or on
//! the other examples, so a file that grows keeps every earlier assignment.

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::example::{Example, Split};

/// Fractions of the dataset for each split. They must be non-negative and sum to 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitRatios {
    /// Fraction for training.
    pub train: f64,
    /// Fraction for validation.
    pub val: f64,
    /// Fraction for test.
    pub test: f64,
}

impl Default for SplitRatios {
    /// 80% train, 10% validation, 10% test.
    fn default() -> Self {
        SplitRatios {
            train: 0.8,
            val: 0.1,
            test: 0.1,
        }
    }
}

impl SplitRatios {
    /// Checks the ratios: each finite and non-negative, summing to 1 (within 1e-9).
    pub fn validate(&self) -> Result<()> {
        let parts = [self.train, self.val, self.test];
        if parts.iter().any(|r| !r.is_finite() || *r < 0.0) {
            return Err(Error::Config(format!(
                "split ratios must be non-negative: {self:?}"
            )));
        }
        let sum: f64 = parts.iter().sum();
        if (sum - 1.0).abs() > 1e-9 {
            return Err(Error::Config(format!(
                "split ratios must sum to 1, not {sum}: {self:?}"
            )));
        }
        Ok(())
    }
}

/// The split of `id`: the first 8 bytes of SHA-256(`"distill-split-v1\0"` + id), read as a
/// big-endian integer and scaled to `[0, 1)`, fall in train if below `train`, in val if below
/// `train + val`, and in test otherwise.
pub fn assign_split(id: &str, ratios: &SplitRatios) -> Split {
    let mut h = Sha256::new();
    h.update(b"distill-split-v1\0");
    h.update(id.as_bytes());
    let digest = h.finalize();
    let mut top = [0u8; 8];
    top.copy_from_slice(&digest[..8]);
    // 2^-64 scaling is exact in f64 for the top 53 bits, which is all that matters here.
    let x = u64::from_be_bytes(top) as f64 / 18_446_744_073_709_551_616.0;
    if x < ratios.train {
        Split::Train
    } else if x < ratios.train + ratios.val {
        Split::Val
    } else {
        Split::Test
    }
}

/// Sets `example.split` from its id unless it already has one: an explicit assignment (for
/// example a curated test set) wins over the hash.
pub fn apply_split(example: &mut Example, ratios: &SplitRatios) {
    if example.split.is_none() {
        example.split = Some(assign_split(&example.id, ratios));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_validated() {
        assert!(SplitRatios::default().validate().is_ok());
        assert!(
            SplitRatios {
                train: 0.5,
                val: 0.5,
                test: 0.1
            }
            .validate()
            .is_err()
        );
        assert!(
            SplitRatios {
                train: 1.2,
                val: -0.2,
                test: 0.0
            }
            .validate()
            .is_err()
        );
        assert!(
            SplitRatios {
                train: f64::NAN,
                val: 0.0,
                test: 1.0
            }
            .validate()
            .is_err()
        );
    }

    #[test]
    fn assignment_is_stable_and_roughly_proportional() {
        let r = SplitRatios::default();
        let mut counts = [0u32; 3];
        for i in 0..10_000 {
            let id = format!("id-{i}");
            let s = assign_split(&id, &r);
            assert_eq!(s, assign_split(&id, &r));
            counts[s as usize] += 1;
        }
        assert!((7700..8300).contains(&counts[0]), "{counts:?}");
        assert!((800..1200).contains(&counts[1]), "{counts:?}");
        assert!((800..1200).contains(&counts[2]), "{counts:?}");
        // Pinned: changing the scheme would silently move examples between splits.
        assert_eq!(assign_split("id-0", &r), Split::Train);
        let all_test = SplitRatios {
            train: 0.0,
            val: 0.0,
            test: 1.0,
        };
        assert_eq!(assign_split("id-0", &all_test), Split::Test);
    }

    #[test]
    fn explicit_split_wins() {
        let mut e = Example::new(vec![crate::Message::user("q")], "a");
        e.split = Some(Split::Test);
        apply_split(
            &mut e,
            &SplitRatios {
                train: 1.0,
                val: 0.0,
                test: 0.0,
            },
        );
        assert_eq!(e.split, Some(Split::Test));
        e.split = None;
        apply_split(
            &mut e,
            &SplitRatios {
                train: 1.0,
                val: 0.0,
                test: 0.0,
            },
        );
        assert_eq!(e.split, Some(Split::Train));
    }
}
