//! The lab's report: every model side by side, the ratios that matter, the manual's test
//! prompt, as `report.json`, `report.md` and `charts.svg`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use distill_data::Example;
use distill_eval::accuracy::{AccuracyReport, Choices, extract_choice, multiple_choice_accuracy};
use distill_eval::rouge::RougeType;
use serde::{Deserialize, Serialize};

use super::{LabConfig, Task};
use crate::error::Result;
use crate::evaluate::{ModelEval, Role, rouge_f1};

/// Student / teacher (and student / untrained) ratios.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Ratios {
    /// Parameters, student / teacher.
    pub parameters: Option<f64>,
    /// Bytes on disk, student / teacher.
    pub disk_bytes: Option<f64>,
    /// Resident memory, student / teacher.
    pub resident_bytes: Option<f64>,
    /// Tokens per second, student / teacher (above 1: the student is faster).
    pub tokens_per_second: Option<f64>,
    /// Median request latency, student / teacher.
    pub latency_p50: Option<f64>,
    /// ROUGE-L against the teacher, student / untrained student: what training bought.
    pub rouge_l_over_untrained: Option<f64>,
    /// Multiple-choice accuracy retained, student / teacher.
    pub accuracy_retained: Option<f64>,
}

/// Multiple-choice results: accuracy, agreement and the letters each model chose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mcqa {
    /// Accuracy against the answer key, per model name.
    pub accuracy: BTreeMap<String, AccuracyReport>,
    /// Share of test questions on which the student's letter equals the teacher's.
    pub student_teacher_agreement: Option<f64>,
    /// How often each model chose each letter (`-` where it chose none).
    pub letters: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Mcqa {
    /// Scores the models' answers to the test examples.
    pub fn score(test: &[Example], models: &[ModelEval]) -> Result<Self> {
        let choices = Choices::new("ABCDE")?;
        let mut accuracy = BTreeMap::new();
        let mut letters = BTreeMap::new();
        let mut picked: BTreeMap<Role, Vec<Option<char>>> = BTreeMap::new();
        for m in models {
            accuracy.insert(
                m.name.clone(),
                multiple_choice_accuracy(test, &m.answers, &choices)?,
            );
            let chosen: Vec<Option<char>> = m.answers.iter().map(|a| extract_choice(a, &choices)).collect();
            let mut counts = BTreeMap::new();
            for c in &chosen {
                *counts.entry(c.map_or("-".to_owned(), String::from)).or_default() += 1;
            }
            letters.insert(m.name.clone(), counts);
            picked.insert(m.role, chosen);
        }
        let agreement = match (picked.get(&Role::Student), picked.get(&Role::Teacher)) {
            (Some(s), Some(t)) if !s.is_empty() => {
                let same = s.iter().zip(t).filter(|(a, b)| a.is_some() && a == b).count();
                Some(same as f64 / s.len() as f64)
            }
            _ => None,
        };
        Ok(Mcqa {
            accuracy,
            student_teacher_agreement: agreement,
            letters,
        })
    }
}

/// What the lab measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabReport {
    /// What was distilled.
    pub task: Task,
    /// The teacher's name.
    pub teacher: String,
    /// Held-out examples every model answered.
    pub test_examples: usize,
    /// Teacher, student and untrained student, in that order (the teacher only when local).
    pub models: Vec<ModelEval>,
    /// The ratios.
    pub ratios: Ratios,
    /// The prompts every model answered for the report (the manual's test prompt).
    pub showcase_prompts: Vec<String>,
    /// Multiple-choice results, for [`Task::Mcqa`].
    pub mcqa: Option<Mcqa>,
    /// Seconds per stage, over every session of the run.
    pub stage_seconds: BTreeMap<String, f64>,
    /// How much of the training data carried the teacher's probabilities (a lab run's
    /// training stage; `None` for `distill eval`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soft_labels: Option<SoftLabels>,
}

/// The share of trained tokens with soft labels, from the run's `training_args.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftLabels {
    /// Trained target tokens.
    pub target_tokens: usize,
    /// Of those, tokens with the teacher's top-k probabilities.
    pub soft_targets: usize,
    /// Examples whose teacher tokenized differently, aligned on bytes.
    pub cross_tokenizer_examples: usize,
}

impl SoftLabels {
    /// Reads `train_data` from a training run's `training_args.json`.
    pub fn read(training_args: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(training_args).ok()?;
        let args: serde_json::Value = serde_json::from_str(&text).ok()?;
        serde_json::from_value(args.get("train_data")?.clone()).ok()
    }

    /// One line for the report.
    pub fn describe(&self) -> String {
        let share = 100.0 * self.soft_targets as f64 / self.target_tokens.max(1) as f64;
        let aligned = match self.cross_tokenizer_examples {
            0 => String::new(),
            n => {
                format!("; {n} examples came from a teacher with another tokenizer and were aligned on bytes")
            }
        };
        format!(
            "Soft labels (the teacher's top-k probabilities) on {} of {} trained tokens ({share:.1} %){aligned}.",
            self.soft_targets, self.target_tokens
        )
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b != 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

impl LabReport {
    /// A report of `models` (stage times are filled in at the end of the run).
    pub fn new(config: &LabConfig, test_examples: usize, models: Vec<ModelEval>, mcqa: Option<Mcqa>) -> Self {
        Self::of_models(
            config.task,
            config.teacher_name(),
            config.eval.showcase_prompts.clone(),
            test_examples,
            models,
            mcqa,
        )
    }

    /// A report of evaluated models outside a lab run (`distill eval`).
    pub fn of_models(
        task: Task,
        teacher: String,
        showcase_prompts: Vec<String>,
        test_examples: usize,
        models: Vec<ModelEval>,
        mcqa: Option<Mcqa>,
    ) -> Self {
        let mut report = LabReport {
            task,
            teacher,
            test_examples,
            models,
            ratios: Ratios::default(),
            showcase_prompts,
            mcqa,
            stage_seconds: BTreeMap::new(),
            soft_labels: None,
        };
        report.ratios = report.compute_ratios();
        report
    }

    /// The model that plays `role`.
    pub fn model(&self, role: Role) -> Option<&ModelEval> {
        self.models.iter().find(|m| m.role == role)
    }

    fn compute_ratios(&self) -> Ratios {
        let (s, t, u) = (
            self.model(Role::Student),
            self.model(Role::Teacher),
            self.model(Role::Untrained),
        );
        let of = |m: Option<&ModelEval>, f: fn(&ModelEval) -> Option<f64>| m.and_then(f);
        let accuracy = |m: Option<&ModelEval>| {
            let mcqa = self.mcqa.as_ref()?;
            mcqa.accuracy.get(&m?.name).map(|a| a.accuracy)
        };
        Ratios {
            parameters: ratio(
                of(s, |m| Some(m.parameters as f64)),
                of(t, |m| Some(m.parameters as f64)),
            ),
            disk_bytes: ratio(
                of(s, |m| m.disk_bytes.map(|b| b as f64)),
                of(t, |m| m.disk_bytes.map(|b| b as f64)),
            ),
            resident_bytes: ratio(
                of(s, |m| m.resident_bytes.map(|b| b as f64)),
                of(t, |m| m.resident_bytes.map(|b| b as f64)),
            ),
            tokens_per_second: ratio(
                of(s, |m| Some(m.latency.tokens_per_second)),
                of(t, |m| Some(m.latency.tokens_per_second)),
            ),
            latency_p50: ratio(
                of(s, |m| Some(m.latency.request_latency.p50)),
                of(t, |m| Some(m.latency.request_latency.p50)),
            ),
            rouge_l_over_untrained: ratio(of(s, |m| Some(m.rouge_l())), of(u, |m| Some(m.rouge_l()))),
            accuracy_retained: ratio(accuracy(s), accuracy(t)),
        }
    }

    /// The summary table and the ratios, as printed at the end of a run.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "| model | parameters | disk | peak memory | TTFT p50 | latency p50 / p95 / p99 | tokens/s | ROUGE-1 | ROUGE-2 | ROUGE-L | BLEU | teacher-token CE |"
        );
        let _ = writeln!(
            out,
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        );
        for m in &self.models {
            let l = &m.latency;
            let r = |k| rouge_f1(&m.vs_teacher, k);
            let _ = writeln!(
                out,
                "| {} | {:.1}M | {} | {} | {} | {:.2} / {:.2} / {:.2} s | {:.1} | {:.4} | {:.4} | {:.4} | {:.2} | {:.3} |",
                m.name,
                m.parameters as f64 / 1e6,
                m.disk_bytes.map_or("—".into(), megabytes),
                m.resident_bytes.map_or("—".into(), megabytes),
                l.ttft.map_or("—".into(), |t| format!("{:.3} s", t.p50)),
                l.request_latency.p50,
                l.request_latency.p95,
                l.request_latency.p99,
                l.tokens_per_second,
                r(RougeType::N(1)),
                r(RougeType::N(2)),
                r(RougeType::L),
                m.vs_teacher.bleu.score,
                m.teacher_token_cross_entropy,
            );
        }
        let x = |v: Option<f64>| v.map_or("—".into(), |v| format!("{v:.3}×"));
        let r = &self.ratios;
        let _ = writeln!(
            out,
            "\nstudent / teacher: parameters {}, disk {}, memory {}, tokens/s {}, p50 latency {}",
            x(r.parameters),
            x(r.disk_bytes),
            x(r.resident_bytes),
            x(r.tokens_per_second),
            x(r.latency_p50)
        );
        let _ = writeln!(
            out,
            "student / untrained student, ROUGE-L vs the teacher: {}",
            x(r.rouge_l_over_untrained)
        );
        if let Some(a) = r.accuracy_retained {
            let _ = writeln!(out, "accuracy retained (student / teacher): {a:.3}×");
        }
        if let Some(soft) = &self.soft_labels {
            let _ = writeln!(out, "{}", soft.describe());
        }
        out
    }

    /// The whole report as Markdown.
    pub fn to_markdown(&self) -> String {
        let mut out = format!(
            "# Distillation lab report\n\nTeacher `{}`, task `{:?}`, {} held-out test prompts never trained on. \
             Quality is each model's greedy answers scored against the teacher's stored answers \
             (ROUGE F1 with the Porter stemmer, corpus BLEU); the teacher's own row checks that it \
             reproduces them. Speed is one request at a time, greedy, f32 on the CPU.\n\n",
            self.teacher, self.task, self.test_examples
        );
        out.push_str(&self.summary());
        if let Some(mcqa) = &self.mcqa {
            out.push_str("\n## Multiple choice\n\n| model | accuracy | correct / total | unanswered | letters |\n|---|---:|---:|---:|---|\n");
            for (name, a) in &mcqa.accuracy {
                let letters = mcqa.letters.get(name).map_or(String::new(), |l| {
                    l.iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                });
                let _ = writeln!(
                    out,
                    "| {name} | {:.3} | {} / {} | {} | {letters} |",
                    a.accuracy, a.correct, a.total, a.unanswered
                );
            }
            if let Some(agree) = mcqa.student_teacher_agreement {
                let _ = writeln!(
                    out,
                    "\nStudent and teacher chose the same letter on {:.1}% of the questions.",
                    agree * 100.0
                );
            }
        }
        for (i, prompt) in self.showcase_prompts.iter().enumerate() {
            let _ = writeln!(out, "\n## \"{prompt}\"\n");
            for m in &self.models {
                let answer = m.showcase.get(i).map_or("", String::as_str);
                let _ = writeln!(
                    out,
                    "**{}:**\n\n> {}\n",
                    m.name,
                    answer.trim().replace('\n', "\n> ")
                );
            }
        }
        if !self.stage_seconds.is_empty() {
            out.push_str("\n## Time per stage\n\n| stage | seconds |\n|---|---:|\n");
            for (stage, secs) in &self.stage_seconds {
                let _ = writeln!(out, "| {stage} | {secs:.1} |");
            }
        }
        out.push_str("\nCharts: `charts.svg` (quality, speed, size); training loss: `loss_curve.svg`.\n");
        out
    }

    /// Three bar charts side by side: ROUGE-L against the teacher, tokens per second, parameters.
    pub fn to_svg(&self) -> String {
        let panels: [Panel; 3] = [
            ("ROUGE-L F1 vs teacher", |m| m.rouge_l()),
            ("tokens / s", |m| m.latency.tokens_per_second),
            ("parameters (M)", |m| m.parameters as f64 / 1e6),
        ];
        let (panel_w, bar_h, gap) = (300.0, 22.0, 8.0);
        let height = 50.0 + self.models.len() as f64 * (bar_h + gap);
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n",
            panel_w * 3.0 + 140.0
        );
        let colors = ["#4c72b0", "#dd8452", "#8c8c8c"];
        for (i, m) in self.models.iter().enumerate() {
            let y = 40.0 + i as f64 * (bar_h + gap) + bar_h * 0.7;
            let _ = writeln!(svg, "<text x=\"4\" y=\"{y}\">{}</text>", xml_escape(&m.name));
        }
        for (p, (title, value)) in panels.iter().enumerate() {
            let x0 = 140.0 + p as f64 * panel_w;
            let _ = writeln!(
                svg,
                "<text x=\"{x0}\" y=\"20\" font-weight=\"bold\">{title}</text>"
            );
            let max = self.models.iter().map(value).fold(0.0f64, f64::max).max(1e-9);
            for (i, m) in self.models.iter().enumerate() {
                let v = value(m);
                let w = (panel_w - 70.0) * v / max;
                let y = 40.0 + i as f64 * (bar_h + gap);
                let _ = writeln!(
                    svg,
                    "<rect x=\"{x0}\" y=\"{y}\" width=\"{w:.1}\" height=\"{bar_h}\" fill=\"{}\"/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
                    colors[i % colors.len()],
                    x0 + w + 4.0,
                    y + bar_h * 0.7,
                    if v >= 10.0 {
                        format!("{v:.1}")
                    } else {
                        format!("{v:.3}")
                    }
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }
}

/// A chart panel: its title and the value it plots per model.
type Panel = (&'static str, fn(&ModelEval) -> f64);

fn megabytes(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Writes `report.json`, `report.md` and `charts.svg` into `dir`.
pub fn write(dir: &Path, report: &LabReport) -> Result<()> {
    super::stages::write_json(&dir.join("report.json"), report)?;
    super::stages::write_atomic(&dir.join("report.md"), report.to_markdown().as_bytes())?;
    super::stages::write_atomic(&dir.join("charts.svg"), report.to_svg().as_bytes())
}
