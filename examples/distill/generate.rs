//! `distill generate`: flags and environment → `TeacherConfig` (or a local teacher) and
//! `GenerateOptions`, a progress bar from the engine's events, Ctrl-C → the engine's
//! cancellation token.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use distill::data::prompts::LabPrompts;
use distill::data::{PromptSource, shuffle};
use distill::local_teacher::{LocalTeacher, LocalTeacherOptions};
use distill::teacher::batch::{BatchEvent, BatchOptions, BatchRunner};
use distill::teacher::config::GenerationSettings;
use distill::teacher::{
    AzureTeacher, CancellationToken, Engine, Event, OpenAiTeacher, Provider as TeacherProvider,
    ProviderSettings, StopReason, Teacher, TeacherConfig,
};
use indicatif::{ProgressBar, ProgressStyle};

/// Where the teacher runs.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Provider {
    /// OpenAI, or any OpenAI-compatible server (--base-url).
    Openai,
    /// Azure OpenAI (AZURE_OPENAI_* variables or --config).
    Azure,
    /// A model on this machine, run in-process on the CPU (--model: a .gguf file, an HF
    /// directory or a Hub id); no key, no server.
    Local,
}

/// Generate a distillation dataset by asking a teacher model.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// How many examples the output should hold.
    #[arg(long, alias = "num_examples")]
    num_examples: usize,
    /// The dataset file to write (JSONL).
    #[arg(long, alias = "output_path")]
    output: PathBuf,
    /// The teacher model (for Azure, only recorded; the deployment answers; for local, the
    /// model to run: a .gguf file, an HF directory or a Hub id).
    #[arg(long)]
    model: Option<String>,
    /// The provider (default: the config file's, else openai).
    #[arg(long, value_enum)]
    provider: Option<Provider>,
    /// An OpenAI-compatible base URL, e.g. http://127.0.0.1:8089/v1 (for Azure: the endpoint).
    #[arg(long)]
    base_url: Option<String>,
    /// A TOML configuration (the lab's config/config.py); the environment fills what it leaves out.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Prompts in the lab format, one `{"prompt": …}` per line.
    #[arg(long, default_value = "datasets/prompts/lab.jsonl")]
    prompts: PathBuf,
    /// A system message for every prompt.
    #[arg(long)]
    system: Option<String>,
    /// The shuffle seed that decides which prompts are drawn, and in which order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Store the K most likely alternatives per token (0 to 20; default: the config file's, else 0).
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=20))]
    top_logprobs: Option<u8>,
    /// Requests in flight.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Sampling temperature.
    #[arg(long)]
    temperature: Option<f32>,
    /// The most tokens per response.
    #[arg(long)]
    max_tokens: Option<u32>,
    /// Client-side limit on requests per minute.
    #[arg(long)]
    requests_per_minute: Option<u32>,
    /// Client-side limit on tokens per minute.
    #[arg(long)]
    tokens_per_minute: Option<u32>,
    /// Seconds before one attempt times out.
    #[arg(long)]
    timeout: Option<f64>,
    /// Attempts per prompt, including the first.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Stop taking new prompts once this run has spent this many US dollars (priced models).
    #[arg(long, value_name = "USD")]
    max_cost: Option<f64>,
    /// Continue an existing output (and a pending batch), skipping the ids it holds.
    #[arg(long)]
    resume: bool,
    /// Use the Batch API (half price, results within 24 h) instead of live requests.
    #[arg(long)]
    batch: bool,
    /// Seconds between batch status polls.
    #[arg(long, default_value_t = 30.0)]
    poll_interval: f64,
}

/// The remote teacher's settings from `--config`, the environment and the flags.
fn remote_config(args: &Args) -> anyhow::Result<TeacherConfig> {
    let vars = |k: &str| std::env::var(k).ok();
    let provider = args.provider.map(|p| match p {
        Provider::Openai | Provider::Local => TeacherProvider::OpenAi,
        Provider::Azure => TeacherProvider::Azure,
    });
    let config = match &args.config {
        Some(path) => TeacherConfig::from_toml_file(path, provider, vars),
        None => {
            let provider = provider.unwrap_or(TeacherProvider::OpenAi);
            // A local OpenAI-compatible server needs no key: --base-url must count before the
            // key check, so it stands in for OPENAI_BASE_URL.
            let base = args.base_url.clone();
            TeacherConfig::from_vars(provider, |k| match (k, &base) {
                ("OPENAI_BASE_URL", Some(url)) => Some(url.clone()),
                _ => vars(k),
            })
        }
    };
    let mut config = config.map_err(|e| match &e {
        distill::teacher::Error::Config { key, .. } if key == "OPENAI_API_KEY" => anyhow::anyhow!(
            "{e}; to generate offline instead, run the teacher here: \
             --provider local --model <.gguf file | HF directory | Hub id>"
        ),
        _ => e.into(),
    })?;
    if let Some(url) = &args.base_url {
        config.set_base_url(url)?;
    }
    Ok(config)
}

/// `--provider local`: the model of `--model`, loaded in this process.
fn local_teacher(model: Option<&str>, concurrency: usize) -> anyhow::Result<Arc<dyn Teacher>> {
    let spec = model.context("--provider local needs --model: a .gguf file, an HF directory or a Hub id")?;
    let path = crate::hub::resolve(spec)?;
    eprintln!("loading the local teacher {}", path.display());
    let options = LocalTeacherOptions {
        max_batch: concurrency,
        ..LocalTeacherOptions::default()
    };
    Ok(Arc::new(LocalTeacher::load(
        &path,
        &distill::lab::model_name(&path),
        options,
    )?))
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let local = matches!(args.provider, Some(Provider::Local));
    if args.batch && args.max_cost.is_some() {
        bail!("--max-cost applies to live requests; the Batch API bills the whole batch at once");
    }
    if local && args.batch {
        bail!("--batch needs a remote provider (the Batch API); a local teacher answers directly");
    }
    let config = if local { None } else { Some(remote_config(&args)?) };
    let model = args
        .model
        .clone()
        .or_else(|| config.as_ref().and_then(|c| c.model.clone()));

    let mut prompts = LabPrompts {
        path: args.prompts.clone(),
        system: args.system.clone(),
    }
    .load()
    .with_context(|| format!("loading prompts from {}", args.prompts.display()))?;
    shuffle(&mut prompts, args.seed);
    let total_prompts = prompts.len();

    if let Some(t) = args.timeout
        && !(t.is_finite() && t > 0.0)
    {
        bail!("--timeout must be a positive number of seconds");
    }
    // Flags over the config file's [generation] table over the library's defaults.
    let flags = GenerationSettings {
        temperature: args.temperature,
        max_tokens: args.max_tokens,
        seed: None,
        top_logprobs: args.top_logprobs,
        concurrency: args.concurrency,
        requests_per_minute: args.requests_per_minute,
        tokens_per_minute: args.tokens_per_minute,
        timeout_secs: args.timeout,
        max_attempts: args.max_attempts,
    };
    let settings = flags.or(&config.as_ref().map(|c| c.generation.clone()).unwrap_or_default());
    let mut options = settings.generate_options(args.num_examples, &args.output)?;
    options.resume = args.resume;
    options.max_cost_usd = args.max_cost;
    if let Some(config) = &config {
        options.prices = config.prices.clone();
    }

    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let cancel = CancellationToken::new();
    // First Ctrl-C: stop taking work, finish what is in flight, flush. Second: exit at once
    // (the dataset is crash-safe, so --resume still works).
    let on_signal = cancel.clone();
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\nstopping: finishing requests in flight (Ctrl-C again to quit now)");
            on_signal.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });

    let teacher = match &config {
        None => local_teacher(model.as_deref(), options.concurrency)?,
        Some(config) => {
            let model = match (model, &config.provider) {
                (None, ProviderSettings::OpenAi(s)) => {
                    let m = runtime
                        .block_on(distill::teacher::discover_model(s))
                        .context("choosing a model (pass --model)")?;
                    eprintln!("model: {m} (the first the server lists)");
                    Some(m)
                }
                (model, _) => model,
            };
            if args.batch {
                let mut batch = BatchOptions::new(args.num_examples, &args.output);
                batch.params = options.params;
                batch.resume = args.resume;
                batch.prices = config.prices.clone();
                batch.poll_interval = Duration::from_secs_f64(args.poll_interval.max(0.1));
                return run_batch(&runtime, config, model.as_deref(), batch, prompts, cancel);
            }
            distill::teacher::teacher_from_config(config, model.as_deref())?
        }
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = Engine::new(teacher, options).with_events(tx);
    let bar = ProgressBar::new(args.num_examples as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len}  {per_sec}  ETA {eta}  {msg}")
            .expect("valid template"),
    );
    let render = runtime.spawn({
        let bar = bar.clone();
        async move {
            while let Some(ev) = rx.recv().await {
                let p = ev.progress;
                bar.set_position(p.done as u64);
                let cost = if p.accounting.unpriced_requests > 0 && p.accounting.cost_usd == 0.0 {
                    "cost n/a".to_owned()
                } else {
                    format!("${:.4}", p.accounting.cost_usd)
                };
                bar.set_message(format!(
                    "{} tok  {cost}  {} failed  {} retries",
                    p.accounting.total_tokens(),
                    p.failed,
                    p.retries
                ));
                match ev.event {
                    Event::Started { resumed, .. } if resumed > 0 => {
                        bar.reset_eta();
                        crate::progress::say(
                            &bar,
                            format!("resuming: {resumed} examples already in the file"),
                        );
                    }
                    Event::Failed { id, attempts, reason } => crate::progress::say(
                        &bar,
                        format!("failed {id} after {attempts} attempt(s): {reason}"),
                    ),
                    Event::Finished(_) => bar.finish_and_clear(),
                    _ => {}
                }
            }
        }
    });
    let result = runtime.block_on(engine.run(prompts, cancel));
    drop(engine);
    let _ = runtime.block_on(render);
    // A fatal error sends no `Finished`; the bar goes either way.
    bar.finish_and_clear();
    let summary = result?;
    let p = summary.progress;
    println!(
        "{} examples in {} ({} resumed, {} new, {} failed) in {:.1} s",
        p.done,
        args.output.display(),
        p.resumed,
        p.done - p.resumed,
        p.failed,
        p.elapsed.as_secs_f64()
    );
    let a = p.accounting;
    println!(
        "tokens: {} prompt + {} completion; cost ${:.4}{} ({})",
        a.prompt_tokens,
        a.completion_tokens,
        a.cost_usd,
        if a.unpriced_requests > 0 {
            format!(", {} requests without a price", a.unpriced_requests)
        } else {
            String::new()
        },
        summary.prices_as_of
    );
    if let Some(f) = &summary.failures_file {
        println!("failures: {}", f.display());
    }
    match summary.stop {
        StopReason::Completed => Ok(()),
        StopReason::Cancelled => bail!("interrupted; continue with the same command and --resume"),
        StopReason::BudgetReached => bail!(
            "stopped at the --max-cost budget (${:.4} spent); --resume continues, and may spend up to --max-cost again",
            a.cost_usd
        ),
        StopReason::SourceExhausted => bail!(
            "the prompts ran out at {} of {} examples ({} prompts in {})",
            p.done,
            args.num_examples,
            total_prompts,
            args.prompts.display()
        ),
    }
}

fn run_batch(
    runtime: &tokio::runtime::Runtime,
    config: &TeacherConfig,
    model: Option<&str>,
    options: BatchOptions,
    prompts: Vec<distill::data::Prompt>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let runner = match &config.provider {
        ProviderSettings::OpenAi(s) => {
            let model = model.context("--model is required for OpenAI")?;
            BatchRunner::openai(&OpenAiTeacher::new(s, model)?, options)
        }
        ProviderSettings::Azure(s) => BatchRunner::azure(&AzureTeacher::new(s)?, options),
    }
    .with_events(tx);
    let spinner = ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(200));
    let render = runtime.spawn({
        let spinner = spinner.clone();
        async move {
            while let Some(ev) = rx.recv().await {
                match ev {
                    BatchEvent::Uploaded { file_id, requests } => {
                        crate::progress::say(&spinner, format!("uploaded {requests} requests as {file_id}"))
                    }
                    BatchEvent::Submitted { batch_id, resumed } => crate::progress::say(
                        &spinner,
                        if resumed {
                            format!("collecting batch {batch_id} (from the state file)")
                        } else {
                            format!("submitted batch {batch_id}")
                        },
                    ),
                    BatchEvent::Status {
                        status,
                        completed,
                        failed,
                        total,
                    } => spinner.set_message(format!("{status}: {completed}/{total} done, {failed} failed")),
                    BatchEvent::Retrying { step, delay, reason } => crate::progress::say(
                        &spinner,
                        format!("{step}: {reason}; retrying in {:.1} s", delay.as_secs_f64()),
                    ),
                    _ => {}
                }
            }
        }
    });
    let result = runtime.block_on(runner.run(prompts, cancel));
    drop(runner);
    let _ = runtime.block_on(render);
    spinner.finish_and_clear();
    let summary = result?;
    if summary.pending {
        bail!(
            "stopped while batch {} is still running on the server; collect it later with --batch --resume",
            summary.batch_id.unwrap_or_default()
        );
    }
    println!(
        "{} examples ({} merged from the batch, {} failed); cost ${:.4} at the batch discount",
        summary.done, summary.merged, summary.failed, summary.accounting.cost_usd
    );
    if let Some(f) = &summary.failures_file {
        println!("failures: {}", f.display());
    }
    Ok(())
}
