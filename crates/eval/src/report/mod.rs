//! Teacher-versus-student reports: Markdown, JSON and an SVG chart.
//!
//! A [`ComparisonReport`] holds what was measured for each model (every field is
//! optional, so a report can be made from whatever was measured) and the
//! student's outputs scored against the teacher's. Ratios are student / teacher.

mod markdown;
mod svg;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::accuracy::AccuracyReport;
use crate::error::{Error, Result};
use crate::latency::LatencyReport;
use crate::perplexity::Perplexity;
use crate::texts::TextScores;

/// What was measured for one model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    /// A display name (`teacher: gpt-4o`, `student: ./outputs/final_model`).
    pub name: String,
    /// Parameter count.
    pub parameters: Option<u64>,
    /// Size on disk in bytes.
    pub disk_bytes: Option<u64>,
    /// Peak resident memory in bytes while generating.
    pub peak_rss_bytes: Option<u64>,
    /// Generation latency and throughput.
    pub latency: Option<LatencyReport>,
    /// Multiple-choice accuracy.
    pub accuracy: Option<AccuracyReport>,
    /// Perplexity on held-out text.
    pub perplexity: Option<Perplexity>,
    /// Outputs scored against the dataset's references, where it has them.
    pub vs_references: Option<TextScores>,
}

/// Student / teacher ratios of what both have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    /// Parameters.
    pub parameters: Option<f64>,
    /// Disk size.
    pub disk_bytes: Option<f64>,
    /// Peak memory.
    pub peak_rss_bytes: Option<f64>,
    /// Tokens per second (above 1: the student is faster).
    pub tokens_per_second: Option<f64>,
    /// Median request latency (below 1: the student is faster).
    pub latency_p50: Option<f64>,
    /// 95th-percentile request latency.
    pub latency_p95: Option<f64>,
    /// Accuracy retained.
    pub accuracy: Option<f64>,
}

/// A teacher-versus-student comparison.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ComparisonReport {
    /// The teacher.
    pub teacher: ModelSummary,
    /// The student.
    pub student: ModelSummary,
    /// The student's outputs scored with the teacher's outputs as references.
    pub student_vs_teacher: Option<TextScores>,
}

/// Where [`ComparisonReport::write_to`] put the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportFiles {
    /// `report.md`.
    pub markdown: PathBuf,
    /// `report.json`.
    pub json: PathBuf,
    /// `report.svg`.
    pub svg: PathBuf,
}

fn ratio(student: Option<f64>, teacher: Option<f64>) -> Option<f64> {
    match (student, teacher) {
        (Some(s), Some(t)) if t != 0.0 && s.is_finite() && t.is_finite() => Some(s / t),
        _ => None,
    }
}

impl ComparisonReport {
    /// Student / teacher ratios of the measures both models have.
    pub fn ratios(&self) -> Ratios {
        let (s, t) = (&self.student, &self.teacher);
        let f = |v: Option<u64>| v.map(|x| x as f64);
        let lat = |m: &ModelSummary, p: fn(&LatencyReport) -> f64| m.latency.as_ref().map(p);
        Ratios {
            parameters: ratio(f(s.parameters), f(t.parameters)),
            disk_bytes: ratio(f(s.disk_bytes), f(t.disk_bytes)),
            peak_rss_bytes: ratio(f(s.peak_rss_bytes), f(t.peak_rss_bytes)),
            tokens_per_second: ratio(lat(s, |l| l.tokens_per_second), lat(t, |l| l.tokens_per_second)),
            latency_p50: ratio(
                lat(s, |l| l.request_latency.p50),
                lat(t, |l| l.request_latency.p50),
            ),
            latency_p95: ratio(
                lat(s, |l| l.request_latency.p95),
                lat(t, |l| l.request_latency.p95),
            ),
            accuracy: ratio(s.accuracy.map(|a| a.accuracy), t.accuracy.map(|a| a.accuracy)),
        }
    }

    /// The report as Markdown tables.
    pub fn to_markdown(&self) -> String {
        markdown::render(self)
    }

    /// The report, with its ratios, as pretty-printed JSON.
    pub fn to_json(&self) -> Result<String> {
        #[derive(Serialize)]
        struct Json<'a> {
            #[serde(flatten)]
            report: &'a ComparisonReport,
            ratios: Ratios,
        }
        Ok(serde_json::to_string_pretty(&Json {
            report: self,
            ratios: self.ratios(),
        })?)
    }

    /// A self-contained SVG chart: request latency percentiles and quality scores
    /// of both models, side by side.
    pub fn to_svg(&self) -> String {
        svg::render(self)
    }

    /// Writes `report.md`, `report.json` and `report.svg` into `dir` (created if
    /// missing).
    pub fn write_to(&self, dir: &Path) -> Result<ReportFiles> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let files = ReportFiles {
            markdown: dir.join("report.md"),
            json: dir.join("report.json"),
            svg: dir.join("report.svg"),
        };
        for (path, content) in [
            (&files.markdown, self.to_markdown()),
            (&files.json, self.to_json()?),
            (&files.svg, self.to_svg()),
        ] {
            std::fs::write(path, content).map_err(|source| Error::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(files)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::latency::{RequestTiming, Summary};
    use crate::texts::{TextScoreOptions, score_texts};

    fn latency(p50: f64, tps: f64) -> LatencyReport {
        let s = Summary {
            count: 1,
            mean: p50,
            min: p50,
            p50,
            p95: p50 * 2.0,
            p99: p50 * 3.0,
            max: p50 * 3.0,
        };
        LatencyReport {
            requests: vec![RequestTiming {
                prompt: 0,
                latency: Duration::from_secs_f64(p50),
                ttft: Some(Duration::from_millis(50)),
                completion_tokens: 10,
                streamed_pieces: 10,
            }],
            request_latency: s,
            ttft: Some(s),
            inter_token: None,
            tpot: None,
            tokens_per_second: tps,
            completion_tokens: 10,
        }
    }

    pub(crate) fn sample() -> ComparisonReport {
        let teacher_out = ["The cat sat on the mat.", "Paris is the capital of France."];
        let student_out = ["The cat sat on a mat.", "The capital of France is Paris."];
        ComparisonReport {
            teacher: ModelSummary {
                name: "teacher <SmolLM2-135M>".into(),
                parameters: Some(134_515_008),
                disk_bytes: Some(90_000_000),
                peak_rss_bytes: Some(600 << 20),
                latency: Some(latency(2.0, 16.8)),
                accuracy: Some(AccuracyReport {
                    correct: 8,
                    total: 10,
                    unanswered: 0,
                    skipped: 0,
                    accuracy: 0.8,
                }),
                ..ModelSummary::default()
            },
            student: ModelSummary {
                name: "student & friends".into(),
                parameters: Some(49_500_000),
                disk_bytes: Some(30_000_000),
                peak_rss_bytes: Some(300 << 20),
                latency: Some(latency(0.5, 50.0)),
                accuracy: Some(AccuracyReport {
                    correct: 6,
                    total: 10,
                    unanswered: 1,
                    skipped: 0,
                    accuracy: 0.6,
                }),
                ..ModelSummary::default()
            },
            student_vs_teacher: Some(
                score_texts(&student_out, &teacher_out, &TextScoreOptions::default()).unwrap(),
            ),
        }
    }

    #[test]
    fn ratios_and_json() {
        let r = sample();
        let ratios = r.ratios();
        assert!((ratios.tokens_per_second.unwrap() - 50.0 / 16.8).abs() < 1e-12);
        assert!((ratios.latency_p50.unwrap() - 0.25).abs() < 1e-12);
        assert!((ratios.accuracy.unwrap() - 0.75).abs() < 1e-12);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        let json: serde_json::Value = serde_json::from_str(&r.to_json().unwrap()).unwrap();
        assert_eq!(json["student"]["parameters"], 49_500_000);
        assert!(
            json["student_vs_teacher"]["rouge"]["rougeL"]["fmeasure"]
                .as_f64()
                .unwrap()
                > 0.0
        );
        assert!(json["ratios"]["parameters"].as_f64().unwrap() < 1.0);
        let back: ComparisonReport = serde_json::from_value(json).unwrap();
        assert_eq!(back.student.parameters, r.student.parameters);
    }

    #[test]
    fn writes_three_files() {
        let dir = tempfile::tempdir().unwrap();
        let files = sample().write_to(&dir.path().join("out")).unwrap();
        for p in [&files.markdown, &files.json, &files.svg] {
            assert!(std::fs::metadata(p).unwrap().len() > 100, "{}", p.display());
        }
    }
}
