//! Typed training configuration. The CLI maps its flags onto [`TrainConfig`]; the trainer writes it
//! to `training_args.json`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::error::{Error, Result};

/// Which objective to train on.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LossKind {
    /// Hard labels only: cross-entropy on the teacher's response tokens.
    #[default]
    Ce,
    /// Forward KL, KL(teacher ‖ student) (Hinton et al., 2015).
    Kl,
    /// Reverse KL, KL(student ‖ teacher) (MiniLLM, Gu et al., 2024).
    Rkl,
    /// Generalized Jensen–Shannon divergence with weight `jsd_beta` (GKD, Agarwal et al., 2024).
    Jsd,
    /// Skew forward KL, KL(p ‖ a·p + (1−a)·q) with `skew` = a (DistiLLM, Ko et al., 2024).
    Skl,
    /// Skew reverse KL, KL(q ‖ a·q + (1−a)·p) with `skew` = a (DistiLLM).
    Srkl,
    /// Universal logit distillation: the L1 distance between the teacher's and the student's
    /// sorted top-k probabilities (Boizard et al., 2024). Vocabulary-free, for a teacher with
    /// another tokenizer; compared where one teacher token and one student token spell the same
    /// bytes. Needs the dataset's logprobs.
    Uld,
    /// Approximate likelihood matching: the binary KL between the teacher's and the student's
    /// probabilities of every span where both tokenizations cut the text (Minixhofer et al.,
    /// 2025). Vocabulary-free and covers every response token. Needs the dataset's logprobs.
    Alm,
}

impl LossKind {
    /// The objective when none is asked for: forward KL when a teacher model runs beside the
    /// student, else cross-entropy (a dataset's stored top-k alone does not switch it).
    pub fn default_for(has_teacher_model: bool) -> Self {
        if has_teacher_model {
            LossKind::Kl
        } else {
            LossKind::Ce
        }
    }

    /// Whether the objective needs teacher probabilities (soft labels).
    pub fn needs_soft_labels(self) -> bool {
        self != LossKind::Ce
    }

    /// Whether the objective compares probabilities without a shared vocabulary (ULD, ALM).
    pub fn is_vocabulary_free(self) -> bool {
        matches!(self, LossKind::Uld | LossKind::Alm)
    }
}

/// How stored top-k teacher log-probabilities become a distribution.
///
/// Both sides are compared on the same buckets, so every divergence stays a divergence between
/// two proper distributions.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopKMode {
    /// The k tokens plus one "rest" bucket holding the remaining mass (teacher: 1 − Σ top-k;
    /// student: its exact mass outside the k tokens). The default: the student learns how much
    /// mass to keep in the tail, instead of being pushed to put all of it on the top k, which is
    /// the bias of renormalised top-k targets described by Anshumann et al., "Sparse Logit
    /// Sampling: Accelerating Knowledge Distillation in LLMs" (ACL 2025).
    #[default]
    #[cfg_attr(feature = "clap", value(name = "rest"))]
    RestBucket,
    /// Teacher and student both renormalised over the k tokens (the tail is ignored).
    Renormalize,
}

/// The loss: `total = (1 − alpha)·CE + alpha·T²·D(teacher, student)` for soft objectives,
/// `total = CE` for [`LossKind::Ce`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossConfig {
    /// The objective.
    pub kind: LossKind,
    /// Weight of the soft term (0..=1); the hard term gets `1 − alpha`.
    pub alpha: f64,
    /// Softmax temperature of both distributions in the soft term (> 0); the term is scaled by T².
    pub temperature: f64,
    /// Mixture weight β of the generalized JSD (0 < β < 1).
    pub jsd_beta: f64,
    /// Skew a of the skew KLs (0 ≤ a < 1); DistiLLM uses 0.1.
    pub skew: f64,
    /// How stored top-k targets are compared.
    pub top_k: TopKMode,
}

impl Default for LossConfig {
    fn default() -> Self {
        Self {
            kind: LossKind::Ce,
            alpha: 0.5,
            temperature: 1.0,
            jsd_beta: 0.5,
            skew: 0.1,
            top_k: TopKMode::RestBucket,
        }
    }
}

/// The learning-rate schedule after warm-up.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LrSchedule {
    /// Constant.
    Constant,
    /// Linear decay to 0 at the last step (transformers' default).
    #[default]
    Linear,
    /// Half-cosine decay to 0 at the last step.
    Cosine,
}

/// AdamW and its schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Decoupled weight decay, applied to matrices only (not to norms, biases or embeddings).
    pub weight_decay: f64,
    /// Adam β1.
    pub beta1: f64,
    /// Adam β2.
    pub beta2: f64,
    /// Adam ε.
    pub eps: f64,
    /// Steps of linear warm-up from 0.
    pub warmup_steps: u64,
    /// Decay after warm-up.
    pub schedule: LrSchedule,
    /// Clip the global gradient norm to this (0 = no clipping).
    pub max_grad_norm: f64,
    /// Micro-batches per optimizer step.
    pub grad_accum: u32,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            weight_decay: 0.01,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            warmup_steps: 0,
            schedule: LrSchedule::Linear,
            max_grad_norm: 1.0,
            grad_accum: 1,
        }
    }
}

/// Where to run a model: to train it, or to decode with it.
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when available, else the CPU.
    #[default]
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA device (an error when there is none).
    Cuda,
}

impl DeviceChoice {
    /// The libtorch device; an error when CUDA is asked for and this libtorch sees none.
    pub fn resolve(self) -> Result<tch::Device> {
        match self {
            Self::Auto => Ok(tch::Device::cuda_if_available()),
            Self::Cpu => Ok(tch::Device::Cpu),
            Self::Cuda if tch::Cuda::is_available() => Ok(tch::Device::Cuda(0)),
            Self::Cuda => Err(Error::Config(
                "CUDA was asked for, but this libtorch sees no CUDA device".into(),
            )),
        }
    }
}

/// Arithmetic precision of the forward and backward passes. Weights, optimizer state and
/// checkpoints stay f32 in every mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MixedPrecision {
    /// f32 throughout.
    #[default]
    Fp32,
    /// CUDA only: autocast to f16 with dynamic loss scaling.
    Fp16,
    /// CUDA only: bf16 weights and activations for the passes, f32 master weights for the update
    /// (tch 0.24 cannot switch autocast's CUDA dtype to bf16).
    Bf16,
}

/// Which teacher layers make up the student.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeepLayers {
    /// This many layers, evenly spaced from the first (30 → 6 keeps 0, 5, …, 25).
    Count(usize),
    /// These layers, in this order.
    Indices(Vec<usize>),
}

impl std::str::FromStr for KeepLayers {
    type Err = String;

    /// `6` keeps six evenly spaced layers; `0,5,10` keeps those layers.
    fn from_str(s: &str) -> Result<Self, String> {
        let parse = |p: &str| {
            p.trim()
                .parse::<usize>()
                .map_err(|_| format!("`{p}` is not a layer number (expected N or i,j,k)"))
        };
        if s.contains(',') {
            let indices = s.split(',').map(parse).collect::<Result<Vec<_>, _>>()?;
            Ok(KeepLayers::Indices(indices))
        } else {
            Ok(KeepLayers::Count(parse(s)?))
        }
    }
}

/// Everything a training run needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Training data (any distill-data encoding). Examples whose split is `val` are used for
    /// validation; `test` examples are left out.
    pub dataset: PathBuf,
    /// Validation data (all of its examples), in addition to the `val` split of `dataset`.
    pub val_dataset: Option<PathBuf>,
    /// The student: an HF directory or a `.gguf` file.
    pub student_model: PathBuf,
    /// Keep only these layers of `student_model`.
    pub keep_layers: Option<KeepLayers>,
    /// Re-initialise the student's weights as transformers does (from `seed`) instead of
    /// starting from the checkpoint's. The draws come from libtorch's one global generator:
    /// two trainers re-initialising at once in one process change each other's weights.
    pub reinit: bool,
    /// A local teacher (same tokenizer) giving full-vocabulary logits online. Without it, soft
    /// labels come from the dataset's top-k logprobs.
    pub teacher_model: Option<PathBuf>,
    /// With `teacher_model`: run the teacher once over the training data and train from its top
    /// `k` log-probabilities, kept in `output_dir/teacher_topk.safetensors`.
    pub teacher_cache_top_k: Option<usize>,
    /// On-policy distillation (GKD): the share λ of micro-batches whose responses the student
    /// samples itself, for the teacher model to score (0 = off, 1 = every batch).
    pub on_policy: f64,
    /// Most tokens the student samples per on-policy response.
    pub on_policy_max_new_tokens: usize,
    /// Sampling temperature of on-policy responses.
    pub on_policy_temperature: f64,
    /// Where checkpoints, metrics and the final model go.
    pub output_dir: PathBuf,
    /// The objective.
    pub loss: LossConfig,
    /// The optimizer.
    pub optim: OptimConfig,
    /// Passes over the training data (used when `max_steps` is not set).
    pub epochs: u32,
    /// Optimizer steps to run; overrides `epochs`.
    pub max_steps: Option<u64>,
    /// Examples per micro-batch (at most).
    pub batch_size: usize,
    /// Padded tokens per micro-batch (at most); batches of short examples then hold fewer
    /// examples than `batch_size` would allow… never more.
    pub max_batch_tokens: Option<usize>,
    /// Longest input in tokens; longer examples are cut at the end of the response.
    pub max_seq_len: usize,
    /// Length bucketing: examples are shuffled, then sorted by length within windows of this many
    /// batches, so that a batch holds similar lengths. 0 = no sorting (random batches).
    pub bucket_window: usize,
    /// Save a checkpoint every this many steps (0 = only at the end).
    pub save_every: u64,
    /// Checkpoints to keep (the best one is kept in addition).
    pub keep_checkpoints: usize,
    /// Evaluate on the validation data every this many steps (0 = only at the end).
    pub eval_every: u64,
    /// Stop when the validation loss has not improved for this many evaluations.
    pub early_stopping_patience: Option<u32>,
    /// Seed of the data order (and of the initialisation with `reinit`).
    pub seed: u64,
    /// Continue from the newest checkpoint in `output_dir/checkpoints`.
    pub resume: bool,
    /// Where to run.
    pub device: DeviceChoice,
    /// Arithmetic precision.
    pub precision: MixedPrecision,
    /// Abort after this many consecutive steps with a non-finite loss or gradient.
    pub max_bad_steps: u32,
}

impl TrainConfig {
    /// A configuration with the defaults for everything but the three required paths.
    pub fn new(
        dataset: impl Into<PathBuf>,
        student_model: impl Into<PathBuf>,
        output_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            dataset: dataset.into(),
            val_dataset: None,
            student_model: student_model.into(),
            keep_layers: None,
            reinit: false,
            teacher_model: None,
            teacher_cache_top_k: None,
            on_policy: 0.0,
            on_policy_max_new_tokens: 128,
            on_policy_temperature: 1.0,
            output_dir: output_dir.into(),
            loss: LossConfig::default(),
            optim: OptimConfig::default(),
            epochs: 1,
            max_steps: None,
            batch_size: 8,
            max_batch_tokens: None,
            max_seq_len: 512,
            bucket_window: 32,
            save_every: 500,
            keep_checkpoints: 3,
            eval_every: 0,
            early_stopping_patience: None,
            seed: 42,
            resume: false,
            device: DeviceChoice::Auto,
            precision: MixedPrecision::Fp32,
            max_bad_steps: 5,
        }
    }

    /// Checks values and combinations that cannot work, before anything is loaded.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let l = &self.loss;
        if !(0.0..=1.0).contains(&l.alpha) {
            return bad(format!("alpha must be in 0..=1, got {}", l.alpha));
        }
        if !(l.temperature > 0.0 && l.temperature.is_finite()) {
            return bad(format!("temperature must be positive, got {}", l.temperature));
        }
        if !(l.jsd_beta > 0.0 && l.jsd_beta < 1.0) {
            return bad(format!(
                "jsd beta must be strictly between 0 and 1, got {}",
                l.jsd_beta
            ));
        }
        if !(0.0..1.0).contains(&l.skew) {
            return bad(format!("skew must be in 0..1, got {}", l.skew));
        }
        let o = &self.optim;
        if !(o.lr > 0.0 && o.lr.is_finite()) {
            return bad(format!("learning rate must be positive, got {}", o.lr));
        }
        if o.weight_decay < 0.0
            || !(0.0..1.0).contains(&o.beta1)
            || !(0.0..1.0).contains(&o.beta2)
            || o.eps <= 0.0
        {
            return bad("weight decay must be ≥ 0, betas in 0..1 and eps > 0".into());
        }
        if o.grad_accum == 0 {
            return bad("gradient accumulation must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1".into());
        }
        if self.max_seq_len < 2 {
            return bad(format!(
                "max sequence length must be at least 2, got {}",
                self.max_seq_len
            ));
        }
        if let Some(t) = self.max_batch_tokens
            && t < self.max_seq_len
        {
            return bad(format!(
                "max batch tokens ({t}) is smaller than max sequence length ({}): a long example would not fit",
                self.max_seq_len
            ));
        }
        if self.max_steps == Some(0) || (self.max_steps.is_none() && self.epochs == 0) {
            return bad("nothing to do: max steps or epochs is 0".into());
        }
        if self.teacher_cache_top_k.is_some() && self.teacher_model.is_none() {
            return bad("the teacher cache needs a teacher model".into());
        }
        if self.teacher_cache_top_k == Some(0) {
            return bad("the teacher cache needs k ≥ 1".into());
        }
        if self.teacher_model.is_some() && !l.kind.needs_soft_labels() {
            return bad("a teacher model was given but the loss is `ce`, which does not use it".into());
        }
        if l.kind.is_vocabulary_free() && l.temperature != 1.0 {
            return bad(format!(
                "`uld` and `alm` compare probabilities at temperature 1, got temperature {}",
                l.temperature
            ));
        }
        if !(0.0..=1.0).contains(&self.on_policy) {
            return bad(format!(
                "the on-policy share must be in 0..=1, got {}",
                self.on_policy
            ));
        }
        if self.on_policy > 0.0 {
            if self.teacher_model.is_none() || self.teacher_cache_top_k.is_some() {
                return bad("on-policy distillation needs a teacher model to score the student's samples (and no teacher cache)".into());
            }
            if !l.kind.needs_soft_labels() {
                return bad(
                    "on-policy distillation trains on the teacher's probabilities; the loss `ce` has none"
                        .into(),
                );
            }
            if self.on_policy_max_new_tokens == 0
                || self.on_policy_temperature.is_nan()
                || self.on_policy_temperature < 0.0
            {
                return bad("on-policy responses need at least one new token and a temperature ≥ 0".into());
            }
        }
        Ok(())
    }
}
