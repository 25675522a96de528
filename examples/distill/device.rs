//! The `--device` flag shared by the commands that run a model.

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
