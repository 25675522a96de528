//! `distill lab`: the whole lab in one command. Chooses the teacher from the environment,
//! renders each stage as a progress bar, and turns Ctrl-C into a clean, resumable stop.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, bail};
use distill::lab::{self, LabConfig, LabEvent, StudentChoice, Task, TeacherChoice};
use distill::teacher::{Provider, TeacherConfig};
use indicatif::{ProgressBar, ProgressStyle};

/// What the lab distills.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TaskArg {
    /// Open-ended answers to the lab's prompts.
    Chat,
    /// CommonsenseQA-style multiple choice, one letter per answer.
    Mcqa,
}

/// Run the whole lab: prompts, teacher answers, training, evaluation, export.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A small run (about a minute): 24 prompts, short answers, a 2-layer student.
    #[arg(long)]
    quick: bool,
    /// Chat answers, or multiple-choice questions.
    #[arg(long, value_enum, default_value = "chat")]
    task: TaskArg,
    /// The run directory (default: runs/<UTC date-time>). An existing one is resumed.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// The prompt file (default: datasets/prompts/lab.jsonl, or commonsenseqa_sample.jsonl for mcqa).
    #[arg(long)]
    prompts: Option<PathBuf>,
    /// Prompts to draw.
    #[arg(long)]
    num_prompts: Option<usize>,
    /// Of those, held out for testing.
    #[arg(long)]
    test_prompts: Option<usize>,
    /// Seed of the draw, split, data order and initialisation.
    #[arg(long)]
    seed: Option<u64>,
    /// A local teacher (.gguf or HF directory) instead of the embedded SmolLM2.
    #[arg(long)]
    teacher_model: Option<PathBuf>,
    /// An OpenAI-compatible server as the teacher, e.g. http://127.0.0.1:8089/v1.
    #[arg(long)]
    base_url: Option<String>,
    /// The remote teacher's model (default gpt-4o; for a server, the first it lists).
    #[arg(long)]
    model: Option<String>,
    /// The student model (.gguf, HF directory or Hub id); default: layers of a local teacher,
    /// else distilgpt2.
    #[arg(long)]
    student_model: Option<String>,
    /// Layers of the local teacher that make the student.
    #[arg(long)]
    keep_layers: Option<usize>,
    /// Passes over the training split.
    #[arg(long)]
    epochs: Option<u32>,
    /// Skip the GGUF export.
    #[arg(long)]
    no_gguf: bool,
    /// Stop asking a priced teacher once this session has spent this many US dollars.
    #[arg(long, value_name = "USD")]
    max_cost: Option<f64>,
    /// Spend more than a dollar on the teacher without asking.
    #[arg(long)]
    yes: bool,
}

/// Spending above this many dollars needs `--yes`.
const ASK_ABOVE_USD: f64 = 1.0;

pub fn run(args: Args) -> anyhow::Result<()> {
    let mut config = config(&args)?;
    config.max_cost_usd = args.max_cost;
    eprintln!(
        "lab: teacher {}, run directory {}",
        config.teacher_name(),
        config.run_dir.display()
    );
    config.validate()?;
    if let Some(estimate) = lab::estimate_cost(&config)? {
        eprintln!(
            "lab: the teacher costs about ${:.2} at most ({} prompts, {} at {})",
            estimate.usd, estimate.prompts, estimate.model, estimate.prices_as_of
        );
        let spend = args.max_cost.map_or(estimate.usd, |max| estimate.usd.min(max));
        if spend > ASK_ABOVE_USD && !args.yes {
            bail!(
                "the teacher may cost up to ${spend:.2}: pass --yes to spend it, or --max-cost USD to cap it"
            );
        }
    } else if args.max_cost.is_some() && matches!(config.teacher, TeacherChoice::Remote { .. }) {
        eprintln!("lab: warning: the teacher's model has no price, so --max-cost cannot count its spend");
    }
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&stop))
        .context("installing the Ctrl-C handler")?;
    let mut bar: Option<ProgressBar> = None;
    let outcome = lab::run(&config, &stop, &mut |event| render(&mut bar, event));
    if let Some(bar) = bar.take() {
        bar.finish_and_clear();
    }
    if stop.load(Ordering::Relaxed) {
        eprintln!(
            "stopped; continue with: distill lab --run-dir {}",
            config.run_dir.display()
        );
    }
    let outcome = outcome?;
    println!("\n{}", outcome.report.summary());
    println!("report:      {}", outcome.run_dir.join("report.md").display());
    println!("charts:      {}", outcome.run_dir.join("charts.svg").display());
    println!("dataset:     {}", outcome.run_dir.join("data.jsonl").display());
    println!("final model: {}", outcome.final_model.display());
    if let Some(gguf) = &outcome.gguf {
        println!("gguf:        {}", gguf.display());
    }
    Ok(())
}

fn render(bar: &mut Option<ProgressBar>, event: LabEvent) {
    match event {
        LabEvent::StageStarted { stage, total, unit } => {
            if let Some(old) = bar.take() {
                old.finish_and_clear();
            }
            let b = if total == 0 {
                ProgressBar::new_spinner()
            } else {
                ProgressBar::new(total)
            };
            b.set_style(
                ProgressStyle::with_template(&format!(
                    "{:<9} {{bar:30}} {{pos}}/{{len}} {unit}  ETA {{eta}}  {{msg}}",
                    stage.name()
                ))
                .expect("valid template"),
            );
            *bar = Some(b);
        }
        LabEvent::Progress {
            done, total, message, ..
        } => {
            if let Some(b) = bar {
                b.set_length(total);
                b.set_position(done);
                b.set_message(message);
            }
        }
        LabEvent::StageSkipped { stage } => eprintln!("{:<9} done in an earlier run", stage.name()),
        LabEvent::StageFinished { stage, seconds } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!("{:<9} {seconds:.1} s", stage.name());
        }
        LabEvent::Note(note) => match bar {
            Some(b) => crate::progress::say(b, note),
            None => eprintln!("{note}"),
        },
        _ => {}
    }
}

fn config(args: &Args) -> anyhow::Result<LabConfig> {
    let run_dir = args
        .run_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(utc_stamp()));
    let teacher = teacher(args)?;
    let mut config = LabConfig::new(run_dir, teacher);
    if args.quick {
        config = config.quick();
    }
    if let TaskArg::Mcqa = args.task {
        config.task = Task::Mcqa;
        config.prompts = PathBuf::from("datasets/prompts/commonsenseqa_sample.jsonl");
        config.num_prompts = config.num_prompts.min(35);
        config.test_prompts = config.test_prompts.min(8);
        config.max_tokens = config.max_tokens.min(8);
        config.eval.max_new_tokens = config.eval.max_new_tokens.min(8);
    }
    if let Some(p) = &args.prompts {
        config.prompts = p.clone();
    }
    if let Some(n) = args.num_prompts {
        config.num_prompts = n;
    }
    if let Some(n) = args.test_prompts {
        config.test_prompts = n;
    }
    if let Some(s) = args.seed {
        config.seed = s;
    }
    if let Some(n) = args.keep_layers {
        config.student = StudentChoice::TeacherLayers(n);
    }
    if let Some(e) = args.epochs {
        config.training.epochs = e;
    }
    match (&args.student_model, &config.teacher) {
        (Some(spec), _) => config.student = StudentChoice::Model(crate::hub::resolve(spec)?),
        (None, TeacherChoice::Remote { .. }) => {
            config.student = StudentChoice::Model(
                crate::hub::resolve("distilgpt2")
                    .context("the default student for a remote teacher (pass --student-model)")?,
            )
        }
        _ => {}
    }
    config.export_gguf = !args.no_gguf;
    Ok(config)
}

/// The teacher, chosen as a user expects: a named local model, then `--base-url`, then OpenAI
/// when `OPENAI_API_KEY` is set, then Azure OpenAI when its variables are, else the embedded
/// SmolLM2.
fn teacher(args: &Args) -> anyhow::Result<TeacherChoice> {
    let vars = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(model) = &args.teacher_model {
        return Ok(TeacherChoice::Local { model: model.clone() });
    }
    let remote = |provider, model: Option<String>, base: Option<String>| -> anyhow::Result<TeacherChoice> {
        let config = TeacherConfig::from_vars(provider, |k| match (k, &base) {
            ("OPENAI_BASE_URL", Some(url)) => Some(url.clone()),
            _ => vars(k),
        })?;
        let model = match model.or_else(|| config.model.clone()) {
            Some(m) => m,
            None => match &config.provider {
                distill::teacher::ProviderSettings::OpenAi(s) => tokio::runtime::Runtime::new()?
                    .block_on(distill::teacher::discover_model(s))
                    .context("choosing the server's model (pass --model)")?,
                _ => bail!("name the teacher model with --model"),
            },
        };
        Ok(TeacherChoice::Remote {
            config: Box::new(config),
            model,
        })
    };
    if let Some(url) = &args.base_url {
        return remote(Provider::OpenAi, args.model.clone(), Some(url.clone()));
    }
    if vars("OPENAI_API_KEY").is_some() {
        return remote(
            Provider::OpenAi,
            Some(args.model.clone().unwrap_or_else(|| "gpt-4o".into())),
            None,
        );
    }
    if vars("AZURE_OPENAI_ENDPOINT").is_some() {
        return remote(Provider::Azure, args.model.clone(), None);
    }
    let model = crate::assets::smollm2_gguf();
    if !model.exists() {
        bail!(
            "the embedded teacher {} is not set up; run `cargo xtask setup` (or pass --teacher-model FILE.gguf)",
            model.display()
        );
    }
    Ok(TeacherChoice::Local { model })
}

/// `YYYYMMDD-HHMMSS` in UTC, for the default run directory.
fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil-from-days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}-{:02}{:02}{:02}",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}
