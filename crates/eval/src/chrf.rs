//! chrF and chrF++ (Popović 2015, 2017) exactly as sacrebleu 2.x computes them.
//!
//! A port of `sacrebleu/metrics/chrf.py`: character n-grams (whitespace removed
//! unless asked) up to order 6, optional word n-grams (chrF++: order 2, after
//! sacrebleu's punctuation splitting), the best reference per segment by F-score,
//! and corpus statistics summed before the F-score.
//!
//! ```
//! use distill_eval::chrf::{Chrf, ChrfConfig};
//!
//! let chrf = Chrf::new(ChrfConfig::default())?;
//! let s = chrf.corpus_score(&["The cat sat on the mat."], &[vec!["The cat is on the mat."]])?;
//! assert_eq!(s.signature(), "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0");
//! # Ok::<(), distill_eval::Error>(())
//! ```

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

use crate::bleu::SACREBLEU_VERSION;
use crate::error::{Error, Result};
use crate::text::{is_python_space, python_lower, python_split};

/// chrF options, mirroring sacrebleu's `CHRF(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChrfConfig {
    /// Character n-gram order, 1 to 6 (`char_order`, default 6).
    pub char_order: usize,
    /// Word n-gram order, 0 to 4 (`word_order`; 0 is chrF, 2 is chrF++).
    pub word_order: usize,
    /// Weight of recall (`beta`, default 2).
    pub beta: u32,
    /// Lowercase first (`lowercase`).
    pub lowercase: bool,
    /// Keep whitespace in character n-grams (`whitespace`).
    pub whitespace: bool,
    /// chrF++.py-style epsilon smoothing instead of effective order (`eps_smoothing`).
    pub eps_smoothing: bool,
}

impl Default for ChrfConfig {
    /// sacrebleu's `CHRF()`: chrF2 with character 6-grams.
    fn default() -> Self {
        ChrfConfig {
            char_order: 6,
            word_order: 0,
            beta: 2,
            lowercase: false,
            whitespace: false,
            eps_smoothing: false,
        }
    }
}

impl ChrfConfig {
    /// chrF++: as [`Default`] with word bigrams.
    pub fn plus_plus() -> Self {
        ChrfConfig {
            word_order: 2,
            ..ChrfConfig::default()
        }
    }
}

/// A chrF score (0–100).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChrfScore {
    /// The score.
    pub score: f64,
    /// The options used.
    pub config: ChrfConfig,
    /// References per segment; `None` when it varies (`nrefs:var`).
    pub nrefs: Option<usize>,
}

impl ChrfScore {
    /// sacrebleu's name: `chrF2`, `chrF2++`.
    pub fn name(&self) -> String {
        format!("chrF{}{}", self.config.beta, "+".repeat(self.config.word_order))
    }

    /// sacrebleu's signature, e.g. `nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|version:2.6.0`.
    pub fn signature(&self) -> String {
        let c = &self.config;
        let nrefs = self.nrefs.map_or_else(|| "var".to_owned(), |n| n.to_string());
        format!(
            "nrefs:{nrefs}|case:{}|eff:{}|nc:{}|nw:{}|space:{}|version:{SACREBLEU_VERSION}",
            if c.lowercase { "lc" } else { "mixed" },
            if c.eps_smoothing { "no" } else { "yes" },
            c.char_order,
            c.word_order,
            if c.whitespace { "yes" } else { "no" },
        )
    }
}

/// A chrF scorer (sacrebleu's `CHRF` object).
#[derive(Debug, Clone)]
pub struct Chrf {
    config: ChrfConfig,
}

/// `string.punctuation`, which chrF++ splits off word edges.
fn is_ascii_punct(c: char) -> bool {
    c.is_ascii_punctuation()
}

/// N-gram counts of one text, per order (char orders first, then word orders).
type Counts = Vec<FxHashMap<u128, u32>>;

impl Chrf {
    /// Checks the orders (char 1–6, word 0–4) and beta (at least 1).
    pub fn new(config: ChrfConfig) -> Result<Self> {
        if !(1..=6).contains(&config.char_order) || config.word_order > 4 || config.beta == 0 {
            return Err(Error::InvalidConfig(format!(
                "chrF needs char_order 1-6, word_order 0-4 and beta >= 1, got {config:?}"
            )));
        }
        Ok(Chrf { config })
    }

    /// Corpus chrF; `references` holds reference streams as in
    /// [`crate::bleu::Bleu::corpus_score`].
    pub fn corpus_score<H: AsRef<str>, R: AsRef<str>>(
        &self,
        hypotheses: &[H],
        references: &[Vec<R>],
    ) -> Result<ChrfScore> {
        if hypotheses.is_empty() {
            return Err(Error::Empty("hypotheses"));
        }
        if references.is_empty() {
            return Err(Error::Empty("references"));
        }
        for stream in references {
            if stream.len() != hypotheses.len() {
                return Err(Error::LengthMismatch {
                    what: "reference stream",
                    expected: hypotheses.len(),
                    actual: stream.len(),
                });
            }
        }
        let mut words = FxHashMap::default();
        let mut total = vec![0u64; 3 * self.order()];
        for (i, hyp) in hypotheses.iter().enumerate() {
            let refs: Vec<&str> = references.iter().map(|s| s[i].as_ref()).collect();
            let stats = self.segment(hyp.as_ref(), &refs, &mut words);
            for (t, s) in total.iter_mut().zip(stats) {
                *t += s;
            }
        }
        Ok(ChrfScore {
            score: self.f_score(&total),
            config: self.config,
            nrefs: Some(references.len()),
        })
    }

    /// Sentence chrF of one hypothesis against its references.
    pub fn sentence_score<R: AsRef<str>>(&self, hypothesis: &str, references: &[R]) -> Result<ChrfScore> {
        if references.is_empty() {
            return Err(Error::Empty("references"));
        }
        let refs: Vec<&str> = references.iter().map(AsRef::as_ref).collect();
        let stats = self.segment(hypothesis, &refs, &mut FxHashMap::default());
        Ok(ChrfScore {
            score: self.f_score(&stats),
            config: self.config,
            nrefs: Some(references.len()),
        })
    }

    fn order(&self) -> usize {
        self.config.char_order + self.config.word_order
    }

    /// `_compute_segment_statistics`: the statistics against the best reference.
    fn segment(&self, hypothesis: &str, references: &[&str], words: &mut FxHashMap<String, u32>) -> Vec<u64> {
        let hyp = self.counts(hypothesis, words);
        let mut best: Option<(f64, Vec<u64>)> = None;
        for reference in references {
            let r = self.counts(reference, words);
            let mut stats = Vec::with_capacity(3 * self.order());
            for (h, r) in hyp.iter().zip(&r) {
                let mut matched = 0u64;
                let mut hyp_count = 0u64;
                for (k, &c) in h {
                    hyp_count += u64::from(c);
                    if let Some(&rc) = r.get(k) {
                        matched += u64::from(c.min(rc));
                    }
                }
                let ref_count: u64 = r.values().map(|&c| u64::from(c)).sum();
                stats.extend([if r.is_empty() { 0 } else { hyp_count }, ref_count, matched]);
            }
            let f = self.f_score(&stats);
            if best.as_ref().is_none_or(|(b, _)| f > *b) {
                best = Some((f, stats));
            }
        }
        best.map(|(_, s)| s).unwrap_or_default()
    }

    /// Character and word n-gram counts of a (preprocessed) text.
    fn counts(&self, text: &str, words: &mut FxHashMap<String, u32>) -> Counts {
        let lowered;
        let text = if self.config.lowercase {
            lowered = python_lower(text);
            &lowered
        } else {
            text
        };
        let chars: Vec<char> = if self.config.whitespace {
            text.chars().collect()
        } else {
            text.chars().filter(|&c| !is_python_space(c)).collect()
        };
        let mut out: Counts = vec![FxHashMap::default(); self.order()];
        for n in 1..=self.config.char_order {
            for w in chars.windows(n) {
                let key = w.iter().fold(0u128, |k, &c| (k << 21) | u128::from(u32::from(c)));
                *out[n - 1].entry(key).or_insert(0) += 1;
            }
        }
        if self.config.word_order > 0 {
            let ids: Vec<u32> = remove_punctuation(text)
                .into_iter()
                .map(|w| {
                    let next = words.len() as u32;
                    *words.entry(w.to_owned()).or_insert(next)
                })
                .collect();
            for n in 1..=self.config.word_order {
                for w in ids.windows(n) {
                    let key = w.iter().fold(0u128, |k, &id| (k << 32) | u128::from(id));
                    *out[self.config.char_order + n - 1].entry(key).or_insert(0) += 1;
                }
            }
        }
        out
    }

    /// `_compute_f_score`.
    fn f_score(&self, stats: &[u64]) -> f64 {
        const EPS: f64 = 1e-16;
        let factor = f64::from(self.config.beta).powi(2);
        let mut score = 0.0;
        let (mut avg_prec, mut avg_rec) = (0.0, 0.0);
        let mut effective_order = 0;
        for s in stats.chunks_exact(3) {
            let (n_hyp, n_ref, n_match) = (s[0], s[1], s[2]);
            let prec = if n_hyp > 0 {
                n_match as f64 / n_hyp as f64
            } else {
                EPS
            };
            let rec = if n_ref > 0 {
                n_match as f64 / n_ref as f64
            } else {
                EPS
            };
            let denom = factor * prec + rec;
            score += if denom > 0.0 {
                (1.0 + factor) * prec * rec / denom
            } else {
                EPS
            };
            if n_hyp > 0 && n_ref > 0 {
                avg_prec += prec;
                avg_rec += rec;
                effective_order += 1;
            }
        }
        if self.config.eps_smoothing {
            return 100.0 * score / self.order() as f64;
        }
        if effective_order == 0 {
            avg_prec = 0.0;
            avg_rec = 0.0;
        } else {
            avg_prec /= effective_order as f64;
            avg_rec /= effective_order as f64;
        }
        if avg_prec + avg_rec != 0.0 {
            let mut score = (1.0 + factor) * avg_prec * avg_rec;
            score /= (factor * avg_prec) + avg_rec;
            100.0 * score
        } else {
            0.0
        }
    }
}

/// `_remove_punctuation`: split one ASCII punctuation mark off the end (or else
/// the start) of each word longer than one character.
fn remove_punctuation(sent: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for w in python_split(sent) {
        let mut chars = w.char_indices();
        let first = chars.next();
        let last = w.char_indices().next_back();
        match (first, last) {
            (Some(_), Some((0, _))) => out.push(w),
            (Some((_, f)), Some((li, l))) => {
                if is_ascii_punct(l) {
                    out.extend([&w[..li], &w[li..]]);
                } else if is_ascii_punct(f) {
                    let split = f.len_utf8();
                    out.extend([&w[..split], &w[split..]]);
                } else {
                    out.push(w);
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn punctuation_splitting_like_sacrebleu() {
        assert_eq!(
            remove_punctuation("(hi) a, .b é!"),
            ["(hi", ")", "a", ",", ".", "b", "é", "!"]
        );
    }

    #[test]
    fn identical_is_100_and_names() {
        let chrf = Chrf::new(ChrfConfig::plus_plus()).unwrap();
        let s = chrf.sentence_score("the cat sat", &["the cat sat"]).unwrap();
        assert!((s.score - 100.0).abs() < 1e-9);
        assert_eq!(s.name(), "chrF2++");
        assert!(
            Chrf::new(ChrfConfig {
                char_order: 7,
                ..ChrfConfig::default()
            })
            .is_err()
        );
    }
}
