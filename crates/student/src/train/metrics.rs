//! `metrics.jsonl` (one record per step and per evaluation) and the loss-curve SVG.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// One optimizer step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Steps completed (1 for the first).
    pub step: u64,
    /// Epoch the step's data came from (0-based).
    pub epoch: u64,
    /// The objective.
    pub loss: f64,
    /// Mean cross-entropy on the teacher's tokens (0 when the student answered every
    /// micro-batch of the step itself, on-policy).
    pub hard_loss: f64,
    /// Mean T²·divergence on positions with soft targets (`None` for hard labels only).
    pub soft_loss: Option<f64>,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real input tokens per second over this step.
    pub tokens_per_second: f64,
    /// Real input tokens in this step.
    pub tokens: u64,
    /// Micro-batches the student answered itself (on-policy distillation).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub on_policy_batches: u32,
    /// Seconds since the run started (across resumes).
    pub elapsed_seconds: f64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// One evaluation on the validation data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalRecord {
    /// Steps completed when it ran.
    pub step: u64,
    /// Mean cross-entropy on the teacher's tokens (0 when the student answered every
    /// micro-batch of the step itself, on-policy).(the early-stopping criterion).
    pub val_loss: f64,
    /// Mean soft loss on the validation data, where it has soft targets.
    pub val_soft_loss: Option<f64>,
    /// Trained tokens evaluated.
    pub val_tokens: u64,
}

/// A line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Record {
    /// A validation result (tried first: it has `val_loss`).
    Eval(EvalRecord),
    /// A training step.
    Step(StepRecord),
}

impl Record {
    fn step(&self) -> u64 {
        match self {
            Record::Step(s) => s.step,
            Record::Eval(e) => e.step,
        }
    }
}

/// Appends records to `metrics.jsonl`.
#[derive(Debug)]
pub struct MetricsLog {
    path: PathBuf,
    file: File,
    records: Vec<Record>,
}

impl MetricsLog {
    /// Opens the log. Records after `keep_through` (the step a resume continues from) belong to
    /// work that is redone, so they are dropped; `None` starts a fresh log.
    pub fn open(path: &Path, keep_through: Option<u64>) -> Result<Self> {
        let mut records = Vec::new();
        if let Some(step) = keep_through
            && path.exists()
        {
            let file = File::open(path).map_err(Error::io(path))?;
            for line in BufReader::new(file).lines() {
                let line = line.map_err(Error::io(path))?;
                // A line torn by a kill is skipped: the step it recorded is redone.
                if let Ok(r) = serde_json::from_str::<Record>(&line)
                    && r.step() <= step
                {
                    records.push(r);
                }
            }
        }
        let mut file = File::create(path).map_err(Error::io(path))?;
        for r in &records {
            writeln!(file, "{}", serde_json::to_string(r).expect("records serialise"))
                .map_err(Error::io(path))?;
        }
        file.flush().map_err(Error::io(path))?;
        let file = OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(Error::io(path))?;
        Ok(Self {
            path: path.into(),
            file,
            records,
        })
    }

    /// Appends a record.
    pub fn push(&mut self, record: Record) -> Result<()> {
        let line = serde_json::to_string(&record).expect("records serialise");
        writeln!(self.file, "{line}").map_err(Error::io(&self.path))?;
        self.records.push(record);
        Ok(())
    }

    /// Everything logged so far.
    pub fn records(&self) -> &[Record] {
        &self.records
    }
}

/// An SVG line chart of training loss (per step) and validation loss (points), with axes.
pub fn loss_curve_svg(records: &[Record]) -> String {
    let train: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Step(s) if s.loss.is_finite() => Some((s.step as f64, s.loss)),
            _ => None,
        })
        .collect();
    let val: Vec<(f64, f64)> = records
        .iter()
        .filter_map(|r| match r {
            Record::Eval(e) if e.val_loss.is_finite() => Some((e.step as f64, e.val_loss)),
            _ => None,
        })
        .collect();
    let (w, h, left, right, top, bottom) = (720.0, 420.0, 64.0, 16.0, 28.0, 44.0);
    let all = train.iter().chain(&val);
    let x_max = all.clone().map(|p| p.0).fold(1.0, f64::max);
    let y_max = all.clone().map(|p| p.1).fold(f64::MIN, f64::max);
    let y_min = all.map(|p| p.1).fold(f64::MAX, f64::min);
    let (y_min, y_max) = if y_min <= y_max {
        let pad = ((y_max - y_min) * 0.05).max(1e-3);
        ((y_min - pad).max(0.0), y_max + pad)
    } else {
        (0.0, 1.0)
    };
    let sx = |x: f64| left + (x / x_max) * (w - left - right);
    let sy = |y: f64| top + (1.0 - (y - y_min) / (y_max - y_min)) * (h - top - bottom);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{left}" y="18">loss per step (train: line, validation: dots)</text>"#
    );
    let (x0, y0, x1, y1) = (left, h - bottom, w - right, top);
    let _ = writeln!(
        s,
        r#"<path d="M{x0} {y1} L{x0} {y0} L{x1} {y0}" stroke="black" fill="none"/>"#
    );
    for i in 0..=4 {
        let y = y_min + (y_max - y_min) * f64::from(i) / 4.0;
        let py = sy(y);
        let _ = writeln!(
            s,
            r##"<line x1="{x0}" y1="{py:.1}" x2="{x1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{y:.3}</text>"##,
            x0 - 6.0,
            py + 4.0
        );
        let xv = x_max * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{xv:.0}</text>"#,
            sx(xv),
            y0 + 18.0
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">step</text>"#,
        (x0 + x1) / 2.0,
        h - 6.0
    );
    if !train.is_empty() {
        let points: Vec<String> = train
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>"##,
            points.join(" ")
        );
    }
    for &(x, y) in &val {
        let _ = writeln!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="#d62728"/>"##,
            sx(x),
            sy(y)
        );
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(step: u64, loss: f64) -> Record {
        Record::Step(StepRecord {
            step,
            epoch: 0,
            loss,
            hard_loss: loss,
            soft_loss: None,
            lr: 1e-3,
            grad_norm: 1.0,
            tokens_per_second: 10.0,
            tokens: 5,
            on_policy_batches: 0,
            elapsed_seconds: 1.0,
        })
    }

    #[test]
    fn reopening_for_a_resume_drops_records_of_redone_steps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.jsonl");
        let mut log = MetricsLog::open(&path, None).unwrap();
        for s in 1..=5 {
            log.push(step(s, 3.0 - s as f64 * 0.1)).unwrap();
        }
        log.push(Record::Eval(EvalRecord {
            step: 4,
            val_loss: 2.5,
            val_soft_loss: None,
            val_tokens: 9,
        }))
        .unwrap();
        drop(log);
        let log = MetricsLog::open(&path, Some(4)).unwrap();
        assert_eq!(log.records().len(), 5);
        assert!(matches!(log.records()[4], Record::Eval(_)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 5);
        let svg = loss_curve_svg(log.records());
        assert!(svg.starts_with("<svg") && svg.contains("<polyline") && svg.contains("<circle"));
    }
}
