//! Builds a teacher-versus-student report from two toy "models" and writes
//! report.md, report.json and report.svg into the directory given as the first
//! argument (default `./eval-report`).
//!
//! ```text
//! cargo run -p distill-eval --example report -- /tmp/eval-report
//! ```

use std::time::Duration;

use distill_eval::BoxError;
use distill_eval::latency::{GenerationOutput, Generator, LatencyConfig, measure_latency};
use distill_eval::report::{ComparisonReport, ModelSummary};
use distill_eval::texts::{TextScoreOptions, score_texts};

/// A stand-in model: echoes a canned answer word by word, sleeping per token.
struct Toy {
    answers: Vec<&'static str>,
    per_token: Duration,
    next: usize,
}

impl Generator for Toy {
    fn generate(
        &mut self,
        _prompt: &str,
        on_token: &mut dyn FnMut(&str),
    ) -> Result<GenerationOutput, BoxError> {
        let text = self.answers[self.next % self.answers.len()];
        self.next += 1;
        let mut n = 0;
        for word in text.split_inclusive(' ') {
            std::thread::sleep(self.per_token);
            on_token(word);
            n += 1;
        }
        Ok(GenerationOutput {
            text: text.to_owned(),
            completion_tokens: n,
            prompt_tokens: None,
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "eval-report".into());
    let prompts = ["What is distillation?", "Name the capital of France."];
    let teacher_answers = vec![
        "Distillation trains a small student model to imitate a large teacher model.",
        "The capital of France is Paris.",
    ];
    let student_answers = vec![
        "Distillation trains a small model to copy a larger teacher.",
        "Paris is the capital of France.",
    ];
    let config = LatencyConfig {
        warmup_runs: 1,
        runs_per_prompt: 3,
    };
    let mut teacher = Toy {
        answers: teacher_answers.clone(),
        per_token: Duration::from_millis(6),
        next: 0,
    };
    let mut student = Toy {
        answers: student_answers.clone(),
        per_token: Duration::from_millis(2),
        next: 0,
    };
    let report = ComparisonReport {
        teacher: ModelSummary {
            name: "teacher (toy)".into(),
            parameters: Some(134_515_008),
            latency: Some(measure_latency(&mut teacher, &prompts, &config)?),
            ..ModelSummary::default()
        },
        student: ModelSummary {
            name: "student (toy)".into(),
            parameters: Some(49_500_000),
            latency: Some(measure_latency(&mut student, &prompts, &config)?),
            ..ModelSummary::default()
        },
        student_vs_teacher: Some(score_texts(
            &student_answers,
            &teacher_answers,
            &TextScoreOptions::default(),
        )?),
    };
    let files = report.write_to(std::path::Path::new(&dir))?;
    println!(
        "{}\n{}\n{}",
        files.markdown.display(),
        files.json.display(),
        files.svg.display()
    );
    Ok(())
}
