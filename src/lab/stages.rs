//! The lab's stages, each resumable on its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use distill_data::prompts::{LabPrompts, MultipleChoice, MultipleChoiceTemplate};
use distill_data::{Example, Prompt, PromptSource, Split};
use distill_student::Pretrained;
use distill_student::shrink::{evenly_spaced_layers, select_layers};
use distill_student::tch::Device;
use distill_student::train::{self, KeepLayers, LrSchedule, Outcome, TrainConfig, TrainEvent};
use distill_teacher::{
    CancellationToken, Engine, Event, GenerateOptions, GenerationParams, StopReason, Teacher,
};

use super::report::{LabReport, Mcqa};
use super::{LabConfig, LabEvent, STOP_POLL, Stage, StudentChoice, Task, TeacherChoice};
use crate::error::{Error, Result, io, json};
use crate::evaluate::{Candidate, ModelEval, Role, evaluate as evaluate_model};
use crate::local_teacher::{LocalTeacher, LocalTeacherOptions};

/// The run directory's configuration check and the seconds each stage took, kept across resumes.
pub(super) struct Timings {
    path: PathBuf,
    seconds: BTreeMap<String, f64>,
}

impl Timings {
    /// Creates the run directory or checks that it holds a run of this configuration.
    pub(super) fn open(run_dir: &Path, fingerprint: &serde_json::Value) -> Result<Self> {
        std::fs::create_dir_all(run_dir).map_err(io(run_dir))?;
        let lab = run_dir.join("lab.json");
        match std::fs::read(&lab) {
            Ok(bytes) => {
                let stored: serde_json::Value = serde_json::from_slice(&bytes).map_err(json(&lab))?;
                let differs = differing_keys(&stored, fingerprint);
                if !differs.is_empty() {
                    return Err(Error::RunDirMismatch {
                        dir: run_dir.to_owned(),
                        differs: differs.join(", "),
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_json(&lab, fingerprint)?;
            }
            Err(e) => return Err(io(&lab)(e)),
        }
        let path = run_dir.join("timings.json");
        let seconds = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_default(),
            Err(_) => BTreeMap::new(),
        };
        Ok(Timings { path, seconds })
    }

    /// Runs one stage, timing it and reporting its start and end.
    pub(super) fn stage<T>(
        &mut self,
        stage: Stage,
        on_event: &mut dyn FnMut(LabEvent),
        body: impl FnOnce(&mut dyn FnMut(LabEvent)) -> Result<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let value = body(on_event)?;
        let seconds = started.elapsed().as_secs_f64();
        *self.seconds.entry(stage.name().to_owned()).or_default() += seconds;
        write_json(&self.path, &self.seconds)?;
        on_event(LabEvent::StageFinished { stage, seconds });
        Ok(value)
    }

    /// Seconds per stage, summed over every session of the run.
    pub(super) fn seconds(&self) -> BTreeMap<String, f64> {
        self.seconds.clone()
    }
}

fn differing_keys(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["configuration".into()];
    };
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| k.to_string())
        .collect()
}

/// Writes pretty JSON atomically (a temporary file, then a rename).
pub(super) fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(json(path))?;
    write_atomic(path, text.as_bytes())
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader never sees half.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    // `report.json` and `report.md` must not share one temporary name.
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Stage 1: the prompts, drawn by seed and split before any teacher sees them.
pub(super) fn prompts(config: &LabConfig, on_event: &mut dyn FnMut(LabEvent)) -> Result<Vec<Prompt>> {
    on_event(LabEvent::StageStarted {
        stage: Stage::Prompts,
        total: 0,
        unit: "prompts",
    });
    let source: Box<dyn PromptSource> = match config.task {
        Task::Chat => Box::new(LabPrompts {
            path: config.prompts.clone(),
            system: None,
        }),
        Task::Mcqa => Box::new(MultipleChoice {
            path: config.prompts.clone(),
            template: MultipleChoiceTemplate::default(),
        }),
    };
    let all = source.load()?;
    let available = all.len();
    let mut drawn = distill_data::pick(all, config.num_prompts, config.seed);
    let needed = config.test_prompts + config.val_prompts + 1;
    if drawn.len() < needed {
        return Err(Error::Input(format!(
            "{} has {available} prompts; the lab needs at least {needed} ({} test, {} validation, 1 to train on)",
            config.prompts.display(),
            config.test_prompts,
            config.val_prompts
        )));
    }
    if drawn.len() < config.num_prompts {
        on_event(LabEvent::Note(format!(
            "{} has {available} prompts; using all of them instead of {}",
            config.prompts.display(),
            config.num_prompts
        )));
    }
    for (i, prompt) in drawn.iter_mut().enumerate() {
        prompt.split = Some(if i < config.test_prompts {
            Split::Test
        } else if i < config.test_prompts + config.val_prompts {
            Split::Val
        } else {
            Split::Train
        });
    }
    Ok(drawn)
}

/// Stage 2: the teacher answers every prompt once; then the answers are written in prompt
/// order as `data.jsonl`.
pub(super) fn generate(
    config: &LabConfig,
    prompts: &[Prompt],
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(LabEvent),
) -> Result<()> {
    let data = config.path("data.jsonl");
    if data.exists() {
        on_event(LabEvent::StageSkipped {
            stage: Stage::Generate,
        });
        return Ok(());
    }
    let raw = config.path("generation/teacher.jsonl");
    on_event(LabEvent::StageStarted {
        stage: Stage::Generate,
        total: prompts.len() as u64,
        unit: "answers",
    });
    let teacher: Arc<dyn Teacher> = match &config.teacher {
        TeacherChoice::Local { model } => Arc::new(LocalTeacher::load(
            model,
            &super::model_name(model),
            LocalTeacherOptions {
                max_batch: config.concurrency,
                ..LocalTeacherOptions::default()
            },
        )?),
        TeacherChoice::Remote {
            config: teacher,
            model,
        } => distill_teacher::teacher_from_config(teacher, Some(model))?,
    };
    let mut options = GenerateOptions::new(prompts.len(), &raw);
    options.params = GenerationParams {
        temperature: Some(0.0),
        max_tokens: Some(config.max_tokens),
        seed: Some(config.seed as i64),
        n: 1,
        top_logprobs: config.top_logprobs,
    };
    options.concurrency = config.concurrency;
    options.resume = true;
    options.max_cost_usd = config.max_cost_usd;
    if let TeacherChoice::Remote { config: teacher, .. } = &config.teacher {
        options.prices = teacher.prices.clone();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(io("<async runtime>"))?;
    let (events, mut received) = tokio::sync::mpsc::unbounded_channel();
    let engine = Engine::new(teacher, options).with_events(events);
    let cancel = CancellationToken::new();
    let summary = runtime.block_on(async {
        let run = engine.run(prompts.to_vec(), cancel.clone());
        tokio::pin!(run);
        let mut poll = tokio::time::interval(STOP_POLL);
        loop {
            tokio::select! {
                summary = &mut run => break summary,
                Some(event) = received.recv() => {
                    let p = &event.progress;
                    match &event.event {
                        Event::Started { resumed, .. } if *resumed > 0 => on_event(LabEvent::Note(format!(
                            "generate: resuming; {resumed} answers were already in {}", raw.display()
                        ))),
                        Event::Failed { id, attempts, reason } => on_event(LabEvent::Note(format!(
                            "generate: prompt {id} failed after {attempts} attempt(s): {reason}"
                        ))),
                        _ => {}
                    }
                    on_event(LabEvent::Progress {
                        stage: Stage::Generate,
                        done: p.done as u64,
                        total: p.target as u64,
                        message: format!("{} tokens", p.accounting.completion_tokens),
                    });
                }
                _ = poll.tick() => {
                    if stop.load(Ordering::Relaxed) {
                        cancel.cancel();
                    }
                }
            }
        }
    })?;
    drop(engine);
    match summary.stop {
        StopReason::Completed | StopReason::SourceExhausted => {}
        StopReason::BudgetReached => {
            return Err(Error::BudgetReached {
                spent: summary.progress.accounting.cost_usd,
                max: config.max_cost_usd.unwrap_or_default(),
            });
        }
        _ => return Err(Error::Interrupted("generation")),
    }
    if summary.progress.failed > 0 {
        on_event(LabEvent::Note(format!(
            "generate: {} prompts failed (see {}); the lab continues without them",
            summary.progress.failed,
            summary.failures_file.as_deref().unwrap_or(&raw).display()
        )));
    }
    // Prompt order, whatever order the answers arrived in: the trainer's data order (and so
    // the weights) must not depend on the teacher's timing.
    let mut answers: BTreeMap<String, Example> = distill_data::read_file(&raw)?
        .into_iter()
        .map(|e| (e.id.clone(), e))
        .collect();
    let ordered = prompts.iter().filter_map(|p| answers.remove(&p.id)).map(Ok);
    distill_data::ops::files::write_examples(
        &data,
        ordered,
        &distill_data::ops::files::WriteOptions::default(),
    )?;
    Ok(())
}

/// Whether every trained (train or val) answer in the dataset carries the teacher's
/// log-probabilities: some endpoints return none.
fn every_answer_has_logprobs(data: &Path) -> Result<bool> {
    let examples = distill_data::read_file(data)?;
    Ok(examples
        .iter()
        .filter(|e| e.split != Some(Split::Test))
        .all(|e| e.logprobs.as_ref().is_some_and(|l| !l.is_empty())))
}

/// Stage 3: the student, trained on the train split (validated on val), resumed from its last
/// checkpoint.
pub(super) fn train(config: &LabConfig, stop: &AtomicBool, on_event: &mut dyn FnMut(LabEvent)) -> Result<()> {
    let done = config.path(".train-complete");
    if done.exists() {
        on_event(LabEvent::StageSkipped { stage: Stage::Train });
        return Ok(());
    }
    let settings = &config.training;
    let (student_model, keep_layers) = match (&config.student, &config.teacher) {
        (StudentChoice::TeacherLayers(n), TeacherChoice::Local { model }) => {
            (model.clone(), Some(KeepLayers::Count(*n)))
        }
        (StudentChoice::Model(path), _) => (path.clone(), None),
        (StudentChoice::TeacherLayers(_), TeacherChoice::Remote { .. }) => {
            return Err(Error::Input(
                "a student cut from the teacher needs a local teacher".into(),
            ));
        }
    };
    let data = config.path("data.jsonl");
    let mut loss = settings.loss;
    if loss.needs_soft_labels() && !every_answer_has_logprobs(&data)? {
        on_event(LabEvent::Note(
            "train: the teacher returned no log-probabilities for some answers; training on hard labels only"
                .into(),
        ));
        loss = train::LossKind::Ce;
    }
    let mut train_config = TrainConfig::new(&data, student_model, &config.run_dir);
    train_config.keep_layers = keep_layers;
    train_config.loss.kind = loss;
    train_config.loss.alpha = settings.alpha;
    train_config.loss.temperature = settings.temperature;
    train_config.optim.lr = settings.learning_rate;
    train_config.optim.warmup_steps = settings.warmup_steps;
    train_config.optim.schedule = LrSchedule::Cosine;
    train_config.epochs = settings.epochs;
    train_config.batch_size = settings.batch_size;
    train_config.max_seq_len = settings.max_seq_len;
    train_config.save_every = settings.save_every;
    train_config.seed = config.seed;
    train_config.resume = true;
    train_config.device = train::DeviceChoice::Cpu;
    let summary = train::train(train_config, stop, &mut |event| match event {
        TrainEvent::Started {
            start_step,
            total_steps,
            ..
        } => {
            on_event(LabEvent::StageStarted {
                stage: Stage::Train,
                total: *total_steps,
                unit: "steps",
            });
            if *start_step > 0 {
                on_event(LabEvent::Note(format!(
                    "train: resuming from the checkpoint at step {start_step}"
                )));
            }
        }
        TrainEvent::Step {
            record, total_steps, ..
        } => on_event(LabEvent::Progress {
            stage: Stage::Train,
            done: record.step,
            total: *total_steps,
            message: format!("loss {:.3}", record.loss),
        }),
        _ => {}
    })?;
    if summary.outcome == Outcome::Stopped {
        return Err(Error::Interrupted("training"));
    }
    std::fs::write(&done, b"").map_err(io(&done))?;
    Ok(())
}

/// Stage 4: teacher, student and the untrained student answer the test prompts. The result is
/// kept in `evaluation.json`, so a resumed run that got this far does not evaluate again.
pub(super) fn evaluate(config: &LabConfig, on_event: &mut dyn FnMut(LabEvent)) -> Result<LabReport> {
    let done = config.path("evaluation.json");
    if let Ok(bytes) = std::fs::read(&done) {
        let report = serde_json::from_slice(&bytes).map_err(json(&done))?;
        on_event(LabEvent::StageSkipped {
            stage: Stage::Evaluate,
        });
        return Ok(report);
    }
    let report = evaluate_all(config, on_event)?;
    write_json(&done, &report)?;
    Ok(report)
}

/// Every model of the lab on the test split.
fn evaluate_all(config: &LabConfig, on_event: &mut dyn FnMut(LabEvent)) -> Result<LabReport> {
    let test: Vec<Example> = distill_data::read_file(config.path("data.jsonl"))?
        .into_iter()
        .filter(|e| e.split == Some(Split::Test))
        .collect();
    let mut models: Vec<ModelEval> = Vec::new();
    let mut run = |candidate: Candidate, on_event: &mut dyn FnMut(LabEvent)| -> Result<()> {
        on_event(LabEvent::StageStarted {
            stage: Stage::Evaluate,
            total: test.len() as u64,
            unit: "answers",
        });
        let name = candidate.name.clone();
        let eval = evaluate_model(candidate, &test, &config.eval, &mut |done, total| {
            on_event(LabEvent::Progress {
                stage: Stage::Evaluate,
                done: done as u64,
                total: total as u64,
                message: name.clone(),
            })
        })?;
        models.push(eval);
        Ok(())
    };
    if let TeacherChoice::Local { model } = &config.teacher {
        run(
            Candidate::load(
                &format!("teacher: {}", super::model_name(model)),
                Role::Teacher,
                model,
            )?,
            on_event,
        )?;
    }
    let final_model = config.final_model();
    run(Candidate::load("student", Role::Student, &final_model)?, on_event)?;
    run(untrained(config)?, on_event)?;
    let mcqa = (config.task == Task::Mcqa).then(|| Mcqa::score(&test, &models));
    Ok(LabReport::new(config, test.len(), models, mcqa.transpose()?))
}

/// The student before training: the same layers of the teacher, or the student model as loaded.
fn untrained(config: &LabConfig) -> Result<Candidate> {
    let rss_before = distill_eval::memory::start_peak_measurement().ok();
    let started = Instant::now();
    let (model, source) = match (&config.student, &config.teacher) {
        (StudentChoice::TeacherLayers(n), TeacherChoice::Local { model }) => {
            let teacher = Pretrained::load(model, Device::Cpu)?;
            let layers = evenly_spaced_layers(teacher.model.model.layer_count(), *n)?;
            let cut = select_layers(&teacher.model, &layers)?;
            (
                Pretrained {
                    model: cut,
                    tokenizer: teacher.tokenizer,
                },
                None,
            )
        }
        (StudentChoice::Model(path), _) => (Pretrained::load(path, Device::Cpu)?, Some(path.clone())),
        (StudentChoice::TeacherLayers(_), TeacherChoice::Remote { .. }) => {
            return Err(Error::Input(
                "a student cut from the teacher needs a local teacher".into(),
            ));
        }
    };
    Ok(Candidate {
        name: "untrained student".into(),
        role: Role::Untrained,
        model,
        source,
        load_seconds: started.elapsed().as_secs_f64(),
        rss_before,
    })
}
