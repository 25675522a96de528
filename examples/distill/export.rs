//! `distill export`: convert a model between GGUF and Hugging Face formats.

use std::path::PathBuf;

use anyhow::{Context, bail};
use distill::student::Pretrained;
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
    /// A `.gguf` file or a Hugging Face model directory.
    #[arg(long)]
    model: PathBuf,
    /// The format to write.
    #[arg(long, value_enum)]
    format: Format,
    /// Where to write (a directory for `hf`, a file for `gguf`).
    #[arg(long)]
    output: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let model = Pretrained::load(&args.model, Device::Cpu)
        .with_context(|| format!("loading {}", args.model.display()))?;
    match args.format {
        Format::Hf => model
            .save_hf(&args.output)
            .with_context(|| format!("writing {}", args.output.display()))?,
        Format::Gguf => bail!("--format gguf: GGUF export is not built yet; --format hf works"),
    }
    println!(
        "wrote {} ({} parameters)",
        args.output.display(),
        model.model.parameter_count()
    );
    Ok(())
}
