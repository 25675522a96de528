//! `distill`: the command-line interface. Argument parsing and wiring only; the work
//! lives in the library crates.

mod assets;
mod chat;
mod config_file;
mod data;
mod device;
mod eval;
mod export;
mod generate;
mod hub;
mod lab;
mod progress;
mod serve;
mod train;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

/// Knowledge distillation of language models: teacher datasets, student training,
/// evaluation and deployment.
#[derive(Debug, Parser)]
#[command(name = "distill", version, about, long_about = None, args_override_self = true)]
struct Cli {
    /// Defaults for any command's flags, from a TOML file (`[generate]`, `[train]`, … keyed by
    /// flag name); flags given here win. Comes before the command.
    #[arg(long = "config", value_name = "FILE", env = config_file::CONFIG_VAR)]
    config_file: Option<std::path::PathBuf>,
    /// Log filter, as in RUST_LOG (for example `info` or `distill_teacher=debug`); overrides -v/-q.
    #[arg(long, global = true, env = "RUST_LOG")]
    log: Option<String>,
    /// More detail in the log (-v: info, -vv: debug, -vvv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
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
    /// Evaluate a model against a dataset's teacher answers, or score text files (`eval text`).
    Eval(eval::Args),
    /// Inspect and transform datasets: validate, stats, split, dedup, filter, convert, export.
    Data(data::Args),
    /// Run the whole lab end to end (offline by default): generate, train, evaluate, export.
    Lab(lab::Args),
    /// Train a student on a distillation dataset (hard and soft labels).
    Train(train::Args),
    /// Serve a model behind an OpenAI-compatible API, batching concurrent requests.
    Serve(serve::Args),
}

fn main() -> ExitCode {
    let argv = match config_file::expand(&Cli::command(), std::env::args_os().collect()) {
        Ok(argv) => argv,
        Err(error) => {
            eprintln!("error: {}", distill::error_line(error.as_ref()));
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(argv);
    // Libraries' own logs (hf-hub retries while offline) stay out of the default output: the
    // error we return says what failed, once.
    let filter = cli.log.clone().unwrap_or_else(|| {
        match (cli.quiet, cli.verbose) {
            (true, _) => "error,hf_hub=off",
            (false, 0) => "warn,hf_hub=off",
            (false, 1) => "info",
            (false, 2) => "debug",
            _ => "trace",
        }
        .to_owned()
    });
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    if let Some(path) = &cli.config_file {
        tracing::info!(path = %path.display(), "flags' defaults from the config file");
    }
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
        Command::Data(args) => data::run(args),
        Command::Lab(args) => lab::run(args),
        Command::Generate(args) => generate::run(args),
        Command::Train(args) => train::run(args),
        Command::Serve(args) => serve::run(args),
    }
}
