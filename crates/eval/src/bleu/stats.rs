//! Sufficient statistics of BLEU and the n-gram counting behind them.
//!
//! Tokens are interned to ids; an n-gram of up to four ids packs into one `u128`
//! key. One hash map per segment (cleared, never reallocated) holds each reference
//! n-gram's maximum count over the references; the hypothesis then counts into the
//! same entries, and a match is clipped as it is counted: the k-th occurrence of an
//! n-gram matches while k <= its reference count, so the sum is
//! `min(hypothesis count, reference count)` without a second pass.

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

/// Counts of one n-gram within a segment.
#[derive(Clone, Copy, Default)]
struct Counts {
    /// Maximum count over the references seen so far.
    max_ref: u32,
    /// Count in the reference being read.
    this_ref: u32,
    /// Which reference `this_ref` belongs to.
    reference: u32,
    /// Count in the hypothesis.
    hyp: u32,
}

/// Counts n-grams segment by segment, reusing every buffer.
pub(crate) struct Engine {
    config: BleuConfig,
    vocab: Vocab,
    scratch: Scratch,
    ids: Vec<u32>,
    /// Bigrams and longer.
    ngrams: FxHashMap<u128, Counts>,
    /// Unigrams, indexed by token id; an entry is live only if its stamp is the
    /// current segment's, which saves clearing the array.
    unigrams: Vec<(u32, Counts)>,
    segment: u32,
    ref_lens: Vec<u64>,
}

impl Engine {
    pub(crate) fn new(config: BleuConfig) -> Self {
        Engine {
            config,
            vocab: Vocab::default(),
            scratch: Scratch::default(),
            ids: Vec::new(),
            ngrams: FxHashMap::default(),
            unigrams: Vec::new(),
            segment: 0,
            ref_lens: Vec::new(),
        }
    }

    /// The statistics of one hypothesis against its references.
    pub(crate) fn segment<'r>(
        &mut self,
        hypothesis: &str,
        references: impl Iterator<Item = &'r str>,
    ) -> Result<BleuStats> {
        self.ngrams.clear();
        self.ref_lens.clear();
        // Stamps start at 1 so that fresh (zeroed) unigram slots are never live.
        self.segment = self.segment.wrapping_add(1).max(1);
        let segment = self.segment;
        for (k, reference) in references.enumerate() {
            let len = self.tokenize(reference)?;
            self.ref_lens.push(len);
            let k = k as u32;
            let (ngrams, unigrams) = (&mut self.ngrams, &mut self.unigrams);
            for_each_ngram(&self.ids, self.config.max_ngram_order, |n, key| {
                let c = if n == 0 {
                    let (stamp, c) = &mut unigrams[key as usize];
                    if *stamp != segment {
                        *stamp = segment;
                        *c = Counts {
                            reference: k,
                            ..Counts::default()
                        };
                    }
                    c
                } else {
                    ngrams.entry(key).or_insert(Counts {
                        reference: k,
                        ..Counts::default()
                    })
                };
                if c.reference != k {
                    c.reference = k;
                    c.this_ref = 0;
                }
                c.this_ref += 1;
                c.max_ref = c.max_ref.max(c.this_ref);
            });
        }
        let hyp_len = self.tokenize(hypothesis)?;
        let mut stats = BleuStats {
            hyp_len,
            ref_len: closest_ref_len(hyp_len, &self.ref_lens),
            ..Default::default()
        };
        let (ngrams, unigrams) = (&mut self.ngrams, &mut self.unigrams);
        let (ids, max_order) = (&self.ids, self.config.max_ngram_order);
        for n in 0..max_order.min(ids.len()) {
            stats.total[n] = (ids.len() - n) as u64;
        }
        for start in 0..ids.len() {
            let mut packed = 0u128;
            for (n, &id) in ids[start..].iter().take(max_order).enumerate() {
                packed |= u128::from(id) << (ID_BITS * n as u32);
                let counts = if n == 0 {
                    let (stamp, c) = &mut unigrams[id as usize];
                    (*stamp == segment).then_some(c)
                } else {
                    ngrams.get_mut(&(packed | ((n as u128) << (4 * ID_BITS))))
                };
                // No reference has this n-gram, so none has its extensions either.
                let Some(c) = counts else { break };
                c.hyp += 1;
                if c.hyp <= c.max_ref {
                    stats.correct[n] += 1;
                }
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
            .for_each_token(line, &mut self.scratch, |token| match vocab.id(token) {
                Some(id) => ids.push(id),
                None => overflow = true,
            });
        if overflow {
            return Err(Error::InvalidConfig(format!(
                "more than {MAX_IDS} distinct tokens"
            )));
        }
        if self.unigrams.len() < self.vocab.len() {
            self.unigrams.resize(self.vocab.len(), (0, Counts::default()));
        }
        Ok(self.ids.len() as u64)
    }
}

/// Token ids. Tokens of up to 15 bytes (nearly all) are keyed by their bytes
/// packed into a `u128`, which keeps lookups inside the table instead of chasing
/// a pointer to the string and comparing it.
#[derive(Default)]
struct Vocab {
    short: FxHashMap<u128, u32>,
    long: FxHashMap<Box<str>, u32>,
}

impl Vocab {
    fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    /// The id of `token`, assigning the next one if it is new; `None` once
    /// [`MAX_IDS`] ids are taken.
    #[inline]
    fn id(&mut self, token: &str) -> Option<u32> {
        let next = self.len();
        let bytes = token.as_bytes();
        if bytes.len() <= 15 {
            let mut packed = [0u8; 16];
            packed[..bytes.len()].copy_from_slice(bytes);
            // The length in the last byte keeps keys distinct (content fills at most 15).
            packed[15] = bytes.len() as u8;
            let key = u128::from_le_bytes(packed);
            if let Some(&id) = self.short.get(&key) {
                return Some(id);
            }
            (next < MAX_IDS).then(|| *self.short.entry(key).or_insert(next as u32))
        } else {
            if let Some(&id) = self.long.get(token) {
                return Some(id);
            }
            (next < MAX_IDS).then(|| *self.long.entry(token.into()).or_insert(next as u32))
        }
    }
}

/// Calls `f(order - 1, key)` for every n-gram of `ids` up to `max_order`.
#[inline]
fn for_each_ngram(ids: &[u32], max_order: usize, mut f: impl FnMut(usize, u128)) {
    for start in 0..ids.len() {
        let mut packed = 0u128;
        for (n, &id) in ids[start..].iter().take(max_order).enumerate() {
            packed |= u128::from(id) << (ID_BITS * n as u32);
            f(n, packed | ((n as u128) << (4 * ID_BITS)));
        }
    }
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
    fn clipping_uses_the_maximum_over_references() {
        let config = BleuConfig {
            tokenizer: super::super::BleuTokenizer::None,
            ..BleuConfig::default()
        };
        let mut engine = Engine::new(config);
        // "a" occurs twice in the second reference, so two of the three match.
        let s = engine.segment("a a a", ["a b", "a a", "b"].into_iter()).unwrap();
        assert_eq!(s.correct, [2, 1, 0, 0]);
        assert_eq!(s.total, [3, 2, 1, 0]);
        assert_eq!(s.ref_len, 2);
    }

    #[test]
    fn vocabulary_keys_are_distinct() {
        let mut v = Vocab::default();
        let words = [
            "a",
            "a\0",
            "",
            "abcdefghijklmno",
            "abcdefghijklmnop",
            "abcdefghijklmnopq",
            "é",
        ];
        let ids: Vec<u32> = words.iter().map(|w| v.id(w).unwrap()).collect();
        assert_eq!(ids, [0, 1, 2, 3, 4, 5, 6]);
        let again: Vec<u32> = words.iter().map(|w| v.id(w).unwrap()).collect();
        assert_eq!(again, ids);
        assert_eq!(v.len(), 7);
    }

    #[test]
    fn closest_length() {
        assert_eq!(closest_ref_len(5, &[3, 7, 6]), 6);
        assert_eq!(closest_ref_len(5, &[7, 3]), 3);
        assert_eq!(closest_ref_len(5, &[]), 0);
    }
}
