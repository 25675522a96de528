//! The `--device` and `--dtype` flags shared by the commands that run a model.

use distill::student::Precision;
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

/// `--dtype`: what precision to generate in.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl From<Dtype> for Precision {
    fn from(dtype: Dtype) -> Self {
        match dtype {
            Dtype::F32 => Precision::F32,
            Dtype::F16 => Precision::F16,
            Dtype::Bf16 => Precision::Bf16,
        }
    }
}
