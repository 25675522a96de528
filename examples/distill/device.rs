//! The `--device` flag shared by the commands that run a model.

use anyhow::bail;
use distill::student::tch::Device;

/// Where to run.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DeviceKind {
    /// CUDA when available, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// The first CUDA device.
    Cuda,
}

/// `--device auto|cpu|cuda`.
#[derive(Debug, clap::Args)]
pub struct DeviceArg {
    /// Where to run the model.
    #[arg(long, value_enum, default_value = "auto")]
    device: DeviceKind,
}

impl DeviceArg {
    /// The libtorch device, or an error when CUDA is asked for and absent.
    pub fn resolve(&self) -> anyhow::Result<Device> {
        match self.device {
            DeviceKind::Auto => Ok(Device::cuda_if_available()),
            DeviceKind::Cpu => Ok(Device::Cpu),
            DeviceKind::Cuda if distill::student::tch::Cuda::is_available() => Ok(Device::Cuda(0)),
            DeviceKind::Cuda => bail!("--device cuda: this libtorch sees no CUDA device"),
        }
    }
}
