//! `distill`: the command-line interface. Argument parsing and wiring only; the work
//! lives in the library crates.

mod chat;
mod device;
mod eval;
mod export;
mod generate;
mod hub;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Knowledge distillation of language models: teacher datasets, student training,
/// evaluation and deployment.
#[derive(Debug, Parser)]
#[command(name = "distill", version, about, long_about = None)]
struct Cli {
    /// Log filter, as in RUST_LOG (for example `info` or `distill_teacher=debug`).
    #[arg(long, global = true, default_value = "warn", env = "RUST_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show the linked libtorch and the devices it can use.
    Info,
    /// Ask a model one question through its chat template.
    Chat(chat::Args),
    /// Convert a model between GGUF and Hugging Face formats.
    Export(export::Args),
    /// Generate a distillation dataset from a teacher (OpenAI, Azure OpenAI, OpenAI-compatible).
    Generate(generate::Args),
    /// Evaluate outputs: BLEU and ROUGE of text files (`eval text`).
    Eval(eval::Args),
    /// Train a student on a distillation dataset (hard and soft labels).
    Train(train::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", distill::error_line(error.as_ref()));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Info => {
            let runtime = distill::student::Runtime::query();
            println!("distill {}", env!("CARGO_PKG_VERSION"));
            println!("cuda: {} ({} devices)", runtime.cuda, runtime.cuda_devices);
            println!("cpu threads: {}", runtime.cpu_threads);
            Ok(())
        }
        Command::Chat(args) => chat::run(args),
        Command::Export(args) => export::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Train(args) => train::run(args),
    }
}
