//! BLEU (Papineni et al., 2002) exactly as sacrebleu 2.x computes it.
//!
//! A port of `sacrebleu/metrics/bleu.py`: the same tokenizers, the same sufficient
//! statistics (closest reference length, n-gram counts clipped by the maximum count
//! over references), the same smoothing methods and the same signature. Scores are
//! on sacrebleu's 0–100 scale and agree with sacrebleu to 1e-9 on the parity
//! fixtures (`tests/fixtures`).
//!
//! ```
//! use distill_eval::bleu::{Bleu, BleuConfig};
//!
//! let bleu = Bleu::new(BleuConfig::default())?;
//! let hyps = ["The cat sat on the mat."];
//! let refs = vec![vec!["The cat is sitting on the mat."]];
//! let score = bleu.corpus_score(&hyps, &refs)?;
//! assert_eq!(score.signature.to_string(), "nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0");
//! assert!((score.score - 42.38365628278778).abs() < 1e-9);
//! # Ok::<(), distill_eval::Error>(())
//! ```

mod intl_tables;
mod stats;
mod tokenize;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use stats::BleuStats;
pub use tokenize::BleuTokenizer;

use crate::error::{Error, Result};
use stats::Engine;

/// The sacrebleu version whose results this module reproduces; it is the
/// `version` field of every signature.
pub const SACREBLEU_VERSION: &str = "2.6.0";

/// The largest n-gram order supported (sacrebleu's default is also 4).
pub const MAX_NGRAM_ORDER: usize = 4;

/// How BLEU treats n-gram orders without matches (Chen and Cherry, 2014).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "method", content = "value", rename_all = "kebab-case")]
pub enum Smoothing {
    /// No smoothing: any order without a match makes BLEU 0.
    None,
    /// Method 1: a zero match count becomes `value` (sacrebleu's default 0.1).
    Floor(f64),
    /// Method 2: add `value` to the counts and totals of orders 2 and up (default 1).
    AddK(f64),
    /// Method 3, NIST's: the k-th order without matches gets precision 1/2^k.
    /// sacrebleu's default.
    #[default]
    Exp,
}

impl Smoothing {
    /// `floor` with sacrebleu's default value, 0.1.
    pub const FLOOR: Smoothing = Smoothing::Floor(0.1);
    /// `add-k` with sacrebleu's default value, 1.
    pub const ADD_K: Smoothing = Smoothing::AddK(1.0);

    /// The method name as sacrebleu spells it (`exp`, `floor`, `add-k`, `none`).
    pub fn method(self) -> &'static str {
        match self {
            Smoothing::None => "none",
            Smoothing::Floor(_) => "floor",
            Smoothing::AddK(_) => "add-k",
            Smoothing::Exp => "exp",
        }
    }

    /// Parses a sacrebleu method name with its default value.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "none" => Some(Smoothing::None),
            "floor" => Some(Smoothing::FLOOR),
            "add-k" => Some(Smoothing::ADD_K),
            "exp" => Some(Smoothing::Exp),
            _ => None,
        }
    }
}

/// BLEU options, mirroring the arguments of sacrebleu's `BLEU(...)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BleuConfig {
    /// The tokenizer (sacrebleu's `tokenize`).
    pub tokenizer: BleuTokenizer,
    /// Lowercase hypotheses and references first (`lowercase`).
    pub lowercase: bool,
    /// The smoothing method and value (`smooth_method`, `smooth_value`).
    pub smoothing: Smoothing,
    /// The largest n-gram order, 1 to [`MAX_NGRAM_ORDER`] (`max_ngram_order`).
    pub max_ngram_order: usize,
    /// Stop at the first order with no n-grams (`effective_order`); sacrebleu's
    /// `sentence_bleu` turns it on.
    pub effective_order: bool,
}

impl Default for BleuConfig {
    /// sacrebleu's `BLEU()` defaults, as used by `corpus_bleu`.
    fn default() -> Self {
        BleuConfig {
            tokenizer: BleuTokenizer::Tok13a,
            lowercase: false,
            smoothing: Smoothing::Exp,
            max_ngram_order: MAX_NGRAM_ORDER,
            effective_order: false,
        }
    }
}

impl BleuConfig {
    /// sacrebleu's `sentence_bleu` defaults: as [`Default`] with effective order on.
    pub fn sentence() -> Self {
        BleuConfig {
            effective_order: true,
            ..BleuConfig::default()
        }
    }
}

/// The number of references per segment, as the signature shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RefCount {
    /// Every segment has this many references.
    Fixed(usize),
    /// Segments have different numbers of references (`nrefs:var`).
    Variable,
}

/// sacrebleu's reproducibility signature, for example
/// `nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BleuSignature {
    /// References per segment.
    pub nrefs: RefCount,
    /// The options the score was computed with.
    pub config: BleuConfig,
}

impl fmt::Display for BleuSignature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.nrefs {
            RefCount::Fixed(n) => write!(f, "nrefs:{n}|")?,
            RefCount::Variable => write!(f, "nrefs:var|")?,
        }
        let c = &self.config;
        let case = if c.lowercase { "lc" } else { "mixed" };
        let eff = if c.effective_order { "yes" } else { "no" };
        write!(
            f,
            "case:{case}|eff:{eff}|tok:{}|smooth:{}",
            c.tokenizer.signature(),
            c.smoothing.method()
        )?;
        match c.smoothing {
            Smoothing::Floor(v) | Smoothing::AddK(v) => write!(f, "[{v:.2}]")?,
            Smoothing::None | Smoothing::Exp => {}
        }
        write!(f, "|version:{SACREBLEU_VERSION}")
    }
}

/// A BLEU score with the statistics it came from (sacrebleu's `BLEUScore`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BleuScore {
    /// BLEU on the 0–100 scale.
    pub score: f64,
    /// Matched n-grams per order (before any add-k smoothing).
    pub counts: Vec<u64>,
    /// Hypothesis n-grams per order (before any add-k smoothing).
    pub totals: Vec<u64>,
    /// The (smoothed) n-gram precisions per order, on the 0–100 scale.
    pub precisions: Vec<f64>,
    /// The brevity penalty.
    pub bp: f64,
    /// Total hypothesis length in tokens.
    pub sys_len: u64,
    /// Total closest-reference length in tokens.
    pub ref_len: u64,
    /// How the score was computed.
    pub signature: BleuSignature,
}

impl BleuScore {
    /// `sys_len / ref_len`, or 0 without references.
    pub fn ratio(&self) -> f64 {
        if self.ref_len == 0 {
            0.0
        } else {
            self.sys_len as f64 / self.ref_len as f64
        }
    }

    /// The line sacrebleu prints, for example
    /// `BLEU|nrefs:1|…|version:2.6.0 = 42.38 85.7/66.7/40.0/25.0 (BP = 0.867 ratio = 0.875 hyp_len = 7 ref_len = 8)`.
    pub fn format(&self) -> String {
        let precisions: Vec<String> = self.precisions.iter().map(|p| format!("{p:.1}")).collect();
        format!(
            "BLEU|{} = {:.2} {} (BP = {:.3} ratio = {:.3} hyp_len = {} ref_len = {})",
            self.signature,
            self.score,
            precisions.join("/"),
            self.bp,
            self.ratio(),
            self.sys_len,
            self.ref_len
        )
    }
}

/// A BLEU scorer with fixed options (sacrebleu's `BLEU` object).
#[derive(Debug, Clone)]
pub struct Bleu {
    config: BleuConfig,
}

impl Bleu {
    /// Checks the options: the order must be 1 to [`MAX_NGRAM_ORDER`] and a
    /// smoothing value must be finite and non-negative.
    pub fn new(config: BleuConfig) -> Result<Self> {
        if !(1..=MAX_NGRAM_ORDER).contains(&config.max_ngram_order) {
            return Err(Error::InvalidConfig(format!(
                "max_ngram_order must be 1 to {MAX_NGRAM_ORDER}, got {}",
                config.max_ngram_order
            )));
        }
        if let Smoothing::Floor(v) | Smoothing::AddK(v) = config.smoothing
            && !(v.is_finite() && v >= 0.0)
        {
            return Err(Error::InvalidConfig(format!(
                "smoothing value must be finite and >= 0, got {v}"
            )));
        }
        Ok(Bleu { config })
    }

    /// The options.
    pub fn config(&self) -> &BleuConfig {
        &self.config
    }

    /// Corpus BLEU, like sacrebleu's `corpus_score(hypotheses, references)`:
    /// `references` holds reference *streams*, each with one segment per hypothesis.
    pub fn corpus_score<H: AsRef<str>, R: AsRef<str>>(
        &self,
        hypotheses: &[H],
        references: &[Vec<R>],
    ) -> Result<BleuScore> {
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
        let stats = self.segment_stats_with(hypotheses, |i| references.iter().map(move |s| s[i].as_ref()))?;
        Ok(self.score_stats(&stats.total(), RefCount::Fixed(references.len())))
    }

    /// Corpus BLEU where each segment has its own list of references (at least
    /// one); the signature says `nrefs:var` when the counts differ.
    pub fn corpus_score_by_segment<H: AsRef<str>, R: AsRef<str>>(
        &self,
        hypotheses: &[H],
        references: &[Vec<R>],
    ) -> Result<BleuScore> {
        if references.len() != hypotheses.len() {
            return Err(Error::LengthMismatch {
                what: "references (one list per hypothesis)",
                expected: hypotheses.len(),
                actual: references.len(),
            });
        }
        let first = references.first().map_or(0, Vec::len);
        if references.iter().any(Vec::is_empty) {
            return Err(Error::Empty("the references of a segment"));
        }
        let nrefs = if references.iter().all(|r| r.len() == first) {
            RefCount::Fixed(first)
        } else {
            RefCount::Variable
        };
        let stats = self.segment_stats_with(hypotheses, |i| references[i].iter().map(AsRef::as_ref))?;
        Ok(self.score_stats(&stats.total(), nrefs))
    }

    /// Sentence BLEU of one hypothesis against its references, like sacrebleu's
    /// `sentence_score` (use [`BleuConfig::sentence`] for `sentence_bleu`'s defaults).
    pub fn sentence_score<R: AsRef<str>>(&self, hypothesis: &str, references: &[R]) -> Result<BleuScore> {
        if references.is_empty() {
            return Err(Error::Empty("references"));
        }
        let stats = self.segment_stats_with(&[hypothesis], |_| references.iter().map(AsRef::as_ref))?;
        Ok(self.score_stats(&stats.total(), RefCount::Fixed(references.len())))
    }

    /// The sufficient statistics of every segment (for bootstrap resampling or
    /// per-segment scores); `references` are streams as in [`Bleu::corpus_score`].
    pub fn segment_statistics<H: AsRef<str>, R: AsRef<str>>(
        &self,
        hypotheses: &[H],
        references: &[Vec<R>],
    ) -> Result<Vec<BleuStats>> {
        for stream in references {
            if stream.len() != hypotheses.len() {
                return Err(Error::LengthMismatch {
                    what: "reference stream",
                    expected: hypotheses.len(),
                    actual: stream.len(),
                });
            }
        }
        Ok(self
            .segment_stats_with(hypotheses, |i| references.iter().map(move |s| s[i].as_ref()))?
            .segments)
    }

    /// BLEU from (summed) sufficient statistics, sacrebleu's `compute_bleu`.
    pub fn score_stats(&self, stats: &BleuStats, nrefs: RefCount) -> BleuScore {
        let order = self.config.max_ngram_order;
        let (score, precisions, bp) = compute_bleu(
            &stats.correct[..order],
            &stats.total[..order],
            stats.hyp_len,
            stats.ref_len,
            self.config.smoothing,
            self.config.effective_order,
        );
        BleuScore {
            score,
            counts: stats.correct[..order].to_vec(),
            totals: stats.total[..order].to_vec(),
            precisions,
            bp,
            sys_len: stats.hyp_len,
            ref_len: stats.ref_len,
            signature: BleuSignature {
                nrefs,
                config: self.config,
            },
        }
    }

    fn segment_stats_with<'r, H: AsRef<str>, I: Iterator<Item = &'r str>>(
        &self,
        hypotheses: &[H],
        refs_of: impl Fn(usize) -> I,
    ) -> Result<SegmentStats> {
        if hypotheses.is_empty() {
            return Err(Error::Empty("hypotheses"));
        }
        let mut engine = Engine::new(self.config);
        let mut segments = Vec::with_capacity(hypotheses.len());
        for (i, hyp) in hypotheses.iter().enumerate() {
            segments.push(engine.segment(hyp.as_ref(), refs_of(i))?);
        }
        Ok(SegmentStats { segments })
    }
}

struct SegmentStats {
    segments: Vec<BleuStats>,
}

impl SegmentStats {
    fn total(&self) -> BleuStats {
        let mut sum = BleuStats::default();
        for s in &self.segments {
            sum.add(s);
        }
        sum
    }
}

/// sacrebleu's `my_log`: log with log(0) floored to -9999999999.
fn my_log(x: f64) -> f64 {
    if x == 0.0 { -9_999_999_999.0 } else { x.ln() }
}

/// sacrebleu's `BLEU.compute_bleu`, operation for operation so that the floating
/// point results agree.
fn compute_bleu(
    correct: &[u64],
    total: &[u64],
    sys_len: u64,
    ref_len: u64,
    smoothing: Smoothing,
    effective_order: bool,
) -> (f64, Vec<f64>, f64) {
    let max_order = correct.len();
    let mut bp = 1.0;
    if sys_len < ref_len {
        bp = if sys_len > 0 {
            (1.0 - ref_len as f64 / sys_len as f64).exp()
        } else {
            0.0
        };
    }
    let mut precisions = vec![0.0; max_order];
    if correct.iter().all(|&c| c == 0) {
        return (0.0, precisions, bp);
    }
    let mut smooth_mteval = 1.0;
    let mut eff_order = max_order;
    for n in 1..=max_order {
        let mut c = correct[n - 1] as f64;
        let mut t = total[n - 1] as f64;
        if let Smoothing::AddK(k) = smoothing
            && n > 1
        {
            c += k;
            t += k;
        }
        if t == 0.0 {
            break;
        }
        if effective_order {
            eff_order = n;
        }
        if c == 0.0 {
            match smoothing {
                Smoothing::Exp => {
                    smooth_mteval *= 2.0;
                    precisions[n - 1] = 100.0 / (smooth_mteval * t);
                }
                Smoothing::Floor(v) => precisions[n - 1] = 100.0 * v / t,
                Smoothing::AddK(_) | Smoothing::None => {}
            }
        } else {
            precisions[n - 1] = 100.0 * c / t;
        }
    }
    let log_sum = precisions[..eff_order]
        .iter()
        .fold(0.0, |acc, &p| acc + my_log(p));
    (bp * (log_sum / eff_order as f64).exp(), precisions, bp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_forms() {
        let mut c = BleuConfig {
            smoothing: Smoothing::FLOOR,
            lowercase: true,
            ..BleuConfig::default()
        };
        let sig = BleuSignature {
            nrefs: RefCount::Fixed(2),
            config: c,
        };
        assert_eq!(
            sig.to_string(),
            "nrefs:2|case:lc|eff:no|tok:13a|smooth:floor[0.10]|version:2.6.0"
        );
        c.smoothing = Smoothing::ADD_K;
        c.effective_order = true;
        c.tokenizer = BleuTokenizer::Intl;
        let sig = BleuSignature {
            nrefs: RefCount::Variable,
            config: c,
        };
        assert_eq!(
            sig.to_string(),
            "nrefs:var|case:lc|eff:yes|tok:intl|smooth:add-k[1.00]|version:2.6.0"
        );
    }

    #[test]
    fn identical_sentence_is_100() {
        let bleu = Bleu::new(BleuConfig::sentence()).unwrap();
        let s = bleu.sentence_score("a b c d e", &["a b c d e"]).unwrap();
        assert!((s.score - 100.0).abs() < 1e-12);
        assert_eq!(s.counts, [5, 4, 3, 2]);
    }

    #[test]
    fn no_match_is_zero_and_short_hypothesis_is_penalised() {
        let bleu = Bleu::new(BleuConfig::default()).unwrap();
        assert_eq!(bleu.sentence_score("x y", &["a b"]).unwrap().score, 0.0);
        let s = bleu.sentence_score("a b", &["a b c d"]).unwrap();
        assert!((s.bp - (-1.0f64).exp()).abs() < 1e-15);
    }

    #[test]
    fn closest_reference_length_prefers_shorter_on_ties() {
        let bleu = Bleu::new(BleuConfig::default()).unwrap();
        let s = bleu.sentence_score("a b c", &["a b", "a b c d"]).unwrap();
        assert_eq!(s.ref_len, 2);
    }

    #[test]
    fn rejects_bad_config_and_mismatched_streams() {
        let bad = BleuConfig {
            max_ngram_order: 5,
            ..BleuConfig::default()
        };
        assert!(Bleu::new(bad).is_err());
        let bleu = Bleu::new(BleuConfig::default()).unwrap();
        assert!(bleu.corpus_score(&["a", "b"], &[vec!["a"]]).is_err());
        assert!(bleu.corpus_score::<&str, &str>(&[], &[vec![]]).is_err());
    }
}
