//! The training loop and its step: micro-batches, losses, the optimizer step, evaluation and
//! when to checkpoint.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tch::{Kind, Tensor};

use super::batch::{Batch, DataPosition, collate, plan_epoch};
use super::checkpoint::Best;
use super::config::MixedPrecision;
use super::error::{Error, Result};
use super::events::{Outcome, TrainEvent, TrainSummary};
use super::loss::{self, SoftObjective};
use super::metrics::{EvalRecord, MetricsLog, Record, StepRecord};
use super::on_policy;
use super::optim::learning_rate;
use super::trainer::Trainer;
use crate::model::{CausalLm, ForwardInput};

/// Where the current session of a run stands (a resumed run starts a new session).
struct Session {
    started: Instant,
    start_step: u64,
    elapsed_before: f64,
    last_loss: Option<f64>,
    saved_at: Option<u64>,
    evaluated_at: Option<u64>,
}

impl Trainer {
    /// Runs to the end (or until `stop` is raised), reporting through `on_event`.
    pub fn run(&mut self, stop: &AtomicBool, on_event: &mut dyn FnMut(&TrainEvent)) -> Result<TrainSummary> {
        let _span = tracing::info_span!("train", output = %self.config.output_dir.display()).entered();
        let total = self.state.total_steps;
        let parameters = self.student.model.parameter_count();
        let device = format!("{:?}", self.device).to_lowercase();
        self.write_training_args(total, parameters, &device)?;
        let mut metrics = MetricsLog::open(&self.config.output_dir.join("metrics.jsonl"), self.resumed_from)?;
        on_event(&TrainEvent::Started {
            start_step: self.state.step,
            total_steps: total,
            train: self.train_stats.clone(),
            val: self.val_stats.clone(),
            parameters,
            device,
        });
        let mut session = Session {
            started: Instant::now(),
            start_step: self.state.step,
            elapsed_before: self.state.elapsed_seconds,
            last_loss: None,
            saved_at: self.resumed_from,
            evaluated_at: None,
        };
        let mut outcome = Outcome::Completed;
        while self.state.step < total {
            if stop.load(Ordering::Relaxed) {
                outcome = Outcome::Stopped;
                break;
            }
            if self.step_and_report(&mut session, &mut metrics, on_event)? == Outcome::EarlyStopped {
                tracing::info!(
                    step = self.state.step,
                    "early stopping: validation loss stopped improving"
                );
                outcome = Outcome::EarlyStopped;
                break;
            }
        }
        self.finish(outcome, &session, &mut metrics, on_event)
    }

    /// One step of the loop: the step, its record and event, the evaluation and checkpoint that
    /// fall due. Returns [`Outcome::EarlyStopped`] when the run should stop early.
    fn step_and_report(
        &mut self,
        session: &mut Session,
        metrics: &mut MetricsLog,
        on_event: &mut dyn FnMut(&TrainEvent),
    ) -> Result<Outcome> {
        let total = self.state.total_steps;
        let record = self.step()?;
        self.state.elapsed_seconds = session.elapsed_before + session.started.elapsed().as_secs_f64();
        let step = self.state.step;
        match record {
            Some(mut record) => {
                record.elapsed_seconds = self.state.elapsed_seconds;
                session.last_loss = Some(record.loss);
                metrics.push(Record::Step(record.clone()))?;
                let per_step = session.started.elapsed().as_secs_f64() / (step - session.start_step) as f64;
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
        let mut outcome = Outcome::Completed;
        let mut save_now = self.config.save_every > 0 && step.is_multiple_of(self.config.save_every);
        if !self.val.is_empty() && self.config.eval_every > 0 && step.is_multiple_of(self.config.eval_every) {
            let improved = self.evaluate_and_report(metrics, on_event)?;
            session.evaluated_at = Some(step);
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
            session.saved_at = Some(step);
        }
        Ok(outcome)
    }

    /// The end of a run: a last evaluation and checkpoint where due, the loss curve and, unless
    /// the run was stopped, the final model.
    fn finish(
        &mut self,
        outcome: Outcome,
        session: &Session,
        metrics: &mut MetricsLog,
        on_event: &mut dyn FnMut(&TrainEvent),
    ) -> Result<TrainSummary> {
        let step = self.state.step;
        if outcome == Outcome::Completed && !self.val.is_empty() && session.evaluated_at != Some(step) {
            self.evaluate_and_report(metrics, on_event)?;
        }
        if session.saved_at != Some(step) && step > 0 {
            self.save_checkpoint(on_event)?;
        }
        self.write_loss_curve(metrics)?;
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
            final_loss: session.last_loss,
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
        let epoch = self.state.position.epoch;
        let batches = self.next_group(step)?;
        // The student's own answers (on-policy batches) have no hard labels.
        let hard_total: usize = batches
            .iter()
            .filter(|b| !b.on_policy)
            .map(|b| b.targets_count)
            .sum();
        let soft_total: usize = batches.iter().map(|b| self.soft_rows(b)).sum();
        let tokens: usize = batches.iter().map(|b| b.tokens).sum();
        let lr = learning_rate(&self.config.optim, step, self.state.total_steps);
        let scale = self.state.scaler.scale;
        let (alpha, soft_on) = match self.objective {
            Some(_) if soft_total > 0 => (self.config.loss.alpha, true),
            _ => (0.0, false),
        };
        let (mut hard_sum, mut soft_sum, mut finite) = (0.0, 0.0, true);
        self.optimizer.zero_grad();
        for batch in &batches {
            let (hard, soft) = self.losses(batch)?;
            let hard_weight = if batch.on_policy {
                0.0
            } else {
                (1.0 - alpha) / hard_total as f64
            };
            let mut objective = &hard * hard_weight;
            if let (Some(soft), true) = (&soft, soft_on) {
                objective += soft * (alpha / soft_total as f64);
            }
            let h = hard.double_value(&[]);
            let s = soft.as_ref().map_or(0.0, |s| s.double_value(&[]));
            finite &= h.is_finite() && s.is_finite();
            hard_sum += if batch.on_policy { 0.0 } else { h };
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
            return self.skip_step(step, scale);
        }
        self.optimizer.step(lr);
        self.optimizer.zero_grad();
        self.state.scaler.update(true);
        self.state.bad_steps = 0;
        let hard_loss = if hard_total > 0 {
            hard_sum / hard_total as f64
        } else {
            0.0
        };
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
            on_policy_batches: batches.iter().filter(|b| b.on_policy).count() as u32,
            elapsed_seconds: 0.0,
        }))
    }

    /// The micro-batches of the next accumulation group (of step `step`), collated on the run's
    /// device; with on-policy distillation, a share of them answered by the student.
    fn next_group(&mut self, step: u64) -> Result<Vec<Batch>> {
        let accum = self.config.optim.grad_accum as usize;
        let mut group = Vec::with_capacity(accum);
        while group.len() < accum {
            match self.next_batch(!group.is_empty()) {
                Some(b) => group.push(b),
                None => break,
            }
        }
        let seed = self.config.seed;
        let mut batches = Vec::with_capacity(group.len());
        for (micro, indices) in group.iter().enumerate() {
            if on_policy::is_on_policy(seed, step, micro, self.config.on_policy) {
                let sample_seed = seed ^ step.rotate_left(20) ^ micro as u64;
                let sampled = self.sample_answers(indices, sample_seed)?;
                if !sampled.is_empty() {
                    let all: Vec<usize> = (0..sampled.len()).collect();
                    let mut batch = collate(&sampled, &all, self.pad, self.device);
                    batch.on_policy = true;
                    batches.push(batch);
                    continue;
                }
            }
            batches.push(collate(&self.train, indices, self.pad, self.device));
        }
        Ok(batches)
    }

    /// Drops the gradients of a step whose loss or gradient is not finite (step `step`, at loss
    /// scale `scale`); an error after `max_bad_steps` in a row.
    fn skip_step(&mut self, step: u64, scale: f64) -> Result<Option<StepRecord>> {
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
        Ok(None)
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

    /// Terms of a batch's soft loss: positions, or spans for the span likelihood.
    fn soft_rows(&self, batch: &Batch) -> usize {
        let spans = batch.spans.as_ref();
        match (&self.objective, &self.teacher) {
            (None, _) => 0,
            (Some(SoftObjective::Uld), _) => spans.map_or(0, |s| s.one_to_one),
            (Some(SoftObjective::SpanLikelihood), _) => spans.map_or(0, |s| s.count),
            (Some(SoftObjective::Divergence(_)), Some(_)) => batch.targets_count,
            (Some(SoftObjective::Divergence(_)), None) => batch.soft.as_ref().map_or(0, |s| s.count),
        }
    }

    /// The summed hard and soft losses of one batch (soft: `None` without soft targets).
    fn losses(&self, batch: &Batch) -> Result<(Tensor, Option<Tensor>)> {
        let fp16 = self.config.precision == MixedPrecision::Fp16;
        let rows = tch::autocast(fp16, || trained_rows(&self.student.model.model, batch));
        // One vocabulary-wide log-softmax serves the cross-entropy and the soft loss at T = 1.
        let logq = rows.log_softmax(-1, Kind::Float);
        let hard = loss::nll_sum(&logq, &batch.targets);
        let kind = match self.objective {
            None => return Ok((hard, None)),
            Some(SoftObjective::Divergence(kind)) => kind,
            Some(SoftObjective::Uld) => {
                let soft = (batch.spans.as_ref())
                    .map(|s| loss::uld_sum(&logq, &s.one_to_one_rows, &s.one_to_one_top));
                return Ok((hard, soft));
            }
            Some(SoftObjective::SpanLikelihood) => {
                let soft = (batch.spans.as_ref()).map(|s| {
                    loss::span_likelihood_sum(&logq, &batch.targets, &s.span_of_row, &s.teacher_logprob)
                });
                return Ok((hard, soft));
            }
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

    /// Evaluates, updates the best result and the early-stopping count, and records and reports
    /// the evaluation; returns whether it improved on the best.
    fn evaluate_and_report(
        &mut self,
        metrics: &mut MetricsLog,
        on_event: &mut dyn FnMut(&TrainEvent),
    ) -> Result<bool> {
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
        metrics.push(Record::Eval(record.clone()))?;
        on_event(&TrainEvent::Eval { record, improved });
        Ok(improved)
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
