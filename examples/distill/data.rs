//! `distill data`: dataset chores over `distill-data` (validate, stats, split, dedup, filter,
//! convert, export-finetune). Every write is atomic; a bad line is named by file and line.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Subcommand;
use distill::data::ops::dedup::{DedupMode, Deduper};
use distill::data::ops::files::{SplitOutputs, WriteOptions, convert, split_file, write_examples};
use distill::data::ops::filter::{Filter, FilterConfig, count_words};
use distill::data::ops::split::SplitRatios;
use distill::data::ops::stats::StatsBuilder;
use distill::data::{Encoding, ExampleReader, FinetuneTarget, ReadReport, ReaderOptions, export_finetune};

/// Inspect and transform distillation datasets.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: DataCommand,
}

#[derive(Debug, Subcommand)]
enum DataCommand {
    /// Check every line; exit 1 at the first bad one (or, with --lenient, count them).
    Validate(Input),
    /// Examples, splits, finish reasons, lengths (words), usage and latency.
    Stats(StatsArgs),
    /// Write train/val/test files by each example's split, or by a hash of its id.
    Split(SplitArgs),
    /// Drop examples whose prompt repeats an earlier one (exactly, or after normalising).
    Dedup(DedupArgs),
    /// Drop empty, cut-off or filtered answers, and over-long examples.
    Filter(FilterArgs),
    /// Re-encode as full, chat (OpenAI messages) or lab (prompt/response) lines.
    Convert(ConvertArgs),
    /// Write a chat fine-tuning file for OpenAI or Azure OpenAI, and validate it.
    ExportFinetune(FinetuneArgs),
}

#[derive(Debug, clap::Args)]
struct Input {
    /// The dataset.
    input: PathBuf,
    /// Skip malformed lines (counted and reported) instead of stopping at the first.
    #[arg(long)]
    lenient: bool,
}

impl Input {
    fn reader(&self) -> ReaderOptions {
        if self.lenient {
            ReaderOptions::lenient()
        } else {
            ReaderOptions::default()
        }
    }
}

#[derive(Debug, clap::Args)]
struct StatsArgs {
    #[command(flatten)]
    input: Input,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct SplitArgs {
    #[command(flatten)]
    input: Input,
    /// Where train.jsonl, val.jsonl and test.jsonl go.
    #[arg(long)]
    out_dir: PathBuf,
    /// Fractions for examples without a split: train,val,test.
    #[arg(long, default_value = "0.8,0.1,0.1")]
    ratios: String,
}

#[derive(Debug, clap::Args)]
struct DedupArgs {
    #[command(flatten)]
    input: Input,
    /// The output file.
    #[arg(long, short)]
    output: PathBuf,
    /// Compare prompts case-folded and with whitespace collapsed.
    #[arg(long)]
    normalized: bool,
}

#[derive(Debug, clap::Args)]
struct FilterArgs {
    #[command(flatten)]
    input: Input,
    /// The output file.
    #[arg(long, short)]
    output: PathBuf,
    /// Drop examples longer than this many words (prompt and response).
    #[arg(long)]
    max_words: Option<usize>,
    /// Keep answers the teacher cut off at its token limit.
    #[arg(long)]
    keep_truncated: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum EncodingArg {
    Full,
    Chat,
    Lab,
}

#[derive(Debug, clap::Args)]
struct ConvertArgs {
    #[command(flatten)]
    input: Input,
    /// The output file.
    #[arg(long, short)]
    output: PathBuf,
    /// The output encoding.
    #[arg(long, value_enum)]
    to: EncodingArg,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TargetArg {
    Openai,
    Azure,
}

#[derive(Debug, clap::Args)]
struct FinetuneArgs {
    #[command(flatten)]
    input: Input,
    /// The output file.
    #[arg(long, short)]
    output: PathBuf,
    /// The fine-tuning service.
    #[arg(long, value_enum)]
    target: TargetArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    match args.command {
        DataCommand::Validate(input) => {
            let (examples, report) = read(&input)?;
            println!("{}: {} valid examples", input.input.display(), examples.len());
            print_skipped(&report);
            Ok(())
        }
        DataCommand::Stats(a) => stats(a),
        DataCommand::Split(a) => {
            let ratios = parse_ratios(&a.ratios)?;
            let outputs = SplitOutputs::in_dir(&a.out_dir);
            std::fs::create_dir_all(&a.out_dir)
                .with_context(|| format!("creating {}", a.out_dir.display()))?;
            let counts = split_file(
                &a.input.input,
                &outputs,
                &ratios,
                a.input.reader(),
                &WriteOptions::default(),
            )?;
            println!(
                "train {} → {}\nval   {} → {}\ntest  {} → {}",
                counts.train,
                outputs.train.display(),
                counts.val,
                outputs.val.display(),
                counts.test,
                outputs.test.display()
            );
            Ok(())
        }
        DataCommand::Dedup(a) => {
            let mode = if a.normalized {
                DedupMode::Normalized
            } else {
                DedupMode::Exact
            };
            let (examples, report) = read(&a.input)?;
            let mut deduper = Deduper::new(mode);
            let kept: Vec<_> = examples.into_iter().filter(|e| deduper.keep(e)).collect();
            write(&a.output, kept, deduper.dropped(), "duplicates")?;
            print_skipped(&report);
            Ok(())
        }
        DataCommand::Filter(a) => {
            let mut config = FilterConfig {
                max_tokens: a.max_words,
                ..FilterConfig::default()
            };
            if a.keep_truncated {
                config
                    .drop_finish_reasons
                    .retain(|r| *r != distill::data::FinishReason::Length);
            }
            let filter = Filter::new(config, &count_words);
            let (examples, report) = read(&a.input)?;
            let before = examples.len();
            let kept: Vec<_> = examples
                .into_iter()
                .filter(|e| filter.check(e).is_none())
                .collect();
            let dropped = (before - kept.len()) as u64;
            write(&a.output, kept, dropped, "filtered out")?;
            print_skipped(&report);
            Ok(())
        }
        DataCommand::Convert(a) => {
            let write = WriteOptions {
                encoding: match a.to {
                    EncodingArg::Full => Encoding::Full,
                    EncodingArg::Chat => Encoding::Chat,
                    EncodingArg::Lab => Encoding::Lab,
                },
                ..WriteOptions::default()
            };
            let report = convert(&a.input.input, &a.output, a.input.reader(), &write)?;
            println!("{} examples → {}", report.written, a.output.display());
            print_skipped(&report.read);
            Ok(())
        }
        DataCommand::ExportFinetune(a) => {
            let target = match a.target {
                TargetArg::Openai => FinetuneTarget::OpenAi,
                TargetArg::Azure => FinetuneTarget::Azure,
            };
            let (converted, report) = export_finetune(&a.input.input, &a.output, target, a.input.reader())?;
            println!("{} examples → {}", converted.written, a.output.display());
            print_skipped(&converted.read);
            if !report.is_valid() {
                bail!(
                    "{} does not pass the {target:?} fine-tuning checks: {report:?}",
                    a.output.display()
                );
            }
            Ok(())
        }
    }
}

fn read(input: &Input) -> anyhow::Result<(Vec<distill::data::Example>, ReadReport)> {
    Ok(ExampleReader::open_with(&input.input, input.reader())?.read_all()?)
}

fn print_skipped(report: &ReadReport) {
    if report.bad_lines > 0 {
        eprintln!("skipped {} malformed lines (--lenient):", report.bad_lines);
        for e in &report.errors {
            eprintln!("  {}", distill::error_line(e));
        }
    }
}

fn write(
    output: &Path,
    examples: Vec<distill::data::Example>,
    dropped: u64,
    what: &str,
) -> anyhow::Result<()> {
    let n = write_examples(output, examples.into_iter().map(Ok), &WriteOptions::default())?;
    println!("{n} examples → {} ({dropped} {what})", output.display());
    Ok(())
}

fn stats(a: StatsArgs) -> anyhow::Result<()> {
    let (examples, report) = read(&a.input)?;
    let mut builder = StatsBuilder::new(&count_words, None);
    for e in &examples {
        builder.add(e);
    }
    let stats = builder.finish();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        println!("examples:        {}", stats.examples);
        println!("with logprobs:   {}", stats.with_logprobs);
        println!("empty responses: {}", stats.empty_responses);
        println!("splits:          {:?}", stats.by_split);
        println!("finish reasons:  {:?}", stats.by_finish_reason);
        println!("teachers:        {:?}", stats.by_model);
        println!(
            "prompt words:    mean {:.1}, p95 ≤ {}",
            stats.prompt_tokens.mean(),
            stats.prompt_tokens.quantile_upper_bound(0.95)
        );
        println!(
            "response words:  mean {:.1}, p95 ≤ {}",
            stats.response_tokens.mean(),
            stats.response_tokens.quantile_upper_bound(0.95)
        );
        println!(
            "usage:           {} prompt + {} completion tokens over {} examples",
            stats.usage.prompt_tokens, stats.usage.completion_tokens, stats.with_usage
        );
    }
    print_skipped(&report);
    Ok(())
}

fn parse_ratios(s: &str) -> anyhow::Result<SplitRatios> {
    let parts: Vec<f64> = s
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--ratios `{s}`: expected three numbers train,val,test"))?;
    let [train, val, test] = parts[..] else {
        bail!("--ratios `{s}`: expected three numbers train,val,test");
    };
    Ok(SplitRatios { train, val, test })
}
