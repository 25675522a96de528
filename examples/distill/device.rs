//! The `--device` and `--dtype` flags shared by the commands that run a model.

use distill::student::InferenceDtype;
use distill::student::tch::Device;
use distill::student::train::DeviceChoice;

/// `--device auto|cpu|cuda`.
#[derive(Debug, clap::Args)]
pub struct DeviceArg {
    /// Where to run the model.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceChoice,
}

impl DeviceArg {
    /// The libtorch device, or an error when CUDA is asked for and absent.
    pub fn resolve(&self) -> anyhow::Result<Device> {
        Ok(self.device.resolve()?)
    }
}

/// `--dtype`: what weight format to generate from.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Dtype {
    /// 32-bit floats.
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    Bf16,
    /// ggml's 8-bit blocks (CPU): quantized at load unless the file stores them.
    #[value(name = "q8_0")]
    Q8_0,
    /// As the checkpoint stores it: a GGUF's quantized blocks as they are (CPU).
    Native,
}

impl From<Dtype> for InferenceDtype {
    fn from(dtype: Dtype) -> Self {
        match dtype {
            Dtype::F32 => InferenceDtype::F32,
            Dtype::F16 => InferenceDtype::F16,
            Dtype::Bf16 => InferenceDtype::Bf16,
            Dtype::Q8_0 => InferenceDtype::Q8_0,
            Dtype::Native => InferenceDtype::Native,
        }
    }
}
