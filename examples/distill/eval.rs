//! `distill eval`: a model against the teacher answers of a dataset, or `eval text` on files
//! (the work lives in `distill::evaluate` and `distill-eval`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Subcommand;
use distill::data::{Example, Split};
use distill::eval::bleu::{BleuConfig, BleuTokenizer};
use distill::eval::texts::{TextScoreOptions, score_text_files};
use distill::evaluate::{Candidate, EvalSettings, Role, evaluate};
use distill::lab::report::{LabReport, Mcqa};
use distill::lab::{Task, model_name};

/// Evaluate a model against the teacher answers stored in a dataset: quality (ROUGE, BLEU,
/// teacher-token cross-entropy), speed, size and memory.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<EvalCommand>,
    /// The model: a `.gguf` file, an HF directory or a Hub id.
    #[arg(long, required = true)]
    model: Option<String>,
    /// The dataset whose teacher answers are the references.
    #[arg(long, alias = "dataset_path", required = true)]
    dataset: Option<PathBuf>,
    /// Which examples: test (the default), val, train or all.
    #[arg(long, default_value = "test")]
    split: String,
    /// A local teacher (.gguf, directory or Hub id) to measure beside the model.
    #[arg(long)]
    teacher: Option<String>,
    /// The most tokens per answer.
    #[arg(long, default_value_t = 128)]
    max_new_tokens: usize,
    /// Score answers as multiple-choice letters against the examples' answer keys.
    #[arg(long)]
    mcqa: bool,
    /// Write the report as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
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
    /// Reference files, one reference stream each (as sacrebleu's command line takes them),
    /// one segment per line, as many lines as the hypotheses.
    #[arg(long, required = true, num_args = 1..)]
    references: Vec<PathBuf>,
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
        Some(EvalCommand::Text(text_args)) => text(text_args),
        None => model(args),
    }
}

fn model(args: Args) -> anyhow::Result<()> {
    let (Some(spec), Some(dataset)) = (&args.model, &args.dataset) else {
        bail!("give --model and --dataset, or use `distill eval text`");
    };
    let split = match args.split.as_str() {
        "all" => None,
        "test" => Some(Split::Test),
        "val" => Some(Split::Val),
        "train" => Some(Split::Train),
        other => bail!("unknown split `{other}` (test, val, train or all)"),
    };
    let examples: Vec<Example> = distill::data::read_file(dataset)?
        .into_iter()
        .filter(|e| split.is_none() || e.split == split)
        .collect();
    if examples.is_empty() {
        bail!("{}: no `{}` examples", dataset.display(), args.split);
    }
    let settings = EvalSettings {
        max_new_tokens: args.max_new_tokens,
        ..EvalSettings::default()
    };
    let mut models = Vec::new();
    let teacher_name = match &args.teacher {
        Some(spec) => {
            let path = crate::hub::resolve(spec)?;
            let name = model_name(&path);
            eprintln!("evaluating the teacher {name} on {} examples", examples.len());
            let candidate = Candidate::load(&format!("teacher: {name}"), Role::Teacher, &path)?;
            models.push(evaluate(candidate, &examples, &settings, &mut |_, _| {})?);
            name
        }
        None => examples
            .iter()
            .find_map(|e| e.teacher.as_ref().map(|t| t.model.clone()))
            .unwrap_or_else(|| "the dataset's responses".into()),
    };
    let path = crate::hub::resolve(spec)?;
    eprintln!("evaluating {} on {} examples", path.display(), examples.len());
    let candidate = Candidate::load("student", Role::Student, &path)
        .with_context(|| format!("loading {}", path.display()))?;
    models.push(evaluate(candidate, &examples, &settings, &mut |_, _| {})?);
    let task = if args.mcqa { Task::Mcqa } else { Task::Chat };
    let mcqa = if args.mcqa {
        Some(Mcqa::score(&examples, &models)?)
    } else {
        None
    };
    let report = LabReport::of_models(
        task,
        teacher_name,
        settings.showcase_prompts.clone(),
        examples.len(),
        models,
        mcqa,
    );
    print!("{}", report.summary());
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))?;
        println!("report: {}", path.display());
    }
    Ok(())
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
