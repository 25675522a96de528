//! # distill-serve
//!
//! An OpenAI-compatible HTTP server for a student model, so that apps, SDKs and tools written
//! for OpenAI (or vLLM, llama.cpp's server, Ollama) work against it unchanged:
//! `POST /v1/chat/completions` and `POST /v1/completions` (streamed or not, with
//! log-probabilities), `GET /v1/models`, `GET /health` and `GET /metrics` (Prometheus).
//!
//! Concurrent requests are decoded together by one scheduler thread that owns the model
//! (continuous batching: a request joins the running batch at the next step and leaves it
//! the step it ends). The queue in front of it is bounded; when it is full the server
//! answers 429 with `Retry-After`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use distill_serve::{ServeConfig, Server};
//! let mut model = distill_student::Pretrained::load("student.gguf", distill_student::tch::Device::Cpu)?;
//! model.prepare_for_generation(distill_student::Precision::F32);
//! let server = Server::new(model, ServeConfig::new("student"));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! server.serve(listener, async { let _ = tokio::signal::ctrl_c().await; }).await?;
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod api;
mod completions;
pub mod error;
pub mod metrics;
mod routes;
pub mod sampling;
pub mod scheduler;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use distill_student::Pretrained;
use distill_student::tokenizer::Tokenizer;
use secrecy::SecretString;

use crate::metrics::Metrics;
use crate::scheduler::{Scheduler, Settings};

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The name clients send as `model`.
    pub served_model_name: String,
    /// Sequences decoded together at most.
    pub max_batch: usize,
    /// Requests waiting at most; more get 429.
    pub max_queue: usize,
    /// When set, every `/v1` request needs `Authorization: Bearer <key>`.
    pub api_key: Option<SecretString>,
    /// The longest a request may take, waiting included.
    pub request_timeout: Duration,
    /// Decode each request exactly as it would be decoded alone, whatever else is in the batch
    /// (greedy answers then do not depend on the load); a few percent of throughput.
    pub batch_invariant: bool,
}

impl ServeConfig {
    /// Defaults: batches of 8, a queue of 64, no key, ten minutes per request.
    pub fn new(served_model_name: impl Into<String>) -> Self {
        Self {
            served_model_name: served_model_name.into(),
            max_batch: 8,
            max_queue: 64,
            api_key: None,
            request_timeout: Duration::from_secs(600),
            batch_invariant: false,
        }
    }
}

/// What every handler shares.
#[derive(Debug)]
struct AppState {
    config: ServeConfig,
    tokenizer: Arc<Tokenizer>,
    scheduler: Scheduler,
    metrics: Arc<Metrics>,
    /// The model's context in tokens.
    context: usize,
    /// Unix seconds at start.
    created: u64,
    /// Names the build and the model, for `system_fingerprint`.
    fingerprint: String,
}

/// An OpenAI-compatible server over one model.
#[derive(Debug)]
pub struct Server {
    state: Arc<AppState>,
}

impl Server {
    /// Starts the scheduler on `model` (prepared for generation by the caller).
    pub fn new(model: Pretrained, config: ServeConfig) -> Self {
        let Pretrained { model, tokenizer } = model;
        let context = model.model.context_length();
        let stop_tokens = tokenizer.eos_token_ids().iter().map(|&t| i64::from(t)).collect();
        let tokenizer = Arc::new(tokenizer);
        let metrics = Arc::new(Metrics::default());
        let settings = Settings {
            max_batch: config.max_batch,
            max_queue: config.max_queue,
            batch_invariant: config.batch_invariant,
            stop_tokens,
        };
        let fingerprint = format!(
            "distill-{}-{}",
            env!("CARGO_PKG_VERSION"),
            tokenizer.vocab_hash().get(..8).unwrap_or(tokenizer.vocab_hash())
        );
        let scheduler = Scheduler::start(model, tokenizer.clone(), settings, metrics.clone());
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            state: Arc::new(AppState {
                config,
                tokenizer,
                scheduler,
                metrics,
                context,
                created,
                fingerprint,
            }),
        }
    }

    /// The routes, for embedding in an app's own axum server.
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` resolves; then takes no new connections, lets the
    /// requests in flight finish, and stops the scheduler.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let router = self.router();
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await;
        let state = self.state.clone();
        // Joining the scheduler blocks: off the async threads.
        let _ = tokio::task::spawn_blocking(move || state.scheduler.close()).await;
        served
    }
}
