//! `distill train`: flags → `TrainConfig`, progress bar from the trainer's events, Ctrl-C → stop flag.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, bail};
use distill::student::train::{
    self, DeviceChoice, KeepLayers, LossKind, LrSchedule, MixedPrecision, Outcome, TopKMode, TrainConfig,
    TrainEvent,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Train a student on a distillation dataset.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dataset (JSONL, any distill encoding); `split: val` examples validate, `test` ones are skipped.
    #[arg(long, alias = "dataset_path")]
    dataset: PathBuf,
    /// Extra validation data.
    #[arg(long)]
    val_dataset: Option<PathBuf>,
    /// The student (or the model to cut it from): an HF directory or a .gguf file.
    #[arg(long, alias = "student_model")]
    student_model: PathBuf,
    /// Where checkpoints, metrics and final_model/ go.
    #[arg(long, alias = "output_dir")]
    output_dir: PathBuf,
    /// Keep N evenly spaced layers of the student model, or the layers i,j,k.
    #[arg(long)]
    keep_layers: Option<KeepLayers>,
    /// Re-initialise the student's weights (from --seed) instead of using the checkpoint's.
    #[arg(long)]
    reinit: bool,
    /// A local teacher model (.gguf or HF directory). With the student's tokenizer it gives
    /// full-vocabulary soft labels online; with another it scores the answers as text and its
    /// top-20 are aligned with the student's tokens on bytes.
    #[arg(long)]
    teacher_model: Option<PathBuf>,
    /// On-policy distillation (GKD): the share of batches the student answers itself, for the
    /// teacher model to score (0 to 1; 1 = every batch). Those batches have soft labels only.
    #[arg(long, value_name = "LAMBDA", default_value_t = 0.0)]
    on_policy: f64,
    /// Most tokens the student samples per on-policy answer.
    #[arg(long, default_value_t = 128)]
    on_policy_max_new_tokens: usize,
    /// Sampling temperature of on-policy answers.
    #[arg(long, default_value_t = 1.0)]
    on_policy_temperature: f64,
    /// With --teacher-model: run the teacher once and train from its top K log-probabilities.
    #[arg(long, value_name = "K")]
    teacher_cache_top_k: Option<usize>,
    /// The loss (default: kl with --teacher-model, else ce). With a dataset from a teacher with
    /// another tokenizer, kl/rkl/jsd/skl/srkl compare the top-k alternatives the student can spell
    /// where both tokenize a stretch alike; uld and alm need no shared vocabulary.
    #[arg(long, value_enum)]
    loss: Option<LossKind>,
    /// Weight of the soft loss; the hard loss gets 1 - alpha.
    #[arg(long, default_value_t = 0.5)]
    alpha: f64,
    /// Softmax temperature of the soft loss (scaled by T²).
    #[arg(long, default_value_t = 1.0)]
    temperature: f64,
    /// β of the generalized JSD.
    #[arg(long, default_value_t = 0.5)]
    jsd_beta: f64,
    /// Skew of the skew KLs.
    #[arg(long, default_value_t = 0.1)]
    skew: f64,
    /// How stored top-k logprobs are compared.
    #[arg(long, value_enum, default_value = "rest")]
    top_k_mode: TopKMode,
    /// Passes over the data (ignored with --max-steps).
    #[arg(long, default_value_t = 1)]
    epochs: u32,
    /// Optimizer steps to run.
    #[arg(long)]
    max_steps: Option<u64>,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Padded tokens per micro-batch (at most).
    #[arg(long)]
    max_batch_tokens: Option<usize>,
    /// Sort by length within windows of this many batches (0: random batches).
    #[arg(long, default_value_t = 32)]
    bucket_window: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: u32,
    /// Longest input in tokens; longer examples are cut.
    #[arg(long, default_value_t = 512)]
    max_seq_len: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f64,
    /// AdamW weight decay (matrices only).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    /// Learning-rate decay after warm-up.
    #[arg(long, value_enum, default_value = "linear")]
    schedule: LrSchedule,
    /// Clip the gradient norm to this (0: off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Save a checkpoint every S steps (0: only at the end).
    #[arg(long, default_value_t = 500)]
    save_every: u64,
    /// Checkpoints to keep (plus the best).
    #[arg(long, default_value_t = 3)]
    keep_checkpoints: usize,
    /// Evaluate every S steps (0: only at the end).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Stop after this many evaluations without improvement.
    #[arg(long)]
    early_stopping_patience: Option<u32>,
    /// Seed of the data order and of --reinit.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Continue from the newest checkpoint in --output-dir.
    #[arg(long)]
    resume: bool,
    /// Where to train.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
    /// f16 autocast with dynamic loss scaling (CUDA only).
    #[arg(long, conflicts_with = "bf16")]
    fp16: bool,
    /// bf16 passes with f32 master weights (CUDA only).
    #[arg(long)]
    bf16: bool,
    /// Abort after this many consecutive non-finite steps.
    #[arg(long, default_value_t = 5)]
    max_bad_steps: u32,
    /// libtorch CPU threads (default: libtorch's choice).
    #[arg(long)]
    threads: Option<i32>,
}

impl Args {
    fn config(&self) -> TrainConfig {
        let mut c = TrainConfig::new(&self.dataset, &self.student_model, &self.output_dir);
        c.val_dataset = self.val_dataset.clone();
        c.keep_layers = self.keep_layers.clone();
        c.reinit = self.reinit;
        c.teacher_model = self.teacher_model.clone();
        c.teacher_cache_top_k = self.teacher_cache_top_k;
        c.loss.kind = self
            .loss
            .unwrap_or(LossKind::default_for(self.teacher_model.is_some()));
        c.on_policy = self.on_policy;
        c.on_policy_max_new_tokens = self.on_policy_max_new_tokens;
        c.on_policy_temperature = self.on_policy_temperature;
        c.loss.alpha = self.alpha;
        c.loss.temperature = self.temperature;
        c.loss.jsd_beta = self.jsd_beta;
        c.loss.skew = self.skew;
        c.loss.top_k = self.top_k_mode;
        c.optim.lr = self.lr;
        c.optim.weight_decay = self.weight_decay;
        c.optim.warmup_steps = self.warmup_steps;
        c.optim.schedule = self.schedule;
        c.optim.max_grad_norm = self.max_grad_norm;
        c.optim.grad_accum = self.grad_accum;
        c.epochs = self.epochs;
        c.max_steps = self.max_steps;
        c.batch_size = self.batch_size;
        c.max_batch_tokens = self.max_batch_tokens;
        c.bucket_window = self.bucket_window;
        c.max_seq_len = self.max_seq_len;
        c.save_every = self.save_every;
        c.keep_checkpoints = self.keep_checkpoints;
        c.eval_every = self.eval_every;
        c.early_stopping_patience = self.early_stopping_patience;
        c.seed = self.seed;
        c.resume = self.resume;
        c.device = self.device;
        c.precision = match (self.fp16, self.bf16) {
            (true, _) => MixedPrecision::Fp16,
            (_, true) => MixedPrecision::Bf16,
            _ => MixedPrecision::Fp32,
        };
        c.max_bad_steps = self.max_bad_steps;
        c
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    // Before the trainer allocates: about 15% of a CPU step (see its docs).
    distill::student::alloc::keep_freed_memory();
    if let Some(n) = args.threads {
        if n < 1 {
            bail!("--threads must be at least 1");
        }
        distill::student::tch::set_num_threads(n);
    }
    if (args.fp16 || args.bf16) && !distill::student::tch::Cuda::is_available() {
        let flag = if args.fp16 { "--fp16" } else { "--bf16" };
        bail!(
            "{flag} trains in mixed precision on a CUDA device, and this libtorch sees no CUDA \
             device; leave {flag} out to train in f32 on the CPU"
        );
    }
    let config = args.config();
    // First Ctrl-C: finish the step, checkpoint, stop. Second: exit at once.
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(signal_hook::consts::SIGINT, 130, Arc::clone(&stop))
        .context("installing the Ctrl-C handler")?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))
        .context("installing the Ctrl-C handler")?;

    let spinner = ProgressBar::new_spinner().with_message("loading model and data");
    spinner.enable_steady_tick(Duration::from_millis(120));
    let mut trainer = train::Trainer::from_config(config).context("setting up training")?;
    spinner.finish_and_clear();

    let bar = ProgressBar::hidden();
    let mut on_event = |event: &TrainEvent| match event {
        TrainEvent::Started {
            start_step,
            total_steps,
            train,
            val,
            parameters,
            device,
        } => {
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar.set_length(*total_steps);
            bar.set_position(*start_step);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} steps  {msg}  ETA {eta}")
                    .expect("valid template"),
            );
            let val = val.as_ref().map_or(0, |v| v.sequences);
            crate::progress::say(
                &bar,
                format!(
                    "training {:.1}M parameters on {device}: {} examples ({} truncated, {} dropped), {} validation",
                    *parameters as f64 / 1e6,
                    train.sequences,
                    train.truncated,
                    train.dropped_long_prompt,
                    val
                ),
            );
            if train.soft_targets > 0 || train.span_targets > 0 {
                let share = |n: usize| 100.0 * n as f64 / train.target_tokens.max(1) as f64;
                let mut line = format!(
                    "soft labels on {} of {} target tokens ({:.1} %)",
                    train.soft_targets,
                    train.target_tokens,
                    share(train.soft_targets)
                );
                if train.span_targets > 0 {
                    line += &format!(
                        ", teacher spans on {} ({:.1} %)",
                        train.span_targets,
                        share(train.span_targets)
                    );
                }
                if train.cross_tokenizer_examples > 0 {
                    line += &format!(
                        "; {} examples from another tokenizer, aligned on bytes",
                        train.cross_tokenizer_examples
                    );
                }
                crate::progress::say(&bar, line);
            }
            if *start_step > 0 {
                crate::progress::say(&bar, format!("resumed at step {start_step}"));
            }
        }
        TrainEvent::Step { record, .. } => {
            bar.set_position(record.step);
            let soft = record
                .soft_loss
                .map(|s| format!(" (ce {:.3}, soft {s:.3})", record.hard_loss));
            bar.set_message(format!(
                "loss {:.4}{}  lr {:.2e}  {:.0} tok/s",
                record.loss,
                soft.unwrap_or_default(),
                record.lr,
                record.tokens_per_second
            ));
        }
        TrainEvent::Skipped { step, consecutive } => {
            crate::progress::say(
                &bar,
                format!("step {step}: non-finite loss or gradient, skipped ({consecutive} in a row)"),
            );
        }
        TrainEvent::Eval { record, improved } => crate::progress::say(
            &bar,
            format!(
                "step {}: validation loss {:.4}{}",
                record.step,
                record.val_loss,
                if *improved { " (best)" } else { "" }
            ),
        ),
        TrainEvent::Checkpoint { path, .. } => {
            crate::progress::say(&bar, format!("checkpoint {}", path.display()))
        }
        TrainEvent::Finished(_) => bar.finish_and_clear(),
        _ => {}
    };
    let summary = trainer.run(&stop, &mut on_event)?;
    match summary.outcome {
        Outcome::Stopped => {
            let at = summary
                .last_checkpoint
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            bail!(
                "interrupted at step {} (checkpoint {at}); continue with the same command and --resume",
                summary.steps
            )
        }
        outcome => {
            println!(
                "{} after {} steps, {} tokens in {:.0} s; final loss {}",
                if outcome == Outcome::EarlyStopped {
                    "stopped early"
                } else {
                    "done"
                },
                summary.steps,
                summary.tokens_seen,
                summary.elapsed_seconds,
                summary.final_loss.map_or("-".into(), |l| format!("{l:.4}"))
            );
            if let Some(best) = summary.best {
                println!("best validation loss {:.4} at step {}", best.val_loss, best.step);
            }
            if let Some(dir) = summary.final_model {
                println!("model: {}", dir.display());
            }
            Ok(())
        }
    }
}
