//! Checkpoint I/O: GGUF files and Hugging Face directories (config.json + safetensors).

pub mod gguf;
pub mod gguf_export;
pub mod hf;
pub mod hub;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor, nn};

use crate::error::{Error, Result};
use distill_kernels::quant::BlockFormat;

use crate::model::llama::{Elements, NamedWeight, StoredMatrix};
use crate::model::{
    CausalLm, CpuLlama, Gemma3, Gemma3Config, Gpt2, Gpt2Config, Llama, LlamaConfig, ModelConfig, Precision,
};

/// The weight format a model generates from (`--dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InferenceDtype {
    /// 32-bit floats.
    #[default]
    F32,
    /// IEEE half precision (widened to f32 in registers on the CPU).
    F16,
    /// bfloat16 (likewise).
    Bf16,
    /// ggml's Q8_0 blocks, on the CPU: quantized at load unless stored so.
    Q8_0,
    /// As the checkpoint stores it: a GGUF's quantized blocks as they are (on the CPU), or
    /// its float precision; an HF directory's `torch_dtype`.
    Native,
}

impl std::fmt::Display for InferenceDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InferenceDtype::F32 => "f32",
            InferenceDtype::F16 => "f16",
            InferenceDtype::Bf16 => "bf16",
            InferenceDtype::Q8_0 => "q8_0",
            InferenceDtype::Native => "native",
        })
    }
}

/// A model with its variables and configuration.
#[derive(Debug)]
pub struct LoadedModel {
    /// The variables (weights) of `model`.
    pub vs: nn::VarStore,
    /// The network.
    pub model: CausalLm,
    /// Its configuration, as an HF `config.json` would hold it.
    pub config: ModelConfig,
    /// Where it was loaded from.
    pub source: PathBuf,
}

impl LoadedModel {
    /// Builds a Llama with `config` on `device`, its weights zero (norms one), ready to be loaded.
    pub fn new_llama(config: LlamaConfig, device: Device, source: PathBuf) -> Result<Self> {
        config.validate().map_err(|reason| Error::Config {
            path: source.clone(),
            reason,
        })?;
        let vs = nn::VarStore::new(device);
        let model = CausalLm::Llama(Llama::new(&vs.root(), &config));
        let config = ModelConfig::Llama(config);
        Ok(Self {
            vs,
            model,
            config,
            source,
        })
    }

    /// Builds a GPT-2 with `config` on `device`, its weights zero (norms one), ready to be loaded.
    pub fn new_gpt2(config: Gpt2Config, device: Device, source: PathBuf) -> Result<Self> {
        config.validate().map_err(|reason| Error::Config {
            path: source.clone(),
            reason,
        })?;
        let vs = nn::VarStore::new(device);
        let model = CausalLm::Gpt2(Gpt2::new(&vs.root(), &config));
        Ok(Self {
            vs,
            model,
            config: ModelConfig::Gpt2(config),
            source,
        })
    }

    /// Builds a Gemma 3 with `config` on `device`, its weights zero (so its norms at identity),
    /// ready to be loaded.
    pub fn new_gemma3(config: Gemma3Config, device: Device, source: PathBuf) -> Result<Self> {
        config.validate().map_err(|reason| Error::Config {
            path: source.clone(),
            reason,
        })?;
        let vs = nn::VarStore::new(device);
        let model = CausalLm::Gemma3(Gemma3::new(&vs.root(), &config));
        Ok(Self {
            vs,
            model,
            config: ModelConfig::Gemma3(config),
            source,
        })
    }

    /// The Llama configuration, or an error naming the operation that needs one.
    pub fn llama_config(&self, operation: &str) -> Result<&LlamaConfig> {
        self.config
            .as_llama()
            .ok_or_else(|| Error::Unsupported(format!("{operation} supports Llama-family models only")))
    }

    /// Loads a checkpoint: a `.gguf` file, or an HF directory.
    pub fn load(path: impl AsRef<Path>, device: Device) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            hf::load_dir(path, device)
        } else {
            gguf::load_gguf(path, device)
        }
    }

    /// Readies the weights for generation: casts them to `precision` and, on a CPU, lays them
    /// out for decoding one sequence, a chain of memory-bound matrix-vector products. A Llama,
    /// in every precision, and a GPT-2 in f32 decode on the model's own kernels
    /// (`model::decode`, 16-bit weights widened to f32 in registers), which stream each
    /// output's weights front to back: a Llama's `[out, in]` matrices already are, and its
    /// projections that read the same input are fused ([`CausalLm::fuse_projections`]);
    /// GPT-2's `[in, out]` Conv1D weights are stored column-major. A 16-bit GPT-2 decodes on
    /// libtorch, which reads a row-major `Wᵀ` at about half the bandwidth of a column-major
    /// one (docs/benchmarks.md), so its matrices applied as `x · Wᵀ` are stored column-major.
    /// Names, shapes, values and saved files are unchanged; only the strides differ.
    pub fn prepare_for_generation(&mut self, precision: Precision) {
        if let CausalLm::CpuLlama(_) = self.model {
            return;
        }
        if precision.kind() != Kind::Float {
            self.vs.set_kind(precision.kind());
        }
        if self.vs.device() != Device::Cpu {
            return;
        }
        // Gemma 3 decodes on libtorch in every precision, so its matrices go column-major.
        let own_kernels = matches!(self.model, CausalLm::Llama(_))
            || (precision == Precision::F32 && matches!(self.model, CausalLm::Gpt2(_)));
        if own_kernels {
            match &mut self.model {
                CausalLm::Llama(m) => m.fuse_projections(false),
                CausalLm::Gpt2(m) => m.store_projections_for_decoding(),
                CausalLm::CpuLlama(_) | CausalLm::Gemma3(_) => {}
            }
            return;
        }
        // Fusing writes its stacked matrices column-major already; the loop skips those views.
        self.model.fuse_projections(true);
        let _guard = tch::no_grad_guard();
        for (name, mut var) in self.vs.variables() {
            let row_major_matrix = var.dim() == 2 && var.stride()[0] != 1;
            if row_major_matrix && self.config.applies_transposed(&name) {
                var.set_data(&var.tr().contiguous().tr());
            }
        }
    }

    /// Loads a checkpoint for generation in `dtype`: as [`LoadedModel::load`] then
    /// [`LoadedModel::prepare_for_generation`] for the float formats; as a [`CpuLlama`] for
    /// `Q8_0` and, when the file holds quantized matrices, `Native` (see
    /// [`gguf::load_gguf_cpu`]). An HF directory in `Native` takes the precision its
    /// `config.json` names; in `Q8_0` it is loaded in f32 and then quantized.
    pub fn load_for_inference(path: impl AsRef<Path>, device: Device, dtype: InferenceDtype) -> Result<Self> {
        let path = path.as_ref();
        let float = |precision: Precision| -> Result<Self> {
            let mut model = Self::load(path, device)?;
            model.prepare_for_generation(precision);
            Ok(model)
        };
        let precision = match dtype {
            InferenceDtype::F32 => return float(Precision::F32),
            InferenceDtype::F16 => return float(Precision::F16),
            InferenceDtype::Bf16 => return float(Precision::Bf16),
            InferenceDtype::Native if path.is_dir() => return float(hf::stored_precision(path)),
            _ if device != Device::Cpu => {
                return Err(Error::Unsupported(format!(
                    "{dtype} weights decode on the CPU only; use --dtype f16 or bf16 on {device:?}"
                )));
            }
            // The CPU kernels serve the Llama architecture; Gemma 3 decodes on libtorch in f32.
            _ if !path.is_dir() && gguf::architecture(path)? == "gemma3" => {
                tracing::info!(model = %path.display(), "Gemma 3 decodes on libtorch, in f32");
                return float(Precision::F32);
            }
            InferenceDtype::Native if gguf::has_quantized_matrices(path)? => None,
            InferenceDtype::Native => Some(gguf::stored_precision(path)?),
            InferenceDtype::Q8_0 => None,
        };
        match precision {
            Some(precision) => float(precision),
            None if path.is_dir() => Self::load(path, device)?.into_cpu_llama(true),
            None => gguf::load_gguf_cpu(path, dtype),
        }
    }

    /// This Llama as a [`CpuLlama`], its matrices in f32 or, with `quantize`, in Q8_0 (those
    /// whose rows are not whole blocks stay f32).
    pub fn into_cpu_llama(self, quantize: bool) -> Result<Self> {
        let config = self.llama_config("CPU-only decoding")?.clone();
        let _guard = tch::no_grad_guard();
        let mut weights = HashMap::new();
        for (name, var) in self.vs.variables() {
            let values = Vec::<f32>::try_from(var.to_kind(Kind::Float).flatten(0, -1))?;
            let weight = match var.size().as_slice() {
                &[rows, cols] => {
                    let (rows, cols) = (rows as usize, cols as usize);
                    let elements = if quantize && cols.is_multiple_of(32) {
                        Elements::Blocks(BlockFormat::Q8_0, distill_gguf::quantize_q8_0(&values))
                    } else {
                        Elements::F32(values)
                    };
                    NamedWeight::Matrix(
                        StoredMatrix::new(rows, cols, elements).expect("a variable's own shape"),
                    )
                }
                _ => NamedWeight::Vector(values),
            };
            weights.insert(name, weight);
        }
        let model = CpuLlama::from_weights(config, weights).map_err(|reason| Error::Weights {
            path: self.source.clone(),
            reason,
        })?;
        Ok(Self {
            vs: nn::VarStore::new(Device::Cpu),
            model: CausalLm::CpuLlama(model),
            config: self.config,
            source: self.source,
        })
    }

    /// Total number of parameters.
    pub fn parameter_count(&self) -> u64 {
        if let CausalLm::CpuLlama(m) = &self.model {
            return m.parameter_count();
        }
        self.vs
            .trainable_variables()
            .iter()
            .map(|t| t.numel() as u64)
            .sum()
    }
}

/// Refuses a configuration whose weight matrices alone need more elements than the checkpoint's
/// tensors hold (`available`), before any variable is allocated.
pub(crate) fn check_config_fits(needed: Option<u64>, available: u64, source: &Path) -> Result<()> {
    match needed {
        Some(needed) if needed <= available => Ok(()),
        needed => Err(Error::Weights {
            path: source.into(),
            reason: format!(
                "the configuration needs {} weight elements but the checkpoint holds at most {available}",
                needed.map_or("an overflowing or negative number of".to_string(), |n| n
                    .to_string())
            ),
        }),
    }
}

/// Copies named tensors into the store, checking that every variable is set exactly once
/// with the right shape. `tensors` yields `(hf_name, tensor)`; unknown names are errors
/// except those in `ignored`.
pub(crate) fn assign_weights(
    vs: &nn::VarStore,
    source: &Path,
    tensors: impl IntoIterator<Item = Result<(String, Tensor)>>,
    ignored: &[&str],
) -> Result<()> {
    let mut vars: HashMap<String, Tensor> = vs.variables();
    let mut missing: BTreeSet<String> = vars.keys().cloned().collect();
    let _guard = tch::no_grad_guard();
    for item in tensors {
        let (name, value) = item?;
        let Some(var) = vars.get_mut(&name) else {
            if ignored.contains(&name.as_str()) {
                continue;
            }
            return Err(Error::Weights {
                path: source.into(),
                reason: format!("unexpected tensor `{name}`"),
            });
        };
        if var.size() != value.size() {
            return Err(Error::Weights {
                path: source.into(),
                reason: format!(
                    "`{name}` has shape {:?}, the model expects {:?}",
                    value.size(),
                    var.size()
                ),
            });
        }
        var.f_copy_(&value)?;
        missing.remove(&name);
    }
    if !missing.is_empty() {
        let list: Vec<_> = missing.into_iter().take(8).collect();
        return Err(Error::Weights {
            path: source.into(),
            reason: format!("missing tensors: {}", list.join(", ")),
        });
    }
    Ok(())
}
