//! Scoring hypothesis texts against reference texts with BLEU and ROUGE at once,
//! from memory or from files with one segment per line.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::bleu::{Bleu, BleuConfig, BleuScore};
use crate::error::{Error, Result};
use crate::rouge::{RougeScorer, RougeScores, RougeType, mean_scores};

/// How texts are scored.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TextScoreOptions {
    /// BLEU options (sacrebleu's `corpus_bleu` defaults by default).
    pub bleu: BleuConfig,
    /// Whether ROUGE stems tokens (rouge-score's `use_stemmer`).
    pub rouge_stemmer: bool,
}

impl Default for TextScoreOptions {
    /// Corpus BLEU with sacrebleu's defaults; ROUGE with the stemmer, as usual for
    /// summarisation and generation results.
    fn default() -> Self {
        TextScoreOptions {
            bleu: BleuConfig::default(),
            rouge_stemmer: true,
        }
    }
}

/// Corpus BLEU and mean ROUGE of a set of hypotheses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextScores {
    /// Number of segment pairs.
    pub segments: usize,
    /// Corpus BLEU (sacrebleu).
    pub bleu: BleuScore,
    /// ROUGE-1, -2, -L and -Lsum, each the mean over pairs of rouge-score's
    /// precision, recall and F1.
    pub rouge: RougeScores,
    /// Whether ROUGE used the stemmer.
    pub rouge_stemmer: bool,
}

impl TextScores {
    /// Human-readable lines: sacrebleu's BLEU line (with signature), then the
    /// mean F1 of each ROUGE type.
    pub fn to_text(&self) -> String {
        let stemmer = if self.rouge_stemmer { "True" } else { "False" };
        let mut out = format!(
            "{}\nROUGE (rouge-score, use_stemmer={stemmer}; F1, mean over {} segments):\n",
            self.bleu.format(),
            self.segments
        );
        for (t, s) in &self.rouge.scores {
            out.push_str(&format!("  {:<9} = {:.4}\n", t.to_string(), s.fmeasure));
        }
        out
    }

    /// JSON with full-precision numbers: BLEU's score, signature string and
    /// statistics, and each ROUGE type's mean precision, recall and F1.
    pub fn to_json(&self) -> Result<String> {
        let b = &self.bleu;
        let value = serde_json::json!({
            "segments": self.segments,
            "bleu": {
                "score": b.score,
                "signature": b.signature.to_string(),
                "precisions": b.precisions,
                "counts": b.counts,
                "totals": b.totals,
                "bp": b.bp,
                "sys_len": b.sys_len,
                "ref_len": b.ref_len,
            },
            "rouge": self.rouge,
            "rouge_use_stemmer": self.rouge_stemmer,
        });
        Ok(serde_json::to_string_pretty(&value)?)
    }
}

/// Scores `hypotheses[i]` against `references[i]`.
pub fn score_texts<H: AsRef<str>, R: AsRef<str>>(
    hypotheses: &[H],
    references: &[R],
    options: &TextScoreOptions,
) -> Result<TextScores> {
    if hypotheses.len() != references.len() {
        return Err(Error::LengthMismatch {
            what: "references (one per hypothesis)",
            expected: hypotheses.len(),
            actual: references.len(),
        });
    }
    if hypotheses.is_empty() {
        return Err(Error::Empty("hypotheses"));
    }
    let refs: Vec<&str> = references.iter().map(AsRef::as_ref).collect();
    let bleu = Bleu::new(options.bleu)?.corpus_score(hypotheses, &[refs])?;
    let scorer = RougeScorer::new(&RougeType::ALL_COMMON, options.rouge_stemmer)?;
    let rouge = mean_scores(&scorer.score_batch(references, hypotheses)?)?;
    Ok(TextScores {
        segments: hypotheses.len(),
        bleu,
        rouge,
        rouge_stemmer: options.rouge_stemmer,
    })
}

/// The lines of a UTF-8 text file: split on `\n`, a trailing `\r` removed, no
/// final empty line for a file that ends with a newline.
pub fn read_segments(path: &Path) -> Result<Vec<String>> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let body = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    body.split(|&b| b == b'\n')
        .enumerate()
        .map(|(i, line)| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            std::str::from_utf8(line)
                .map(str::to_owned)
                .map_err(|source| Error::InvalidUtf8 {
                    path: path.to_path_buf(),
                    line: i + 1,
                    source,
                })
        })
        .collect()
}

/// Scores `hypotheses[i]` against segment `i` of every reference stream: BLEU with all the
/// streams (sacrebleu's multi-reference corpus BLEU), and ROUGE of each segment against its
/// best-matching reference (rouge-score's `score_multi`), averaged. One stream is
/// [`score_texts`].
pub fn score_texts_multi<H: AsRef<str>, R: AsRef<str>>(
    hypotheses: &[H],
    streams: &[Vec<R>],
    options: &TextScoreOptions,
) -> Result<TextScores> {
    match streams {
        [] => Err(Error::Empty("reference streams")),
        [only] => score_texts(hypotheses, only, options),
        _ => {
            if hypotheses.is_empty() {
                return Err(Error::Empty("hypotheses"));
            }
            let refs: Vec<Vec<&str>> = streams
                .iter()
                .map(|s| s.iter().map(AsRef::as_ref).collect())
                .collect();
            // BLEU first: it checks that every stream has one segment per hypothesis.
            let bleu = Bleu::new(options.bleu)?.corpus_score(hypotheses, &refs)?;
            let scorer = RougeScorer::new(&RougeType::ALL_COMMON, options.rouge_stemmer)?;
            let per_segment = hypotheses
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let targets: Vec<&str> = refs.iter().map(|s| s[i]).collect();
                    scorer.score_multi(&targets, h.as_ref())
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(TextScores {
                segments: hypotheses.len(),
                bleu,
                rouge: mean_scores(&per_segment)?,
                rouge_stemmer: options.rouge_stemmer,
            })
        }
    }
}

/// Scores a hypothesis file against reference files (one reference stream each), one
/// segment per line; every file must have as many lines as the hypotheses.
pub fn score_text_files(
    hypotheses: &Path,
    references: &[impl AsRef<Path>],
    options: &TextScoreOptions,
) -> Result<TextScores> {
    let hyps = read_segments(hypotheses)?;
    let mut streams = Vec::with_capacity(references.len());
    for path in references {
        let path = path.as_ref();
        let refs = read_segments(path)?;
        if hyps.len() != refs.len() {
            return Err(Error::LineCountMismatch {
                hypotheses: hypotheses.to_path_buf(),
                hypothesis_lines: hyps.len(),
                references: path.to_path_buf(),
                reference_lines: refs.len(),
            });
        }
        streams.push(refs);
    }
    score_texts_multi(&hyps, &streams, options)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_lines_and_reports_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("h.txt");
        std::fs::write(&p, "a b\r\n\nc\n").unwrap();
        assert_eq!(read_segments(&p).unwrap(), ["a b", "", "c"]);
        std::fs::write(&p, "x").unwrap();
        assert_eq!(read_segments(&p).unwrap(), ["x"]);
        std::fs::write(&p, "").unwrap();
        assert!(read_segments(&p).unwrap().is_empty());
        std::fs::write(&p, b"ok\n\xff\n").unwrap();
        let err = read_segments(&p).unwrap_err();
        assert!(matches!(err, Error::InvalidUtf8 { line: 2, .. }), "{err:?}");
        assert!(err.to_string().contains("h.txt:2"));
    }

    #[test]
    fn mismatched_files_name_both() {
        let dir = tempfile::tempdir().unwrap();
        let (h, r) = (dir.path().join("hyp.txt"), dir.path().join("ref.txt"));
        std::fs::write(&h, "a\nb\n").unwrap();
        std::fs::write(&r, "a\n").unwrap();
        let err = score_text_files(&h, &[&r], &TextScoreOptions::default()).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("hyp.txt has 2 lines") && msg.contains("ref.txt has 1"),
            "{msg}"
        );
        std::fs::write(&r, "a\nb c\n").unwrap();
        let s = score_text_files(&h, &[&r], &TextScoreOptions::default()).unwrap();
        assert_eq!(s.segments, 2);
        assert_eq!(s.rouge.scores.len(), 4);
        assert!(
            s.to_text()
                .starts_with("BLEU|nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:2.6.0 = ")
        );
        assert!(s.to_text().contains("rougeLsum = "));
        let json: serde_json::Value = serde_json::from_str(&s.to_json().unwrap()).unwrap();
        assert_eq!(json["segments"], 2);
        assert!(json["rouge"]["rouge2"]["recall"].is_number());
    }
}
