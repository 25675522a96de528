//! Building a [`Trainer`]: the configuration is checked and its device resolved once, at the
//! edge ([`Resolved`]); then the data is tokenized, the models are checked against each other,
//! the optimizer is made, and a checkpoint is resumed when asked.

use std::collections::{BTreeMap, HashMap};

use tch::{Device, Tensor};

use super::batch::{BatchSettings, DataPosition, plan_epoch};
use super::checkpoint::{self as ckpt, Fingerprint, STATE_VERSION, TrainerState};
use super::config::{MixedPrecision, TrainConfig};
use super::data::{DataStats, Preparer, Sequence, SoftSource};
use super::error::{Error, Result};
use super::loss::SoftObjective;
use super::on_policy;
use super::optim::{AdamW, LossScaler};
use super::setup;
use super::trainer::{Parts, Trainer};
use crate::Pretrained;
use crate::model::init_like_transformers;

/// The teacher model with the student's vocabulary, the one with another, and the prompts the
/// latter reads.
type Teachers = (
    Option<Pretrained>,
    Option<Pretrained>,
    HashMap<String, Vec<distill_data::Message>>,
);

/// A configuration that has been checked, with the device it resolves to.
struct Resolved {
    config: TrainConfig,
    device: Device,
}

impl Resolved {
    fn new(config: TrainConfig) -> Result<Self> {
        config.validate()?;
        let device = resolve_device(&config)?;
        Ok(Self { config, device })
    }
}

/// The device a configuration asks for; refuses mixed precision off CUDA.
fn resolve_device(config: &TrainConfig) -> Result<Device> {
    let device = config.device.resolve()?;
    if device == Device::Cpu && config.precision != MixedPrecision::Fp32 {
        let precision = match config.precision {
            MixedPrecision::Fp16 => "f16",
            _ => "bf16",
        };
        return Err(Error::Config(format!(
            "{precision} mixed precision needs a CUDA device; this run is on the CPU (train in f32, or on a \
             CUDA device)"
        )));
    }
    Ok(device)
}

impl Trainer {
    /// Loads everything a configuration names and prepares the run (resuming when asked).
    pub fn from_config(config: TrainConfig) -> Result<Self> {
        let run = Resolved::new(config)?;
        let _span = tracing::info_span!("setup", output = %run.config.output_dir.display()).entered();
        let (train, val) = setup::read_dataset(&run.config)?;
        let student = setup::load_student(&run.config, run.device)?;
        let teacher = match &run.config.teacher_model {
            Some(path) => Some(setup::load_model(path, run.device)?),
            None => None,
        };
        let parts = Parts {
            student,
            teacher,
            train,
            val,
        };
        Self::prepare(run, parts)
    }

    /// Prepares a run from in-memory parts; `config`'s model and dataset paths only name things
    /// in messages and `training_args.json`.
    pub fn from_parts(config: TrainConfig, parts: Parts) -> Result<Self> {
        Self::prepare(Resolved::new(config)?, parts)
    }

    /// Prepares a run from sequences that are already tokenized (see [`Sequence`]); they are
    /// checked against the student's vocabulary and `max_seq_len`.
    pub fn from_sequences(
        config: TrainConfig,
        student: Pretrained,
        teacher: Option<Pretrained>,
        train: Vec<Sequence>,
        val: Vec<Sequence>,
    ) -> Result<Self> {
        let run = Resolved::new(config)?;
        check_models(&run, &student, teacher.as_ref())?;
        let vocab = student.model.config.vocab_size();
        for s in train.iter().chain(&val) {
            check_sequence(s, vocab, run.config.max_seq_len)?;
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
            soft_targets: seqs
                .iter()
                .flat_map(|s| &s.soft)
                .filter(|e| !e.is_empty())
                .count(),
            span_targets: seqs.iter().flat_map(|s| &s.spans).map(|s| s.len).sum(),
            // Prepared elsewhere: how their soft labels were made is not known here.
            cross_tokenizer_examples: 0,
        };
        let train_stats = stats(&train);
        let val_stats = (!val.is_empty()).then(|| stats(&val));
        let teachers = (teacher, None, HashMap::new());
        Self::assemble(run, student, teachers, (train, train_stats), (val, val_stats))
    }

    /// Tokenizes the examples of `parts` through the student's chat template.
    fn prepare(run: Resolved, parts: Parts) -> Result<Self> {
        let Parts {
            student,
            teacher,
            mut train,
            mut val,
        } = parts;
        // A teacher with another vocabulary scores the answers as text, once, up front.
        let foreign = teacher
            .as_ref()
            .is_some_and(|t| t.tokenizer.vocab_hash() != student.tokenizer.vocab_hash());
        let (teacher, foreign_teacher) = if foreign { (None, teacher) } else { (teacher, None) };
        check_models(&run, &student, teacher.as_ref())?;
        let config = &run.config;
        if let Some(t) = &foreign_teacher {
            if config.teacher_cache_top_k.is_some() {
                return Err(Error::Config(
                    "the teacher cache needs a teacher with the student's vocabulary; this one has another, so its scores are aligned on bytes instead".into(),
                ));
            }
            std::fs::create_dir_all(&config.output_dir).map_err(Error::io(&config.output_dir))?;
            let cache = config.output_dir.join("teacher_scores.jsonl");
            on_policy::relabel_cached(t, &mut train, &mut val, &cache)?;
        }
        if teacher.is_some() && config.loss.kind.is_vocabulary_free() {
            return Err(Error::Config(
                "`uld` and `alm` are for a teacher with another vocabulary; this teacher model shares the student's, so use `kl`, `rkl` or `jsd`".into(),
            ));
        }
        let prompts = if foreign_teacher.is_some() {
            on_policy::prompts_by_id(&train)
        } else {
            HashMap::new()
        };
        let soft_source = if config.loss.kind.needs_soft_labels() && teacher.is_none() {
            SoftSource::Dataset
        } else {
            SoftSource::None
        };
        let spans = config.loss.kind.is_vocabulary_free();
        let preparer = Preparer::new(&student.tokenizer, config.max_seq_len, soft_source)?.with_spans(spans);
        let (train_seqs, train_stats) = preparer.prepare(&train, &config.dataset)?;
        if train_seqs.is_empty() {
            return Err(Error::NoData(format!(
                "{}: no training examples left ({} read, {} with a prompt longer than the maximum sequence \
                 length {})",
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
            let val_preparer =
                Preparer::new(&student.tokenizer, config.max_seq_len, val_soft)?.with_spans(spans);
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
            run,
            student,
            (teacher, foreign_teacher, prompts),
            (train_seqs, train_stats),
            (val_seqs, val_stats),
        )
    }

    /// Everything after the data: the teacher cache, initialisation, precision, the optimizer,
    /// the state, and the resume.
    fn assemble(
        run: Resolved,
        mut student: Pretrained,
        (mut teacher, foreign_teacher, prompts): Teachers,
        (mut train_seqs, train_stats): (Vec<Sequence>, DataStats),
        (val_seqs, val_stats): (Vec<Sequence>, Option<DataStats>),
    ) -> Result<Self> {
        let Resolved { config, device } = run;
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
            init_like_transformers(&student.model.vs, &student.model.config, 0.02);
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
            fingerprint: Fingerprint::new(&config, &train_seqs),
        };
        let mut trainer = Self {
            objective: SoftObjective::from_config(&config.loss),
            config,
            device,
            student,
            teacher,
            foreign_teacher,
            prompts,
            train: train_seqs,
            train_stats,
            val: val_seqs,
            val_stats,
            optimizer,
            state,
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

    /// Restores the newest checkpoint, if there is one (see [`ckpt::load_resumable`]).
    fn resume(&mut self) -> Result<()> {
        let root = self.checkpoints_dir();
        let Some((newest, loaded)) = ckpt::load_resumable(&root, &self.state.fingerprint)? else {
            tracing::info!(dir = %root.display(), "resume asked for, but there is no checkpoint yet; starting from the beginning");
            return Ok(());
        };
        let mut saved = loaded.state;
        let unfit = |source| Error::CheckpointTensors {
            path: newest.path.clone(),
            source,
        };
        self.optimizer.load_values(&loaded.weights).map_err(unfit)?;
        self.optimizer
            .load_state(&loaded.optimizer, saved.step)
            .map_err(unfit)?;
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
}

/// The checks every constructor makes: devices, vocabulary sizes, and the teacher's tokenizer.
fn check_models(run: &Resolved, student: &Pretrained, teacher: Option<&Pretrained>) -> Result<()> {
    for (what, m) in std::iter::once(("student", student)).chain(teacher.map(|t| ("teacher", t))) {
        if m.model.vs.device() != run.device {
            return Err(Error::Config(format!(
                "the {what} is on {:?} but the run is on {:?}",
                m.model.vs.device(),
                run.device
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
    let mut next = 0;
    for span in &s.spans {
        let probabilities = span.teacher_top.iter().all(|p| (0.0..=1.0).contains(p));
        if span.len == 0 || span.start < next || span.start + span.len > s.trained() || !probabilities {
            return bad("spans must be non-empty, in order, apart, and within the targets, with probabilities in 0..=1".into());
        }
        if span.teacher_logprob.is_nan() || span.teacher_logprob > 0.0 {
            return bad(format!(
                "a span's teacher log-probability must be ≤ 0, got {}",
                span.teacher_logprob
            ));
        }
        next = span.start + span.len;
    }
    Ok(())
}
