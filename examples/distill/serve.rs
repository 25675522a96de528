//! `distill serve`: a model behind an OpenAI-compatible API (the server is `distill-serve`).

use std::time::Duration;

use anyhow::Context;
use distill::serve::{ServeConfig, Server};
use distill::student::Pretrained;

use crate::device::{DeviceArg, Dtype};

/// Serve a model behind an OpenAI-compatible API (`/v1/chat/completions`, `/v1/completions`,
/// `/v1/models`, `/health`, `/metrics`), decoding concurrent requests together.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A `.gguf` file, a Hugging Face model directory (the lab's `final_model/`), or a Hub id.
    #[arg(long)]
    model: String,
    /// The address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// The port (0: any free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// The name clients send as `model` (default: the model's file or directory name).
    #[arg(long)]
    served_model_name: Option<String>,
    /// Requests decoded together at most.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    max_batch: u16,
    /// Requests waiting at most; more are answered 429 with Retry-After.
    #[arg(long, default_value_t = 64)]
    max_queue: usize,
    /// Require `Authorization: Bearer KEY` on /v1 requests.
    #[arg(long, env = "DISTILL_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Seconds a request may take, queueing included.
    #[arg(long, default_value_t = 600)]
    request_timeout: u64,
    /// Decode every request exactly as it would be decoded alone, whatever else is in the batch.
    #[arg(long)]
    batch_invariant: bool,
    /// Weight format: f32, f16 or bf16; q8_0, or native (a GGUF's quantized blocks as
    /// stored), decode on the CPU from that many bits per weight.
    #[arg(long, value_enum, default_value = "f32")]
    dtype: Dtype,
    #[command(flatten)]
    device: DeviceArg,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let path = crate::hub::resolve(&args.model)?;
    let model = Pretrained::load_for_inference(&path, args.device.resolve()?, args.dtype.into())
        .with_context(|| format!("loading {}", path.display()))?;
    let name = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| distill::lab::model_name(&path));
    let config = ServeConfig {
        max_batch: usize::from(args.max_batch),
        max_queue: args.max_queue,
        api_key: args.api_key.map(Into::into),
        request_timeout: Duration::from_secs(args.request_timeout),
        batch_invariant: args.batch_invariant,
        ..ServeConfig::new(name.clone())
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let address = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&address)
            .await
            .with_context(|| format!("cannot listen on {address}"))?;
        let server = Server::new(model, config);
        println!("serving `{name}` on http://{}/v1", listener.local_addr()?);
        server.serve(listener, shutdown_signal()).await?;
        println!("stopped: every request in flight was answered");
        anyhow::Ok(())
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    eprintln!("shutting down: finishing the requests in flight");
}
