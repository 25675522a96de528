//! The training loop: micro-batches, losses, the optimizer step, evaluation, checkpoints, resume
//! and the outputs of a run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use distill_data::Example;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::batch::{Batch, BatchSettings, DataPosition, collate, plan_epoch};
use super::checkpoint::{self as ckpt, Best, Fingerprint, STATE_VERSION, TrainerState};
use super::config::{MixedPrecision, TrainConfig};
use super::data::{DataStats, Preparer, Sequence, SoftSource};
use super::error::{Error, Result};
use super::events::{Outcome, TrainEvent, TrainSummary};
use super::loss::{self, Divergence};
use super::metrics::{EvalRecord, MetricsLog, Record, StepRecord, loss_curve_svg};
use super::optim::{AdamW, LossScaler, learning_rate};
use super::setup::{self, ModelWithTokenizer};
use crate::checkpoint::hf;
use crate::model::{CausalLm, ForwardInput};

/// The inputs of a run, for callers that build them in memory (tests, benchmarks, other tools).
#[derive(Debug)]
pub struct Parts {
    /// The student and its tokenizer.
    pub student: ModelWithTokenizer,
    /// A teacher giving logits online (same tokenizer).
    pub teacher: Option<ModelWithTokenizer>,
    /// Training examples.
    pub train: Vec<Example>,
    /// Validation examples.
    pub val: Vec<Example>,
}

/// `training_args.json`: the configuration and what set-up found.
#[derive(Debug, Serialize)]
struct TrainingArgs<'a> {
    config: &'a TrainConfig,
    train_data: &'a DataStats,
    val_data: Option<&'a DataStats>,
    parameters: u64,
    layers: i64,
    vocab_hash: &'a str,
    device: String,
    total_steps: u64,
    resumed_from: Option<u64>,
}

/// A prepared training run.
#[derive(Debug)]
pub struct Trainer {
    config: TrainConfig,
    student: ModelWithTokenizer,
    teacher: Option<ModelWithTokenizer>,
    train: Vec<Sequence>,
    train_stats: DataStats,
    val: Vec<Sequence>,
    val_stats: Option<DataStats>,
    device: Device,
    optimizer: AdamW,
    state: TrainerState,
    divergence: Option<Divergence>,
    batching: BatchSettings,
    pad: i64,
    plan: (u64, Vec<Vec<usize>>),
    resumed_from: Option<u64>,
    last_checkpoint: Option<PathBuf>,
}

fn checkpoints_dir(config: &TrainConfig) -> PathBuf {
    config.output_dir.join("checkpoints")
}

impl Trainer {
    /// Loads everything a configuration names and prepares the run (resuming when asked).
    pub fn from_config(config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let device = setup::resolve_device(&config)?;
        let _span = tracing::info_span!("setup", output = %config.output_dir.display()).entered();
        let (train, val) = setup::read_dataset(&config)?;
        let student = setup::load_student(&config, device)?;
        let teacher = match &config.teacher_model {
            Some(path) => Some(setup::load_model(path, device)?),
            None => None,
        };
        Self::from_parts(
            config,
            Parts {
                student,
                teacher,
                train,
                val,
            },
        )
    }

    /// Prepares a run from in-memory parts; `config`'s model and dataset paths only name things
    /// in messages and `training_args.json`.
    pub fn from_parts(config: TrainConfig, parts: Parts) -> Result<Self> {
        config.validate()?;
        let Parts {
            student,
            teacher,
            train,
            val,
        } = parts;
        check_models(&config, &student, teacher.as_ref())?;
        let divergence = Divergence::from_config(&config.loss);
        let soft_source = if divergence.is_some() && teacher.is_none() {
            SoftSource::Dataset
        } else {
            SoftSource::None
        };
        let preparer = Preparer::new(&student.tokenizer, config.max_seq_len, soft_source)?;
        let (train_seqs, train_stats) = preparer.prepare(&train, &config.dataset)?;
        if train_seqs.is_empty() {
            return Err(Error::NoData(format!(
                "{}: no training examples left ({} read, {} with a prompt longer than --max-seq-len {})",
                config.dataset.display(),
                train_stats.examples,
                train_stats.dropped_long_prompt,
                config.max_seq_len
            )));
        }
        let val_source = config.val_dataset.as_deref().unwrap_or(&config.dataset);
        let (val_seqs, val_stats) = if val.is_empty() {
            (Vec::new(), None)
        } else {
            // Validation data without logprobs still gives the hard (teacher-token) loss.
            let val_soft = if soft_source == SoftSource::Dataset && val.iter().any(|e| e.logprobs.is_none()) {
                tracing::info!("some validation examples have no logprobs; validating on hard labels only");
                SoftSource::None
            } else {
                soft_source
            };
            let val_preparer = Preparer::new(&student.tokenizer, config.max_seq_len, val_soft)?;
            let (s, st) = val_preparer.prepare(&val, val_source)?;
            (s, Some(st))
        };
        if train_stats.truncated > 0 {
            tracing::warn!(
                truncated = train_stats.truncated,
                of = train_stats.sequences,
                max_seq_len = config.max_seq_len,
                "training examples cut to the maximum length"
            );
        }
        Self::assemble(
            config,
            student,
            teacher,
            (train_seqs, train_stats),
            (val_seqs, val_stats),
        )
    }

    /// Prepares a run from sequences that are already tokenized (see [`Sequence`]); they are
    /// checked against the student's vocabulary and `max_seq_len`.
    pub fn from_sequences(
        config: TrainConfig,
        student: ModelWithTokenizer,
        teacher: Option<ModelWithTokenizer>,
        train: Vec<Sequence>,
        val: Vec<Sequence>,
    ) -> Result<Self> {
        config.validate()?;
        check_models(&config, &student, teacher.as_ref())?;
        let vocab = student.model.config.vocab_size();
        for s in train.iter().chain(&val) {
            check_sequence(s, vocab, config.max_seq_len)?;
        }
        if train.is_empty() {
            return Err(Error::NoData("no training sequences".into()));
        }
        let stats = |seqs: &[Sequence]| DataStats {
            examples: seqs.len(),
            sequences: seqs.len(),
            truncated: seqs.iter().filter(|s| s.truncated).count(),
            dropped_long_prompt: 0,
            input_tokens: seqs.iter().map(Sequence::len).sum(),
            target_tokens: seqs.iter().map(Sequence::trained).sum(),
        };
        let train_stats = stats(&train);
        let val_stats = (!val.is_empty()).then(|| stats(&val));
        Self::assemble(config, student, teacher, (train, train_stats), (val, val_stats))
    }

    fn assemble(
        config: TrainConfig,
        mut student: ModelWithTokenizer,
        mut teacher: Option<ModelWithTokenizer>,
        (mut train_seqs, train_stats): (Vec<Sequence>, DataStats),
        (val_seqs, val_stats): (Vec<Sequence>, Option<DataStats>),
    ) -> Result<Self> {
        let device = setup::resolve_device(&config)?;
        let divergence = Divergence::from_config(&config.loss);
        let pad = student
            .tokenizer
            .pad_token_id()
            .or_else(|| student.tokenizer.eos_token_ids().first().copied())
            .map_or(0, i64::from);
        std::fs::create_dir_all(&config.output_dir).map_err(Error::io(&config.output_dir))?;

        if let (Some(k), Some(t)) = (config.teacher_cache_top_k, &teacher) {
            let path = config
                .teacher_model
                .clone()
                .unwrap_or_else(|| t.model.source.clone());
            let cache = config.output_dir.join("teacher_topk.safetensors");
            setup::teacher_top_k(t, &path, &mut train_seqs, k, config.max_seq_len, &cache, pad)?;
            // From here on the cache stands in for the teacher (validation reports hard CE only).
            teacher = None;
        }

        tch::manual_seed(config.seed as i64);
        if config.reinit {
            crate::shrink::init_like_transformers(&student.model.vs, 0.02);
        }
        let masters = (config.precision == MixedPrecision::Bf16).then(|| {
            let _guard = tch::no_grad_guard();
            let masters: BTreeMap<String, Tensor> = student
                .model
                .vs
                .variables()
                .into_iter()
                .map(|(n, t)| (n, t.detach().copy()))
                .collect();
            student.model.vs.bfloat16();
            if let Some(t) = &mut teacher {
                t.model.vs.bfloat16();
            }
            masters
        });
        let optimizer = AdamW::new(&student.model.vs, &config.optim, masters);

        let batching = BatchSettings {
            batch_size: config.batch_size,
            max_batch_tokens: config.max_batch_tokens,
            bucket_window: config.bucket_window,
        };
        let fingerprint = Fingerprint {
            data_hash: setup::data_hash(&train_seqs),
            seed: config.seed,
            config: fingerprint_config(&config),
        };
        let state = TrainerState {
            version: STATE_VERSION,
            step: 0,
            position: DataPosition::default(),
            total_steps: 0,
            scaler: LossScaler::new(config.precision == MixedPrecision::Fp16),
            best: None,
            evals_since_best: 0,
            bad_steps: 0,
            tokens_seen: 0,
            elapsed_seconds: 0.0,
            fingerprint,
        };
        let mut trainer = Self {
            config,
            student,
            teacher,
            train: train_seqs,
            train_stats,
            val: val_seqs,
            val_stats,
            device,
            optimizer,
            state,
            divergence,
            batching,
            pad,
            plan: (u64::MAX, Vec::new()),
            resumed_from: None,
            last_checkpoint: None,
        };
        trainer.state.total_steps = trainer.total_steps();
        if trainer.config.resume {
            trainer.resume()?;
        }
        Ok(trainer)
    }

    /// Steps the run is planned for: `max_steps`, or every batch of every epoch.
    fn total_steps(&self) -> u64 {
        if let Some(s) = self.config.max_steps {
            return s;
        }
        let lengths = self.lengths();
        let accum = u64::from(self.config.optim.grad_accum);
        (0..u64::from(self.config.epochs))
            .map(|e| (plan_epoch(&lengths, self.config.seed, e, &self.batching).len() as u64).div_ceil(accum))
            .sum()
    }

    fn lengths(&self) -> Vec<usize> {
        self.train.iter().map(Sequence::len).collect()
    }

    /// Restores the newest checkpoint, if there is one.
    fn resume(&mut self) -> Result<()> {
        let root = checkpoints_dir(&self.config);
        ckpt::remove_partial(&root)?;
        let Some(newest) = ckpt::list(&root)?.pop() else {
            tracing::warn!(dir = %root.display(), "--resume: no checkpoint yet; starting from the beginning");
            return Ok(());
        };
        let loaded = ckpt::load(&newest.path)?;
        let mut saved = loaded.state;
        let mine = &self.state.fingerprint;
        if saved.fingerprint.data_hash != mine.data_hash {
            return Err(Error::Checkpoint {
                path: newest.path,
                reason: "it was trained on different data (the tokenized dataset's hash differs)".into(),
            });
        }
        if saved.fingerprint.seed != mine.seed || saved.fingerprint.config != mine.config {
            let diff = config_diff(&saved.fingerprint.config, &mine.config);
            return Err(Error::Checkpoint {
                path: newest.path,
                reason: format!(
                    "it was trained with other settings ({}); resume with the same flags",
                    if saved.fingerprint.seed != mine.seed {
                        "seed".to_string()
                    } else {
                        diff
                    }
                ),
            });
        }
        let bad = |reason: String| Error::Checkpoint {
            path: newest.path.clone(),
            reason,
        };
        self.optimizer.load_values(&loaded.weights).map_err(bad)?;
        self.optimizer
            .load_state(&loaded.optimizer, saved.step)
            .map_err(bad)?;
        if saved.total_steps != self.state.total_steps {
            tracing::warn!(
                was = saved.total_steps,
                now = self.state.total_steps,
                "the run is now planned for a different number of steps; the learning-rate schedule changes"
            );
            saved.total_steps = self.state.total_steps;
        }
        tracing::info!(step = saved.step, dir = %newest.path.display(), "resuming");
        self.state = saved;
        self.resumed_from = Some(self.state.step);
        self.last_checkpoint = Some(newest.path);
        Ok(())
    }

    /// The current state (step, data position, best validation result …).
    pub fn state(&self) -> &TrainerState {
        &self.state
    }

    /// The student being trained.
    pub fn student(&self) -> &ModelWithTokenizer {
        &self.student
    }

    /// The prepared training sequences.
    pub fn train_sequences(&self) -> &[Sequence] {
        &self.train
    }

    /// The next micro-batch's indices, advancing the data position; `None` at an epoch boundary
    /// when `stop_at_epoch_end` (so that an accumulation group never spans two epochs).
    fn next_batch(&mut self, stop_at_epoch_end: bool) -> Option<Vec<usize>> {
        loop {
            let pos = self.state.position;
            if self.plan.0 != pos.epoch {
                let plan = plan_epoch(&self.lengths(), self.config.seed, pos.epoch, &self.batching);
                self.plan = (pos.epoch, plan);
            }
            if let Some(b) = self.plan.1.get(pos.batch as usize) {
                let b = b.clone();
                self.state.position.batch += 1;
                return Some(b);
            }
            self.state.position = DataPosition {
                epoch: pos.epoch + 1,
                batch: 0,
            };
            if stop_at_epoch_end {
                return None;
            }
        }
    }

    /// Runs to the end (or until `stop` is raised), reporting through `on_event`.
    pub fn run(&mut self, stop: &AtomicBool, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<TrainSummary> {
        let _span = tracing::info_span!("train", output = %self.config.output_dir.display()).entered();
        let total = self.state.total_steps;
        self.write_training_args(total)?;
        let mut metrics = MetricsLog::open(&self.config.output_dir.join("metrics.jsonl"), self.resumed_from)?;
        on_event(&TrainEvent::Started {
            start_step: self.state.step,
            total_steps: total,
            train: self.train_stats.clone(),
            val: self.val_stats.clone(),
            parameters: self
                .optimizer
                .values()
                .iter()
                .map(|(_, t)| t.numel() as u64)
                .sum(),
            device: format!("{:?}", self.device).to_lowercase(),
        });
        let session = Instant::now();
        let session_start_step = self.state.step;
        let elapsed_before = self.state.elapsed_seconds;
        let mut last_loss = None;
        let mut saved_at = self.resumed_from;
        let mut evaluated_at = None;
        let mut outcome = Outcome::Completed;
        while self.state.step < total {
            if stop.load(Ordering::Relaxed) {
                outcome = Outcome::Stopped;
                break;
            }
            let record = self.step()?;
            self.state.elapsed_seconds = elapsed_before + session.elapsed().as_secs_f64();
            let step = self.state.step;
            match record {
                Some(mut record) => {
                    record.elapsed_seconds = self.state.elapsed_seconds;
                    last_loss = Some(record.loss);
                    metrics.push(Record::Step(record.clone()))?;
                    let per_step = session.elapsed().as_secs_f64() / (step - session_start_step) as f64;
                    on_event(&TrainEvent::Step {
                        record,
                        total_steps: total,
                        eta_seconds: per_step * (total - step) as f64,
                    });
                }
                None => on_event(&TrainEvent::Skipped {
                    step,
                    consecutive: self.state.bad_steps,
                }),
            }
            let mut save_now = self.config.save_every > 0 && step.is_multiple_of(self.config.save_every);
            if !self.val.is_empty()
                && self.config.eval_every > 0
                && step.is_multiple_of(self.config.eval_every)
            {
                let (improved, record) = self.evaluate_and_track()?;
                evaluated_at = Some(step);
                metrics.push(Record::Eval(record.clone()))?;
                on_event(&TrainEvent::Eval { record, improved });
                // The best weights must survive on disk.
                save_now |= improved;
                if self
                    .config
                    .early_stopping_patience
                    .is_some_and(|p| self.state.evals_since_best >= p)
                {
                    outcome = Outcome::EarlyStopped;
                }
            }
            if save_now {
                self.save_checkpoint(on_event)?;
                saved_at = Some(step);
            }
            if outcome == Outcome::EarlyStopped {
                tracing::info!(step, "early stopping: validation loss stopped improving");
                break;
            }
        }
        let step = self.state.step;
        if outcome == Outcome::Completed && !self.val.is_empty() && evaluated_at != Some(step) {
            let (improved, record) = self.evaluate_and_track()?;
            metrics.push(Record::Eval(record.clone()))?;
            on_event(&TrainEvent::Eval { record, improved });
        }
        if saved_at != Some(step) && step > 0 {
            self.save_checkpoint(on_event)?;
        }
        let svg_path = self.config.output_dir.join("loss_curve.svg");
        std::fs::write(&svg_path, loss_curve_svg(metrics.records())).map_err(Error::io(&svg_path))?;
        let final_model = if outcome == Outcome::Stopped {
            None
        } else {
            Some(self.write_final_model()?)
        };
        let summary = TrainSummary {
            outcome,
            steps: step,
            tokens_seen: self.state.tokens_seen,
            elapsed_seconds: self.state.elapsed_seconds,
            final_loss: last_loss,
            best: self.state.best,
            final_model,
            last_checkpoint: self.last_checkpoint.clone(),
        };
        on_event(&TrainEvent::Finished(summary.clone()));
        Ok(summary)
    }

    /// One optimizer step over the next `grad_accum` micro-batches; `None` when it was skipped
    /// (non-finite loss or gradient). [`Self::run`] calls it; benchmarks and custom loops may
    /// call it directly (it writes no checkpoints or metrics).
    pub fn step(&mut self) -> Result<Option<StepRecord>> {
        let started = Instant::now();
        let step = self.state.step;
        let _span = tracing::debug_span!("step", step).entered();
        let accum = self.config.optim.grad_accum as usize;
        let epoch = self.state.position.epoch;
        let mut group = Vec::with_capacity(accum);
        while group.len() < accum {
            match self.next_batch(!group.is_empty()) {
                Some(b) => group.push(b),
                None => break,
            }
        }
        let batches: Vec<Batch> = group
            .iter()
            .map(|idx| collate(&self.train, idx, self.pad, self.device))
            .collect();
        let hard_total: usize = batches.iter().map(|b| b.targets_count).sum();
        let soft_total: usize = batches.iter().map(|b| self.soft_rows(b)).sum();
        let tokens: usize = batches.iter().map(|b| b.tokens).sum();
        let lr = learning_rate(&self.config.optim, step, self.state.total_steps);
        let scale = self.state.scaler.scale;
        let (alpha, soft_on) = match self.divergence {
            Some(_) if soft_total > 0 => (self.config.loss.alpha, true),
            _ => (0.0, false),
        };
        let (mut hard_sum, mut soft_sum, mut finite) = (0.0, 0.0, true);
        self.optimizer.zero_grad();
        for batch in &batches {
            let (hard, soft) = self.losses(batch)?;
            let mut objective = &hard * ((1.0 - alpha) / hard_total as f64);
            if let (Some(soft), true) = (&soft, soft_on) {
                objective += soft * (alpha / soft_total as f64);
            }
            let h = hard.double_value(&[]);
            let s = soft.as_ref().map_or(0.0, |s| s.double_value(&[]));
            finite &= h.is_finite() && s.is_finite();
            hard_sum += h;
            soft_sum += s;
            if finite {
                (objective * scale).f_backward()?;
            }
        }
        let grad_norm = if finite {
            self.optimizer
                .unscale_and_clip(scale, self.config.optim.max_grad_norm)
        } else {
            f64::NAN
        };
        self.state.step += 1;
        self.state.tokens_seen += tokens as u64;
        if !grad_norm.is_finite() {
            self.optimizer.zero_grad();
            self.state.scaler.update(false);
            self.state.bad_steps += 1;
            tracing::warn!(
                step = step + 1,
                consecutive = self.state.bad_steps,
                scale,
                "non-finite loss or gradient; step skipped"
            );
            if self.state.bad_steps >= self.config.max_bad_steps {
                return Err(Error::Diverged {
                    step: step + 1,
                    count: self.state.bad_steps,
                });
            }
            return Ok(None);
        }
        self.optimizer.step(lr);
        self.optimizer.zero_grad();
        self.state.scaler.update(true);
        self.state.bad_steps = 0;
        let hard_loss = hard_sum / hard_total as f64;
        let soft_loss = soft_on.then(|| soft_sum / soft_total as f64);
        let loss = match soft_loss {
            Some(s) => (1.0 - alpha) * hard_loss + alpha * s,
            None => hard_loss,
        };
        Ok(Some(StepRecord {
            step: self.state.step,
            epoch,
            loss,
            hard_loss,
            soft_loss,
            lr,
            grad_norm,
            tokens_per_second: tokens as f64 / started.elapsed().as_secs_f64().max(1e-9),
            tokens: tokens as u64,
            elapsed_seconds: 0.0,
        }))
    }

    /// Positions of a batch that get a soft loss.
    fn soft_rows(&self, batch: &Batch) -> usize {
        match (&self.divergence, &self.teacher) {
            (None, _) => 0,
            (Some(_), Some(_)) => batch.targets_count,
            (Some(_), None) => batch.soft.as_ref().map_or(0, |s| s.count),
        }
    }

    /// The summed hard and soft losses of one batch (soft: `None` without soft targets).
    fn losses(&self, batch: &Batch) -> Result<(Tensor, Option<Tensor>)> {
        let fp16 = self.config.precision == MixedPrecision::Fp16;
        let rows = tch::autocast(fp16, || trained_rows(&self.student.model.model, batch));
        // One vocabulary-wide log-softmax serves the cross-entropy and the soft loss at T = 1.
        let logq = rows.log_softmax(-1, Kind::Float);
        let hard = loss::nll_sum(&logq, &batch.targets);
        let Some(kind) = self.divergence else {
            return Ok((hard, None));
        };
        let t = self.config.loss.temperature;
        let student_t = || {
            if t == 1.0 {
                logq.shallow_clone()
            } else {
                (&rows / t).log_softmax(-1, Kind::Float)
            }
        };
        let soft = if let Some(teacher) = &self.teacher {
            let teacher_rows =
                tch::no_grad(|| tch::autocast(fp16, || trained_rows(&teacher.model.model, batch)));
            Some(loss::soft_sum(
                &loss::full_vocab_with(student_t(), &teacher_rows, t),
                kind,
                t,
            ))
        } else {
            batch.soft.as_ref().map(|s| {
                let mode = self.config.loss.top_k;
                let d = loss::sparse_with(&rows, &logq, &s.ids, &s.logprobs, &s.valid, mode, t);
                loss::soft_sum_weighted(&d, kind, t, &s.weights)
            })
        };
        Ok((hard, soft))
    }

    /// Evaluates and updates the best result and the early-stopping count.
    fn evaluate_and_track(&mut self) -> Result<(bool, EvalRecord)> {
        let record = self.evaluate()?;
        let improved = self.state.best.is_none_or(|b| record.val_loss < b.val_loss);
        if improved {
            self.state.best = Some(Best {
                step: record.step,
                val_loss: record.val_loss,
            });
            self.state.evals_since_best = 0;
        } else {
            self.state.evals_since_best += 1;
        }
        Ok((improved, record))
    }

    /// Mean teacher-token cross-entropy (and soft loss, where available) on the validation data.
    pub fn evaluate(&self) -> Result<EvalRecord> {
        let _span = tracing::debug_span!("eval", step = self.state.step).entered();
        let _guard = tch::no_grad_guard();
        let mut order: Vec<usize> = (0..self.val.len()).collect();
        order.sort_by_key(|&i| self.val[i].len());
        let (mut hard, mut soft, mut n, mut ns) = (0.0, 0.0, 0usize, 0usize);
        for chunk in order.chunks(self.config.batch_size) {
            let batch = collate(&self.val, chunk, self.pad, self.device);
            let (h, s) = self.losses(&batch)?;
            hard += h.double_value(&[]);
            n += batch.targets_count;
            if let Some(s) = s {
                soft += s.double_value(&[]);
                ns += self.soft_rows(&batch);
            }
        }
        Ok(EvalRecord {
            step: self.state.step,
            val_loss: hard / n.max(1) as f64,
            val_soft_loss: (ns > 0).then(|| soft / ns as f64),
            val_tokens: n as u64,
        })
    }

    fn save_checkpoint(&mut self, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<()> {
        let root = checkpoints_dir(&self.config);
        let (moments, _) = self.optimizer.state();
        let path = ckpt::save(&root, &self.state, &self.optimizer.values(), &moments)?;
        ckpt::prune(
            &root,
            self.config.keep_checkpoints,
            self.state.best.map(|b| b.step),
        )?;
        tracing::info!(step = self.state.step, path = %path.display(), "checkpoint saved");
        on_event(&TrainEvent::Checkpoint {
            step: self.state.step,
            path: path.clone(),
        });
        self.last_checkpoint = Some(path);
        Ok(())
    }

    fn write_training_args(&self, total_steps: u64) -> Result<()> {
        let args = TrainingArgs {
            config: &self.config,
            train_data: &self.train_stats,
            val_data: self.val_stats.as_ref(),
            parameters: self
                .optimizer
                .values()
                .iter()
                .map(|(_, t)| t.numel() as u64)
                .sum(),
            layers: self.student.model.config.layer_count(),
            vocab_hash: self.student.tokenizer.vocab_hash(),
            device: format!("{:?}", self.device).to_lowercase(),
            total_steps,
            resumed_from: self.resumed_from,
        };
        let path = self.config.output_dir.join("training_args.json");
        let json = serde_json::to_string_pretty(&args).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        std::fs::write(&path, json).map_err(Error::io(&path))
    }

    /// Writes `output_dir/final_model/` (weights, config, tokenizer) through a temporary directory.
    fn write_final_model(&mut self) -> Result<PathBuf> {
        let dir = self.config.output_dir.join("final_model");
        let tmp = self.config.output_dir.join(".final_model.tmp");
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(Error::io(&tmp))?;
        }
        if self.config.precision == MixedPrecision::Bf16 {
            // The f32 masters are the real weights.
            let values: BTreeMap<String, Tensor> = self.optimizer.values().into_iter().collect();
            self.student.model.vs.float();
            let _guard = tch::no_grad_guard();
            for (name, mut var) in self.student.model.vs.variables() {
                if let Some(v) = values.get(&name) {
                    var.copy_(v);
                }
            }
        }
        hf::save_dir(&self.student.model, &tmp)?;
        self.student.tokenizer.save_hf(&tmp)?;
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(Error::io(&dir))?;
        }
        std::fs::rename(&tmp, &dir).map_err(Error::io(&dir))?;
        if self.config.precision == MixedPrecision::Bf16 {
            self.student.model.vs.bfloat16();
        }
        tracing::info!(path = %dir.display(), "final model written");
        Ok(dir)
    }
}

/// The f32 logits of a batch's trained positions, `[n, vocab]`. The output head runs at those
/// positions only (prompt and padding skip it), unless every position is trained.
fn trained_rows(model: &CausalLm, batch: &Batch) -> Tensor {
    let input = ForwardInput::new(&batch.input_ids);
    let rows = if batch.targets_count == batch.padded_tokens {
        let logits = model.forward(&input, None);
        let vocab = logits.size()[2];
        logits.reshape([-1, vocab])
    } else {
        model.forward_rows(&input, &batch.positions)
    };
    rows.to_kind(Kind::Float)
}

/// The checks every constructor makes: devices, vocabulary sizes, and the teacher's tokenizer.
fn check_models(
    config: &TrainConfig,
    student: &ModelWithTokenizer,
    teacher: Option<&ModelWithTokenizer>,
) -> Result<()> {
    let device = setup::resolve_device(config)?;
    for (what, m) in std::iter::once(("student", student)).chain(teacher.map(|t| ("teacher", t))) {
        if m.model.vs.device() != device {
            return Err(Error::Config(format!(
                "the {what} is on {:?} but the run is on {device:?}",
                m.model.vs.device()
            )));
        }
    }
    let model_vocab = student.model.config.vocab_size() as usize;
    if student.tokenizer.vocab_size() > model_vocab {
        return Err(Error::Config(format!(
            "the tokenizer has {} ids but the model only {model_vocab} embeddings",
            student.tokenizer.vocab_size()
        )));
    }
    if let Some(t) = teacher {
        let (th, sh) = (t.tokenizer.vocab_hash(), student.tokenizer.vocab_hash());
        if th != sh {
            return Err(Error::VocabMismatch {
                what: format!("teacher model {}", t.model.source.display()),
                teacher: th.into(),
                student: sh.into(),
            });
        }
        if t.model.config.vocab_size() != student.model.config.vocab_size() {
            return Err(Error::Config(format!(
                "teacher logits have {} entries, student logits {}",
                t.model.config.vocab_size(),
                student.model.config.vocab_size()
            )));
        }
    }
    Ok(())
}

/// A caller-made sequence must fit the model: ids in the vocabulary, targets after `first_target`,
/// soft targets only where there are targets.
fn check_sequence(s: &Sequence, vocab: i64, max_len: usize) -> Result<()> {
    let bad = |reason: String| Err(Error::Config(format!("sequence `{}`: {reason}", s.id)));
    if s.is_empty() || s.len() > max_len {
        return bad(format!("length {} is not in 1..={max_len}", s.len()));
    }
    if s.targets.len() != s.len() || s.first_target >= s.len() {
        return bad("targets must match the input length and start inside it".into());
    }
    let in_vocab = |t: i64| (0..vocab).contains(&t);
    if !s.input_ids.iter().all(|&t| in_vocab(t)) || !s.targets[s.first_target..].iter().all(|&t| in_vocab(t))
    {
        return bad(format!("a token id is outside the vocabulary (0..{vocab})"));
    }
    if s.soft.len() > s.trained()
        || s.soft
            .iter()
            .flatten()
            .any(|&(id, lp)| !in_vocab(i64::from(id)) || !lp.is_finite())
    {
        return bad("soft targets must be finite, in the vocabulary, and no more than the targets".into());
    }
    Ok(())
}

/// The configuration as JSON, less what may change between a run and its resume.
fn fingerprint_config(config: &TrainConfig) -> serde_json::Value {
    let mut v = serde_json::to_value(config).expect("config serialises");
    if let Some(map) = v.as_object_mut() {
        for key in [
            "dataset",
            "val_dataset",
            "student_model",
            "teacher_model",
            "output_dir",
            "epochs",
            "max_steps",
            "save_every",
            "keep_checkpoints",
            "eval_every",
            "early_stopping_patience",
            "resume",
            "device",
            "max_bad_steps",
        ] {
            map.remove(key);
        }
    }
    v
}

/// The top-level keys whose values differ, for the resume error.
fn config_diff(a: &serde_json::Value, b: &serde_json::Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return "configuration".into();
    };
    let keys: Vec<&str> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .map(String::as_str)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if keys.is_empty() {
        "configuration".into()
    } else {
        keys.join(", ")
    }
}

/// Runs a whole configuration: load, prepare, train, write outputs.
pub fn train(
    config: TrainConfig,
    stop: &AtomicBool,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> Result<TrainSummary> {
    Trainer::from_config(config)?.run(stop, on_event)
}

/// Where a run's outputs go, relative to its output directory.
pub fn final_model_dir(output_dir: &Path) -> PathBuf {
    output_dir.join("final_model")
}
