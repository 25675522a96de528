//! `distill chat`: one prompt in, a streamed answer out.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use distill::eval::memory;
use distill::student::Pretrained;
use distill::student::tokenizer::Message;

use crate::device::{DeviceArg, Dtype};

/// Ask a model one question through its chat template.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A `.gguf` file, a Hugging Face model directory, or a Hub id (from the HF cache when offline).
    #[arg(long)]
    model: String,
    /// The user message.
    #[arg(long)]
    prompt: String,
    /// An optional system message.
    #[arg(long)]
    system: Option<String>,
    /// Most tokens to generate.
    #[arg(long, default_value_t = 256)]
    max_new_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Top-p (nucleus) sampling.
    #[arg(long, default_value_t = 1.0)]
    top_p: f64,
    /// Seed for sampling.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Keep generating past the end-of-sequence token, to `--max-new-tokens` (for timing).
    #[arg(long)]
    ignore_eos: bool,
    /// Weight format: f32, f16 or bf16; q8_0, or native (a GGUF's quantized blocks as
    /// stored), decode on the CPU from that many bits per weight.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = crate::hub::resolve(&args.model)?;
    // The resident size before loading, and the peak from here, so that the summary tells what
    // the model itself took (None where /proc cannot be read).
    let before_load = memory::start_peak_measurement().ok();
    let started = Instant::now();
    let model = Pretrained::load_for_inference(&path, args.device.resolve()?, args.dtype.into())
        .with_context(|| format!("loading {}", path.display()))?;
    let load_seconds = started.elapsed().as_secs_f64();
    let loaded = memory::current_rss_bytes().ok();
    let mut messages = Vec::new();
    if let Some(system) = args.system {
        messages.push(Message::system(system));
    }
    messages.push(Message::user(args.prompt));
    let mut config = distill::student::GenerationConfig {
        temperature: args.temperature,
        top_p: args.top_p,
        seed: args.seed,
        ..model.generation_config(args.max_new_tokens)
    };
    if args.ignore_eos {
        config.stop_tokens.clear();
    }
    let mut stdout = std::io::stdout().lock();
    let reply = model.chat(&messages, &config, &mut |piece| {
        let _ = stdout.write_all(piece.as_bytes());
        let _ = stdout.flush();
    })?;
    writeln!(stdout)?;
    let resident = match (before_load, loaded, memory::peak_rss_bytes().ok()) {
        (Some(before), Some(loaded), Some(peak)) => format!(
            ", {} MB resident after loading, peak {} MB",
            megabytes(loaded.saturating_sub(before)),
            megabytes(peak.saturating_sub(before))
        ),
        _ => String::new(),
    };
    eprintln!(
        "[loaded in {load_seconds:.2} s{resident}; {} prompt + {} new tokens; first token {:.2} s; {:.1} tok/s]",
        reply.prompt_tokens,
        reply.completion_tokens,
        reply.first_token_seconds,
        // The first token waits for the prefill; the rest are the decoding rate.
        reply.completion_tokens.saturating_sub(1) as f64
            / (reply.total_seconds - reply.first_token_seconds).max(1e-9),
    );
    Ok(())
}

/// Bytes in decimal megabytes, to one decimal.
fn megabytes(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / 1e6)
}
