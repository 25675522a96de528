//! The lab, end to end: prompts → teacher answers → a trained student → the student beside the
//! teacher → a model others can load.
//!
//! Everything a run makes lives in one run directory:
//!
//! | path | what |
//! |---|---|
//! | `lab.json` | the configuration; a second run in the directory must match it |
//! | `generation/teacher.jsonl` | the teacher's answers as they arrive (resumable) |
//! | `data.jsonl` | the same answers in prompt order, with their split: the dataset |
//! | `checkpoints/`, `metrics.jsonl`, `loss_curve.svg`, `training_args.json` | training |
//! | `final_model/` | the student in Hugging Face format, with a model card |
//! | `final_model.gguf` | the student for llama.cpp |
//! | `evaluation.json` | the evaluation as measured (a resumed run does not measure again) |
//! | `report.md`, `report.json`, `charts.svg` | the evaluation with every stage's time |
//! | `manifest.json` | versions, seeds, dataset hash and stage times, to reproduce the run |
//!
//! Invariants:
//! - The run is resumable at every stage: a stage whose output is complete is not redone, the
//!   teacher never answers a prompt twice, and training continues from its last checkpoint.
//! - Test prompts are never trained on: the split is decided from the seed before any teacher
//!   call, and the trainer leaves `test` examples out.
//! - With the same configuration, the trained weights do not depend on interruptions: the
//!   dataset the trainer reads is written in prompt order, each example's soft labels come
//!   from that example alone, and the local teacher's answer to a prompt does not depend on
//!   which prompts shared its batch (prefill alone, batch-invariant decoding).

mod outputs;
pub mod report;
mod stages;

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use distill_student::train::LossKind;
use distill_teacher::TeacherConfig;
use serde::{Deserialize, Serialize};

pub use report::LabReport;

use crate::error::{Error, Result};
use crate::evaluate::EvalSettings;

/// What the lab distills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Task {
    /// Open-ended chat answers (the lab manual).
    #[default]
    Chat,
    /// Multiple-choice questions in CommonsenseQA's shape, answered with one letter (the
    /// companion repository).
    Mcqa,
}

/// Who answers the prompts.
#[derive(Debug, Clone)]
pub enum TeacherChoice {
    /// A model on this machine, run in-process (a `.gguf` file or an HF directory).
    Local {
        /// Its files.
        model: PathBuf,
    },
    /// A remote teacher: OpenAI, Azure OpenAI or an OpenAI-compatible server.
    Remote {
        /// Its settings (secrets stay inside and are never written to the run directory).
        config: Box<TeacherConfig>,
        /// The model (for Azure, the deployment answers and this is recorded).
        model: String,
    },
}

/// The student: layers of the local teacher, or a model of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StudentChoice {
    /// This many evenly spaced layers of the local teacher (DistilBERT-style initialisation).
    TeacherLayers(usize),
    /// A model of its own (a `.gguf` file or an HF directory).
    Model(PathBuf),
}

/// How the student is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingSettings {
    /// The objective (soft labels need a teacher with the student's tokenizer).
    pub loss: LossKind,
    /// Weight of the soft term.
    pub alpha: f64,
    /// Softmax temperature of the soft term.
    pub temperature: f64,
    /// Passes over the training split.
    pub epochs: u32,
    /// Examples per step.
    pub batch_size: usize,
    /// Longest training sequence in tokens.
    pub max_seq_len: usize,
    /// Peak learning rate (cosine decay after warm-up).
    pub learning_rate: f64,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// Steps between checkpoints.
    pub save_every: u64,
}

/// Everything a lab run needs.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// What is distilled.
    pub task: Task,
    /// Where the run lives.
    pub run_dir: PathBuf,
    /// The prompt file: the lab format (`{"prompt": …}` per line) or, for [`Task::Mcqa`],
    /// CommonsenseQA rows.
    pub prompts: PathBuf,
    /// Prompts drawn from the file (all of them if it has fewer).
    pub num_prompts: usize,
    /// Of those, held out for the evaluation.
    pub test_prompts: usize,
    /// Of those, used to validate during training.
    pub val_prompts: usize,
    /// Seed of the draw, the split, the data order and the student's initialisation.
    pub seed: u64,
    /// Who answers.
    pub teacher: TeacherChoice,
    /// The most tokens per teacher answer.
    pub max_tokens: u32,
    /// Alternatives stored per answer token (soft labels).
    pub top_logprobs: u8,
    /// Requests in flight (the local teacher decodes this many together).
    pub concurrency: usize,
    /// The student.
    pub student: StudentChoice,
    /// Its training.
    pub training: TrainingSettings,
    /// The evaluation.
    pub eval: EvalSettings,
    /// Also write `final_model.gguf`.
    pub export_gguf: bool,
    /// Stop asking a priced remote teacher once this session's spend reaches this many US
    /// dollars (requests in flight finish; a resumed run counts from zero again). Not part of
    /// the configuration a run directory must match.
    pub max_cost_usd: Option<f64>,
}

impl LabConfig {
    /// The lab's defaults with a local teacher: 240 prompts (200 train, 10 val, 30 test), answers
    /// of up to 128 tokens with their top 20 log-probabilities, a 6-layer student trained on
    /// soft and hard labels.
    pub fn new(run_dir: impl Into<PathBuf>, teacher: TeacherChoice) -> Self {
        LabConfig {
            task: Task::Chat,
            run_dir: run_dir.into(),
            prompts: PathBuf::from("datasets/prompts/lab.jsonl"),
            num_prompts: 240,
            test_prompts: 30,
            val_prompts: 10,
            seed: 7,
            teacher,
            max_tokens: 128,
            top_logprobs: 20,
            concurrency: 8,
            student: StudentChoice::TeacherLayers(6),
            training: TrainingSettings {
                // Soft and hard labels whatever the teacher: a remote teacher's top-k are
                // aligned with the student's tokens on bytes.
                loss: LossKind::Kl,
                alpha: 0.5,
                temperature: 1.0,
                epochs: 6,
                batch_size: 8,
                max_seq_len: 256,
                learning_rate: 6e-4,
                warmup_steps: 10,
                save_every: 25,
            },
            eval: EvalSettings::default(),
            export_gguf: true,
            max_cost_usd: None,
        }
    }

    /// A small run for tests and a first look: 24 prompts, short answers, a 2-layer student and
    /// a few steps.
    pub fn quick(mut self) -> Self {
        self.num_prompts = 24;
        self.test_prompts = 4;
        self.val_prompts = 2;
        self.max_tokens = 24;
        self.top_logprobs = 5;
        if let StudentChoice::TeacherLayers(_) = self.student {
            self.student = StudentChoice::TeacherLayers(2);
        }
        self.training.epochs = 2;
        self.training.batch_size = 4;
        self.training.max_seq_len = 96;
        self.training.warmup_steps = 2;
        self.training.save_every = 3;
        self.eval.max_new_tokens = 24;
        self
    }

    /// Checks combinations that cannot work, before anything runs.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Input(m));
        if self.test_prompts == 0 {
            return bad("the lab needs at least one test prompt".into());
        }
        if self.num_prompts <= self.test_prompts + self.val_prompts {
            return bad(format!(
                "{} prompts leave none to train on after {} test and {} validation prompts",
                self.num_prompts, self.test_prompts, self.val_prompts
            ));
        }
        if matches!(self.student, StudentChoice::TeacherLayers(_))
            && !matches!(self.teacher, TeacherChoice::Local { .. })
        {
            return bad(
                "a student cut from the teacher's layers needs a local teacher; name a student model".into(),
            );
        }
        if self.training.loss.needs_soft_labels() && self.top_logprobs == 0 {
            return bad(format!(
                "the {:?} loss needs the teacher's log-probabilities; store some (top_logprobs > 0) or train on hard labels",
                self.training.loss
            ));
        }
        distill_teacher::engine::check_cost_budget(self.max_cost_usd)?;
        Ok(())
    }

    /// What identifies the run: every setting that changes its results (not the run directory,
    /// and never a secret).
    pub fn fingerprint(&self) -> serde_json::Value {
        let teacher = match &self.teacher {
            TeacherChoice::Local { model } => serde_json::json!({"provider": "local", "model": model}),
            TeacherChoice::Remote { config, model } => match &config.provider {
                distill_teacher::ProviderSettings::OpenAi(s) => {
                    serde_json::json!({"provider": "openai", "base_url": s.base_url, "model": model})
                }
                distill_teacher::ProviderSettings::Azure(_) => {
                    serde_json::json!({"provider": "azure", "model": model})
                }
            },
        };
        serde_json::json!({
            "task": self.task,
            "prompts": self.prompts,
            "num_prompts": self.num_prompts,
            "test_prompts": self.test_prompts,
            "val_prompts": self.val_prompts,
            "seed": self.seed,
            "teacher": teacher,
            "max_tokens": self.max_tokens,
            "top_logprobs": self.top_logprobs,
            "student": self.student,
            "training": self.training,
            "eval": self.eval,
        })
    }

    /// The teacher's display name.
    pub fn teacher_name(&self) -> String {
        match &self.teacher {
            TeacherChoice::Local { model } => model_name(model),
            TeacherChoice::Remote { model, .. } => model.clone(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.run_dir.join(name)
    }

    /// Where training writes the student in HF format (the trainer's output is the run directory).
    fn final_model(&self) -> PathBuf {
        distill_student::train::final_model_dir(&self.run_dir)
    }
}

/// A model's display name from its path: the file stem of a GGUF, the directory's name.
pub fn model_name(path: &Path) -> String {
    let name = if path.is_dir() {
        path.file_name()
    } else {
        path.file_stem()
    };
    name.map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// The lab's stages, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Drawing and splitting the prompts.
    Prompts,
    /// The teacher answering.
    Generate,
    /// Training the student.
    Train,
    /// Evaluating teacher, student and the untrained student.
    Evaluate,
    /// Writing the model card, the GGUF and the manifest.
    Outputs,
}

impl Stage {
    /// A short name for progress lines.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prompts => "prompts",
            Stage::Generate => "generate",
            Stage::Train => "train",
            Stage::Evaluate => "evaluate",
            Stage::Outputs => "outputs",
        }
    }
}

/// What a run reports while it goes.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum LabEvent {
    /// A stage started; `total` units of work (0 when unknown).
    StageStarted {
        /// The stage.
        stage: Stage,
        /// Units of work it has.
        total: u64,
        /// What the units are (`answers`, `steps`).
        unit: &'static str,
    },
    /// Work done in the current stage.
    Progress {
        /// The stage.
        stage: Stage,
        /// Units done.
        done: u64,
        /// Units in all.
        total: u64,
        /// A short status (tokens per second, loss).
        message: String,
    },
    /// A stage had nothing left to do: its output was complete from an earlier run.
    StageSkipped {
        /// The stage.
        stage: Stage,
    },
    /// A stage ended.
    StageFinished {
        /// The stage.
        stage: Stage,
        /// Its seconds in this run.
        seconds: f64,
    },
    /// Something a user should read (a resumed stage, failed prompts).
    Note(String),
}

/// What a remote teacher would charge for the lab's prompts, at most.
#[derive(Debug, Clone, PartialEq)]
pub struct CostEstimate {
    /// US dollars, every answer as long as `max_tokens` allows.
    pub usd: f64,
    /// Prompts the teacher would answer.
    pub prompts: usize,
    /// The priced model.
    pub model: String,
    /// When the price table was last checked.
    pub prices_as_of: String,
}

/// About the most the lab's teacher would cost: `Ok(None)` for a local teacher, a model
/// without a price (a local OpenAI-compatible server) or a run whose generation is complete,
/// else the estimate over the prompts the lab draws (answers already in a run directory that
/// is part-way through are not subtracted).
pub fn estimate_cost(config: &LabConfig) -> Result<Option<CostEstimate>> {
    let TeacherChoice::Remote {
        config: teacher,
        model,
    } = &config.teacher
    else {
        return Ok(None);
    };
    if config.path("data.jsonl").exists() {
        return Ok(None);
    }
    let prompts = stages::prompts(config, &mut |_| {})?;
    let params = distill_teacher::GenerationParams {
        max_tokens: Some(config.max_tokens),
        ..Default::default()
    };
    Ok(
        distill_teacher::engine::estimate_cost(&prompts, &params, &teacher.prices, model).map(|usd| {
            CostEstimate {
                usd,
                prompts: prompts.len(),
                model: model.clone(),
                prices_as_of: teacher.prices.as_of.clone(),
            }
        }),
    )
}

/// Where a finished run put its results.
#[derive(Debug, Clone)]
pub struct LabOutcome {
    /// The evaluation.
    pub report: LabReport,
    /// The run directory.
    pub run_dir: PathBuf,
    /// The student in HF format.
    pub final_model: PathBuf,
    /// The student as GGUF, if exported.
    pub gguf: Option<PathBuf>,
}

/// Runs the lab (or continues it in `config.run_dir`). Raising `stop` ends the current stage
/// at its next safe point; the run directory then resumes it.
pub fn run(config: &LabConfig, stop: &AtomicBool, on_event: &mut dyn FnMut(LabEvent)) -> Result<LabOutcome> {
    config.validate()?;
    let mut timings = stages::Timings::open(&config.run_dir, &config.fingerprint())?;
    let prompts = timings.stage(Stage::Prompts, on_event, |on| stages::prompts(config, on))?;
    timings.stage(Stage::Generate, on_event, |on| {
        stages::generate(config, &prompts, stop, on)
    })?;
    timings.stage(Stage::Train, on_event, |on| stages::train(config, stop, on))?;
    let report = timings.stage(Stage::Evaluate, on_event, |on| stages::evaluate(config, on))?;
    let gguf = timings.stage(Stage::Outputs, on_event, |on| outputs::write(config, &report, on))?;
    let mut report = report;
    report.stage_seconds = timings.seconds();
    report.soft_labels = report::SoftLabels::read(&config.path("training_args.json"));
    report::write(&config.run_dir, &report)?;
    outputs::write_manifest(config, &report)?;
    Ok(LabOutcome {
        report,
        run_dir: config.run_dir.clone(),
        final_model: config.final_model(),
        gguf,
    })
}

/// How often a long stage looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
