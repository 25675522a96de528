//! ROUGE exactly as Google's `rouge-score` 0.1.2 computes it.
//!
//! A port of `rouge_score/rouge_scorer.py` with its default tokenizer
//! (`tokenize.py`: lowercase, every run of characters other than `[a-z0-9]`
//! becomes a space, NLTK's Porter stemmer on tokens longer than three characters
//! when asked). ROUGE-N, ROUGE-L and ROUGE-Lsum (sentences split on newlines,
//! union LCS without double counting) give precision, recall and F1 equal to
//! rouge-score's to 1e-9 on the parity fixtures.
//!
//! Like rouge-score, ROUGE-Lsum keeps a full LCS table per pair of sentences
//! (4 bytes per cell), because the union depends on which LCS its backtracking
//! picks; ROUGE-L needs one row only.
//!
//! ```
//! use distill_eval::rouge::{RougeScorer, RougeType};
//!
//! let scorer = RougeScorer::new(&[RougeType::N(1), RougeType::L], true)?;
//! // rouge-score's argument order: target (reference) first, then prediction.
//! let scores = scorer.score("The quick brown fox jumps over the lazy dog",
//!                           "The quick brown dog jumps on the log.");
//! let l = scores.get(RougeType::L).unwrap();
//! assert!((l.fmeasure - 0.5882352941176471).abs() < 1e-12);
//! # Ok::<(), distill_eval::Error>(())
//! ```

mod porter;
mod tokenize;

use std::fmt;
use std::str::FromStr;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};

pub use porter::PorterStemmer;
pub use tokenize::tokenize;

use crate::error::{Error, Result};
use tokenize::Tokenizer;

/// A ROUGE variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RougeType {
    /// ROUGE-N: n-gram overlap, n from 1 to 9 (`rouge1` … `rouge9`).
    N(u8),
    /// ROUGE-L: longest common subsequence over the whole text (`rougeL`).
    L,
    /// ROUGE-Lsum: summary-level union LCS, one sentence per line (`rougeLsum`).
    Lsum,
}

impl RougeType {
    /// ROUGE-1, ROUGE-2, ROUGE-L and ROUGE-Lsum.
    pub const ALL_COMMON: [RougeType; 4] = [RougeType::N(1), RougeType::N(2), RougeType::L, RougeType::Lsum];
}

impl fmt::Display for RougeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RougeType::N(n) => write!(f, "rouge{n}"),
            RougeType::L => f.write_str("rougeL"),
            RougeType::Lsum => f.write_str("rougeLsum"),
        }
    }
}

impl FromStr for RougeType {
    type Err = Error;

    /// Parses rouge-score's names: `rouge1` … `rouge9`, `rougeL`, `rougeLsum`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rougeL" => Ok(RougeType::L),
            "rougeLsum" => Ok(RougeType::Lsum),
            _ => match s.strip_prefix("rouge").and_then(|d| d.parse::<u8>().ok()) {
                Some(n @ 1..=9) if s.len() == 6 => Ok(RougeType::N(n)),
                _ => Err(Error::InvalidConfig(format!("invalid rouge type {s:?}"))),
            },
        }
    }
}

impl Serialize for RougeType {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RougeType {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Precision, recall and F1 (rouge-score's `Score` tuple).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RougeScore {
    /// Matches over prediction length.
    pub precision: f64,
    /// Matches over target length.
    pub recall: f64,
    /// Harmonic mean of precision and recall.
    pub fmeasure: f64,
}

impl RougeScore {
    /// rouge-score's `Score` built with its `fmeasure`.
    pub fn new(precision: f64, recall: f64) -> Self {
        RougeScore {
            precision,
            recall,
            fmeasure: fmeasure(precision, recall),
        }
    }
}

/// rouge-score's `scoring.fmeasure`.
pub fn fmeasure(precision: f64, recall: f64) -> f64 {
    if precision + recall > 0.0 {
        2.0 * precision * recall / (precision + recall)
    } else {
        0.0
    }
}

/// The scores of one pair, one per requested type, in the requested order.
/// Serialised as a map from type name to score (`{"rouge1": {...}, ...}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RougeScores {
    /// `(type, score)` in the scorer's order.
    pub scores: Vec<(RougeType, RougeScore)>,
}

impl Serialize for RougeScores {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.scores.len()))?;
        for (t, s) in &self.scores {
            map.serialize_entry(&t.to_string(), s)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for RougeScores {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<RougeType, RougeScore>::deserialize(deserializer)?;
        Ok(RougeScores {
            scores: map.into_iter().collect(),
        })
    }
}

impl RougeScores {
    /// The score of one type, if it was requested.
    pub fn get(&self, rouge_type: RougeType) -> Option<RougeScore> {
        self.scores
            .iter()
            .find(|(t, _)| *t == rouge_type)
            .map(|&(_, s)| s)
    }
}

/// rouge-score's `RougeScorer` with its default tokenizer.
#[derive(Debug, Clone)]
pub struct RougeScorer {
    types: Vec<RougeType>,
    use_stemmer: bool,
}

impl RougeScorer {
    /// A scorer for `types` (at least one; ROUGE-N needs 1 <= n <= 9), with or
    /// without the Porter stemmer.
    pub fn new(types: &[RougeType], use_stemmer: bool) -> Result<Self> {
        if types.is_empty() {
            return Err(Error::Empty("rouge types"));
        }
        if let Some(t) = types
            .iter()
            .find(|t| matches!(t, RougeType::N(n) if !(1..=9).contains(n)))
        {
            return Err(Error::InvalidConfig(format!(
                "ROUGE-N needs 1 <= n <= 9, got {t:?}"
            )));
        }
        Ok(RougeScorer {
            types: types.to_vec(),
            use_stemmer,
        })
    }

    /// The requested types.
    pub fn types(&self) -> &[RougeType] {
        &self.types
    }

    /// Scores `prediction` against `target`: `RougeScorer.score(target, prediction)`.
    pub fn score(&self, target: &str, prediction: &str) -> RougeScores {
        Workspace::new(self.use_stemmer).score(&self.types, target, prediction)
    }

    /// `RougeScorer.score_multi`: for each type, the score against the target
    /// with the highest F1 (the first one on ties).
    pub fn score_multi<T: AsRef<str>>(&self, targets: &[T], prediction: &str) -> Result<RougeScores> {
        if targets.is_empty() {
            return Err(Error::Empty("targets"));
        }
        let mut ws = Workspace::new(self.use_stemmer);
        let all: Vec<RougeScores> = targets
            .iter()
            .map(|t| ws.score(&self.types, t.as_ref(), prediction))
            .collect();
        let scores = self
            .types
            .iter()
            .enumerate()
            .map(|(k, &t)| {
                let mut best = all[0].scores[k].1;
                for s in &all[1..] {
                    if s.scores[k].1.fmeasure > best.fmeasure {
                        best = s.scores[k].1;
                    }
                }
                (t, best)
            })
            .collect();
        Ok(RougeScores { scores })
    }

    /// Scores many pairs, reusing buffers and a stem cache: element i scores
    /// `predictions[i]` against `targets[i]`.
    pub fn score_batch<T: AsRef<str>, P: AsRef<str>>(
        &self,
        targets: &[T],
        predictions: &[P],
    ) -> Result<Vec<RougeScores>> {
        if targets.len() != predictions.len() {
            return Err(Error::LengthMismatch {
                what: "predictions (one per target)",
                expected: targets.len(),
                actual: predictions.len(),
            });
        }
        let mut ws = Workspace::new(self.use_stemmer);
        Ok(targets
            .iter()
            .zip(predictions)
            .map(|(t, p)| ws.score(&self.types, t.as_ref(), p.as_ref()))
            .collect())
    }
}

/// The arithmetic mean of each type's precision, recall and F1 over pairs (the
/// usual corpus-level ROUGE; see [`crate::bootstrap`] for confidence intervals).
pub fn mean_scores(scores: &[RougeScores]) -> Result<RougeScores> {
    let first = scores.first().ok_or(Error::Empty("scores"))?;
    let mut sums: Vec<(RougeType, [f64; 3])> = first.scores.iter().map(|&(t, _)| (t, [0.0; 3])).collect();
    for s in scores {
        if s.scores.len() != sums.len() {
            return Err(Error::LengthMismatch {
                what: "rouge types",
                expected: sums.len(),
                actual: s.scores.len(),
            });
        }
        for ((t, sum), (t2, v)) in sums.iter_mut().zip(&s.scores) {
            if t != t2 {
                return Err(Error::InvalidConfig(format!("mixed rouge types {t} and {t2}")));
            }
            sum[0] += v.precision;
            sum[1] += v.recall;
            sum[2] += v.fmeasure;
        }
    }
    let n = scores.len() as f64;
    Ok(RougeScores {
        scores: sums
            .into_iter()
            .map(|(t, s)| {
                (
                    t,
                    RougeScore {
                        precision: s[0] / n,
                        recall: s[1] / n,
                        fmeasure: s[2] / n,
                    },
                )
            })
            .collect(),
    })
}

/// Reusable state for scoring: the tokenizer (with its stem cache), the token
/// interner and the LCS buffers.
struct Workspace {
    tokenizer: Tokenizer,
    vocab: FxHashMap<Box<[u8]>, u32>,
    target: Vec<u32>,
    prediction: Vec<u32>,
    target_sents: Vec<Vec<u32>>,
    prediction_sents: Vec<Vec<u32>>,
    row: Vec<u32>,
    table: Vec<u32>,
    union: Vec<usize>,
    counts_r: Vec<u32>,
    counts_c: Vec<u32>,
}

impl Workspace {
    fn new(use_stemmer: bool) -> Self {
        Workspace {
            tokenizer: Tokenizer::new(use_stemmer),
            vocab: FxHashMap::default(),
            target: Vec::new(),
            prediction: Vec::new(),
            target_sents: Vec::new(),
            prediction_sents: Vec::new(),
            row: Vec::new(),
            table: Vec::new(),
            union: Vec::new(),
            counts_r: Vec::new(),
            counts_c: Vec::new(),
        }
    }

    fn score(&mut self, types: &[RougeType], target: &str, prediction: &str) -> RougeScores {
        // Ids only need to be consistent within one pair; a fresh vocabulary per
        // pair keeps them dense for the count arrays of ROUGE-Lsum.
        self.vocab.clear();
        let needs_whole = types.iter().any(|t| *t != RougeType::Lsum);
        if needs_whole {
            let mut ids = std::mem::take(&mut self.target);
            self.tokenize_ids(target, &mut ids);
            self.target = ids;
            let mut ids = std::mem::take(&mut self.prediction);
            self.tokenize_ids(prediction, &mut ids);
            self.prediction = ids;
        }
        let scores = types
            .iter()
            .map(|&t| {
                let s = match t {
                    RougeType::N(n) => score_ngrams(&self.target, &self.prediction, usize::from(n)),
                    RougeType::L => self.score_lcs(),
                    RougeType::Lsum => self.score_lsum(target, prediction),
                };
                (t, s)
            })
            .collect();
        RougeScores { scores }
    }

    fn tokenize_ids(&mut self, text: &str, ids: &mut Vec<u32>) {
        ids.clear();
        let vocab = &mut self.vocab;
        self.tokenizer.for_each_token(text, |token| {
            let next = vocab.len() as u32;
            let id = *vocab.entry(token.into()).or_insert(next);
            ids.push(id);
        });
    }

    /// `_score_lcs`.
    fn score_lcs(&mut self) -> RougeScore {
        let (t, p) = (&self.target, &self.prediction);
        if t.is_empty() || p.is_empty() {
            return RougeScore::default();
        }
        let lcs = lcs_length(t, p, &mut self.row);
        RougeScore::new(f64::from(lcs) / p.len() as f64, f64::from(lcs) / t.len() as f64)
    }

    /// `_summary_level_lcs` with rouge-score's newline sentence split.
    fn score_lsum(&mut self, target: &str, prediction: &str) -> RougeScore {
        let mut target_sents = std::mem::take(&mut self.target_sents);
        let mut prediction_sents = std::mem::take(&mut self.prediction_sents);
        self.sentences(target, &mut target_sents);
        self.sentences(prediction, &mut prediction_sents);
        let score = self.summary_level_lcs(&target_sents, &prediction_sents);
        self.target_sents = target_sents;
        self.prediction_sents = prediction_sents;
        score
    }

    /// `get_sents` (split on "\n", drop empty strings) then tokenize each.
    fn sentences(&mut self, text: &str, out: &mut Vec<Vec<u32>>) {
        let mut n = 0;
        for sent in text.split('\n').filter(|s| !s.is_empty()) {
            if out.len() == n {
                out.push(Vec::new());
            }
            let mut ids = std::mem::take(&mut out[n]);
            self.tokenize_ids(sent, &mut ids);
            out[n] = ids;
            n += 1;
        }
        out.truncate(n);
    }

    fn summary_level_lcs(&mut self, refs: &[Vec<u32>], cands: &[Vec<u32>]) -> RougeScore {
        if refs.is_empty() || cands.is_empty() {
            return RougeScore::default();
        }
        let m: usize = refs.iter().map(Vec::len).sum();
        let n: usize = cands.iter().map(Vec::len).sum();
        if m == 0 || n == 0 {
            return RougeScore::default();
        }
        let vocab = self.vocab.len();
        self.counts_r.clear();
        self.counts_r.resize(vocab, 0);
        self.counts_c.clear();
        self.counts_c.resize(vocab, 0);
        for &t in refs.iter().flatten() {
            self.counts_r[t as usize] += 1;
        }
        for &t in cands.iter().flatten() {
            self.counts_c[t as usize] += 1;
        }
        let mut hits = 0usize;
        for r in refs {
            self.union.clear();
            for c in cands {
                lcs_indices(r, c, &mut self.table, &mut self.union);
            }
            self.union.sort_unstable();
            self.union.dedup();
            for &i in &self.union {
                let t = r[i] as usize;
                if self.counts_c[t] > 0 && self.counts_r[t] > 0 {
                    hits += 1;
                    self.counts_c[t] -= 1;
                    self.counts_r[t] -= 1;
                }
            }
        }
        RougeScore::new(hits as f64 / n as f64, hits as f64 / m as f64)
    }
}

/// `_score_ngrams` on the n-grams of two token sequences.
fn score_ngrams(target: &[u32], prediction: &[u32], n: usize) -> RougeScore {
    let mut t: Vec<&[u32]> = target.windows(n).collect();
    let mut p: Vec<&[u32]> = prediction.windows(n).collect();
    t.sort_unstable();
    p.sort_unstable();
    // Sum over distinct n-grams of min(count in target, count in prediction).
    let (mut i, mut j, mut overlap) = (0, 0, 0usize);
    while i < t.len() && j < p.len() {
        match t[i].cmp(p[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                overlap += 1;
                i += 1;
                j += 1;
            }
        }
    }
    RougeScore::new(
        overlap as f64 / p.len().max(1) as f64,
        overlap as f64 / t.len().max(1) as f64,
    )
}

/// The length of a longest common subsequence, with one DP row.
fn lcs_length(a: &[u32], b: &[u32], row: &mut Vec<u32>) -> u32 {
    row.clear();
    row.resize(b.len() + 1, 0);
    for &x in a {
        let mut diag = 0;
        for (j, &y) in b.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[b.len()]
}

/// `lcs_ind`: the reference indices of one LCS, found by rouge-score's
/// backtracking (which fixes which LCS when several exist), appended to `out`.
fn lcs_indices(r: &[u32], c: &[u32], table: &mut Vec<u32>, out: &mut Vec<usize>) {
    let cols = c.len() + 1;
    table.clear();
    table.resize((r.len() + 1) * cols, 0);
    for i in 1..=r.len() {
        for j in 1..=c.len() {
            table[i * cols + j] = if r[i - 1] == c[j - 1] {
                table[(i - 1) * cols + j - 1] + 1
            } else {
                table[(i - 1) * cols + j].max(table[i * cols + j - 1])
            };
        }
    }
    let (mut i, mut j) = (r.len(), c.len());
    while i > 0 && j > 0 {
        if r[i - 1] == c[j - 1] {
            out.push(i - 1);
            i -= 1;
            j -= 1;
        } else if table[i * cols + j - 1] > table[(i - 1) * cols + j] {
            j -= 1;
        } else {
            i -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ["rouge1", "rouge2", "rouge9", "rougeL", "rougeLsum"] {
            assert_eq!(name.parse::<RougeType>().unwrap().to_string(), name);
        }
        for bad in ["rouge0", "rouge10", "rougel", "rouge"] {
            assert!(bad.parse::<RougeType>().is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_inputs_score_zero() {
        let scorer = RougeScorer::new(&RougeType::ALL_COMMON, false).unwrap();
        for s in scorer.score("", "a b").scores {
            assert_eq!(s.1, RougeScore::default());
        }
    }

    #[test]
    fn lcs_basics() {
        let mut row = Vec::new();
        assert_eq!(lcs_length(&[1, 2, 3, 4], &[2, 4, 3], &mut row), 2);
        let (mut table, mut out) = (Vec::new(), Vec::new());
        lcs_indices(&[1, 2, 3, 4], &[2, 4, 3], &mut table, &mut out);
        out.sort_unstable();
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn lsum_differs_from_l_on_reordered_sentences() {
        let scorer = RougeScorer::new(&[RougeType::L, RougeType::Lsum], false).unwrap();
        let s = scorer.score("a b c\nd e f", "d e f\na b c");
        assert!(s.get(RougeType::Lsum).unwrap().fmeasure > s.get(RougeType::L).unwrap().fmeasure);
        assert_eq!(s.get(RougeType::Lsum).unwrap().fmeasure, 1.0);
    }
}
