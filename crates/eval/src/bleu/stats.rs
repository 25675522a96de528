//! Sufficient statistics of BLEU and the n-gram counting behind them.
//!
//! Tokens are interned to ids; an n-gram of up to four ids packs into one `u128`
//! key. A segment's keys are sorted and run-length counted into reusable buffers,
//! so counting allocates nothing per n-gram and matching is a merge of two sorted
//! lists.

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use super::tokenize::Scratch;
use super::{BleuConfig, MAX_NGRAM_ORDER};
use crate::error::{Error, Result};
use crate::text::{python_lower, python_rstrip};

/// The sufficient statistics of BLEU for one segment or a sum of segments
/// (sacrebleu's `[hyp_len, ref_len, correct…, total…]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BleuStats {
    /// Hypothesis length in tokens.
    pub hyp_len: u64,
    /// Closest reference length in tokens (ties go to the shorter reference).
    pub ref_len: u64,
    /// Clipped n-gram matches per order (index 0 is unigrams).
    pub correct: [u64; MAX_NGRAM_ORDER],
    /// Hypothesis n-grams per order.
    pub total: [u64; MAX_NGRAM_ORDER],
}

impl BleuStats {
    /// Adds `other` to `self` (corpus statistics are sums of segment statistics).
    pub fn add(&mut self, other: &BleuStats) {
        self.hyp_len += other.hyp_len;
        self.ref_len += other.ref_len;
        for n in 0..MAX_NGRAM_ORDER {
            self.correct[n] += other.correct[n];
            self.total[n] += other.total[n];
        }
    }
}

/// Ids are limited to 31 bits so that four of them and a 2-bit order fit a key.
const ID_BITS: u32 = 31;
const MAX_IDS: usize = 1 << ID_BITS;

/// Counts n-grams segment by segment, reusing every buffer.
pub(crate) struct Engine {
    config: BleuConfig,
    vocab: FxHashMap<Box<str>, u32>,
    scratch: Scratch,
    ids: Vec<u32>,
    keys: Vec<u128>,
    counts: Vec<(u128, u32)>,
    ref_max: Vec<(u128, u32)>,
    merged: Vec<(u128, u32)>,
    ref_lens: Vec<u64>,
}

impl Engine {
    pub(crate) fn new(config: BleuConfig) -> Self {
        Engine {
            config,
            vocab: FxHashMap::default(),
            scratch: Scratch::default(),
            ids: Vec::new(),
            keys: Vec::new(),
            counts: Vec::new(),
            ref_max: Vec::new(),
            merged: Vec::new(),
            ref_lens: Vec::new(),
        }
    }

    /// The statistics of one hypothesis against its references.
    pub(crate) fn segment<'r>(
        &mut self,
        hypothesis: &str,
        references: impl Iterator<Item = &'r str>,
    ) -> Result<BleuStats> {
        self.ref_max.clear();
        self.ref_lens.clear();
        for (k, reference) in references.enumerate() {
            let len = self.tokenize(reference)?;
            self.ref_lens.push(len);
            self.count_ngrams();
            if k == 0 {
                std::mem::swap(&mut self.ref_max, &mut self.counts);
            } else {
                merge_max(&self.ref_max, &self.counts, &mut self.merged);
                std::mem::swap(&mut self.ref_max, &mut self.merged);
            }
        }
        let hyp_len = self.tokenize(hypothesis)?;
        self.count_ngrams();

        let mut stats = BleuStats {
            hyp_len,
            ref_len: closest_ref_len(hyp_len, &self.ref_lens),
            ..Default::default()
        };
        let mut r = 0;
        for &(key, count) in &self.counts {
            let n = (key >> (4 * ID_BITS)) as usize;
            stats.total[n] += u64::from(count);
            while r < self.ref_max.len() && self.ref_max[r].0 < key {
                r += 1;
            }
            if r < self.ref_max.len() && self.ref_max[r].0 == key {
                stats.correct[n] += u64::from(count.min(self.ref_max[r].1));
            }
        }
        Ok(stats)
    }

    /// Preprocesses (lowercase, rstrip) and tokenizes `line` into `self.ids`.
    fn tokenize(&mut self, line: &str) -> Result<u64> {
        let lowered;
        let line = if self.config.lowercase {
            lowered = python_lower(line);
            python_rstrip(&lowered)
        } else {
            python_rstrip(line)
        };
        self.ids.clear();
        let (vocab, ids) = (&mut self.vocab, &mut self.ids);
        let mut overflow = false;
        self.config
            .tokenizer
            .for_each_token(line, &mut self.scratch, |token| {
                let next = vocab.len();
                let id = match vocab.get(token) {
                    Some(&id) => id,
                    None if next < MAX_IDS => {
                        vocab.insert(token.into(), next as u32);
                        next as u32
                    }
                    None => {
                        overflow = true;
                        0
                    }
                };
                ids.push(id);
            });
        if overflow {
            return Err(Error::InvalidConfig(format!(
                "more than {MAX_IDS} distinct tokens"
            )));
        }
        Ok(self.ids.len() as u64)
    }

    /// Counts the n-grams of `self.ids` into `self.counts`, sorted by key.
    fn count_ngrams(&mut self) {
        let ids = &self.ids;
        self.keys.clear();
        for n in 1..=self.config.max_ngram_order.min(ids.len()) {
            let order = ((n - 1) as u128) << (4 * ID_BITS);
            for window in ids.windows(n) {
                let mut key = order;
                for (k, &id) in window.iter().enumerate() {
                    key |= u128::from(id) << (ID_BITS * k as u32);
                }
                self.keys.push(key);
            }
        }
        self.keys.sort_unstable();
        self.counts.clear();
        for &key in &self.keys {
            match self.counts.last_mut() {
                Some((last, count)) if *last == key => *count += 1,
                _ => self.counts.push((key, 1)),
            }
        }
    }
}

/// Merges two sorted count lists keeping the larger count of each key.
fn merge_max(a: &[(u128, u32)], b: &[(u128, u32)], out: &mut Vec<(u128, u32)>) {
    out.clear();
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].0.cmp(&b[j].0) {
            std::cmp::Ordering::Less => {
                out.push(a[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(b[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push((a[i].0, a[i].1.max(b[j].1)));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
}

/// sacrebleu's `_get_closest_ref_len`: the reference length closest to the
/// hypothesis length, the shorter one on ties.
fn closest_ref_len(hyp_len: u64, ref_lens: &[u64]) -> u64 {
    let mut best: Option<(u64, u64)> = None;
    for &len in ref_lens {
        let diff = hyp_len.abs_diff(len);
        match best {
            None => best = Some((diff, len)),
            Some((d, l)) if diff < d || (diff == d && len < l) => best = Some((diff, len)),
            _ => {}
        }
    }
    best.map_or(0, |(_, len)| len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keeps_maximum() {
        let mut out = Vec::new();
        merge_max(&[(1, 2), (3, 1)], &[(1, 1), (2, 5), (3, 4)], &mut out);
        assert_eq!(out, [(1, 2), (2, 5), (3, 4)]);
    }

    #[test]
    fn closest_length() {
        assert_eq!(closest_ref_len(5, &[3, 7, 6]), 6);
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
        assert_eq!(closest_ref_len(5, &[]), 0);
    }
}
