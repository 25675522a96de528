//! `distill export`: convert a model between GGUF and Hugging Face formats.

use std::path::PathBuf;

use anyhow::Context;
use distill::student::Pretrained;
use distill::student::checkpoint::gguf_export::{GgufQuant, export_gguf};
use distill::student::tch::Device;

/// Output formats.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// A Hugging Face directory (config.json, model.safetensors, tokenizer files).
    Hf,
    /// A llama.cpp GGUF file.
    Gguf,
}

/// Convert a model between formats.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A `.gguf` file, a Hugging Face model directory, or a Hub id (from the HF cache when offline).
    #[arg(long)]
    model: String,
    /// The format to write.
    #[arg(long, value_enum)]
    format: Format,
    /// Where to write (a directory for `hf`, a file for `gguf`).
    #[arg(long)]
    output: PathBuf,
    /// Storage type of the weight matrices in a GGUF export.
    #[arg(long, value_enum, default_value = "f16")]
    quant: Quant,
}

/// GGUF weight types.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Quant {
    /// 32-bit floats.
    F32,
    /// 16-bit floats.
    F16,
    /// llama.cpp's 8-bit blocks (named as llama.cpp and `--dtype` name them).
    #[value(name = "q8_0", alias = "q8-0")]
    Q8_0,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = crate::hub::resolve(&args.model)?;
    let model =
        Pretrained::load(&path, Device::Cpu).with_context(|| format!("loading {}", path.display()))?;
    match args.format {
        Format::Hf => model
            .save_hf(&args.output)
            .with_context(|| format!("writing {}", args.output.display()))?,
        Format::Gguf => {
            let quant = match args.quant {
                Quant::F32 => GgufQuant::F32,
                Quant::F16 => GgufQuant::F16,
                Quant::Q8_0 => GgufQuant::Q8_0,
            };
            export_gguf(&model, &args.output, quant)
                .with_context(|| format!("writing {}", args.output.display()))?
        }
    }
    println!(
        "wrote {} ({} parameters)",
        args.output.display(),
        model.model.parameter_count()
    );
    Ok(())
}
