//! `distill eval`: scoring commands (the metrics live in `distill-eval`).

use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;
use distill::eval::bleu::{BleuConfig, BleuTokenizer};
use distill::eval::texts::{TextScoreOptions, score_text_files};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: EvalCommand,
}

#[derive(Debug, Subcommand)]
enum EvalCommand {
    /// Score hypotheses against references (one segment per line) with BLEU
    /// (sacrebleu) and ROUGE-1/2/L/Lsum (rouge-score).
    Text(TextArgs),
}

#[derive(Debug, clap::Args)]
struct TextArgs {
    /// System outputs, one segment per line.
    #[arg(long)]
    hypotheses: PathBuf,
    /// References, one segment per line, as many lines as the hypotheses.
    #[arg(long)]
    references: PathBuf,
    /// Print JSON with precision, recall and F1 of every ROUGE type.
    #[arg(long)]
    json: bool,
    /// BLEU tokenizer: 13a, intl, char or none.
    #[arg(long, default_value = "13a", value_parser = parse_tokenizer)]
    tokenize: BleuTokenizer,
    /// Lowercase BLEU.
    #[arg(long)]
    lowercase: bool,
    /// ROUGE without the Porter stemmer (rouge-score's use_stemmer=False).
    #[arg(long)]
    no_stemmer: bool,
}

fn parse_tokenizer(name: &str) -> Result<BleuTokenizer, String> {
    BleuTokenizer::from_name(name)
        .ok_or_else(|| format!("unknown tokenizer {name:?} (13a, intl, char, none)"))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        EvalCommand::Text(args) => text(args),
    }
}

fn text(args: TextArgs) -> anyhow::Result<()> {
    let options = TextScoreOptions {
        bleu: BleuConfig {
            tokenizer: args.tokenize,
            lowercase: args.lowercase,
            ..BleuConfig::default()
        },
        rouge_stemmer: !args.no_stemmer,
    };
    let scores = score_text_files(&args.hypotheses, &args.references, &options).context("eval text")?;
    if args.json {
        println!("{}", scores.to_json()?);
    } else {
        print!("{}", scores.to_text());
    }
    Ok(())
}
