//! Batch mode: the OpenAI Batch API (files + batches) at half the price of live requests.
//!
//! 1. Prompts not yet in the dataset are written as one JSONL input file (one chat completion
//!    request per line, `custom_id` = prompt id) and uploaded with purpose `batch`.
//! 2. A batch is created for it. Its id is saved in a sidecar state file
//!    ([`batch_state_path`]) before anything else happens, so a stopped or killed run resumes
//!    by polling the same batch instead of paying for a second one.
//! 3. The batch is polled until it is `completed`, `expired` or `cancelled` (partial output is
//!    still merged) or `failed`.
//! 4. The output file is downloaded and merged through the crash-safe writer: ids already in
//!    the dataset are skipped, so a merge interrupted halfway is simply repeated. Failed lines
//!    (and the error file's lines) go to the failures file. The state file is then removed.
//!
//! Cancelling stops polling and leaves the batch running on the server; resume picks it up.
//! Every control request (upload, create, poll, download) is retried with the same
//! [`RetryPolicy`] as live requests. Works with OpenAI and with Azure OpenAI's global batch
//! deployments.
//!
//! [`BatchClient`] makes one REST call per method, once; [`BatchRunner`] runs the steps
//! above with it, and [`BatchState`] is what the sidecar file remembers.

mod client;
mod runner;
mod state;

/// The Batch API's own types, as [`BatchClient`] returns them.
pub use async_openai::types::batches::{Batch, BatchStatus};
/// An uploaded file, as [`BatchClient::upload_file`] returns it.
pub use async_openai::types::files::OpenAIFile;
pub use client::BatchClient;
pub use runner::BatchRunner;
pub use state::{BatchState, batch_state_path};

use std::path::PathBuf;
use std::time::Duration;

use crate::pricing::{Accounting, PriceTable};
use crate::retry::RetryPolicy;
use crate::teacher::GenerationParams;

/// The Batch API's discount on list prices.
pub const BATCH_PRICE_FACTOR: f64 = 0.5;
/// The most requests OpenAI accepts in one batch.
pub const MAX_BATCH_REQUESTS: usize = 50_000;

/// Options for a batch run.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// How many examples the output should hold.
    pub num_examples: usize,
    /// The dataset file.
    pub output: PathBuf,
    /// Sampling parameters for every request (`n` must be 1).
    pub params: GenerationParams,
    /// Time between status polls.
    pub poll_interval: Duration,
    /// Retry policy for the control requests.
    pub retry: RetryPolicy,
    /// Deadline per control request.
    pub request_timeout: Duration,
    /// Continue an existing dataset and a pending batch.
    pub resume: bool,
    /// Prices (the batch discount is applied on top).
    pub prices: PriceTable,
}

impl BatchOptions {
    /// Defaults: poll every 30 s, 6 attempts per control request, 300 s per request.
    pub fn new(num_examples: usize, output: impl Into<PathBuf>) -> Self {
        BatchOptions {
            num_examples,
            output: output.into(),
            params: GenerationParams::default(),
            poll_interval: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(300),
            resume: false,
            prices: PriceTable::default(),
        }
    }
}

/// Progress of a batch run.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum BatchEvent {
    /// The input file was uploaded.
    Uploaded {
        /// Its file id.
        file_id: String,
        /// Requests in it.
        requests: usize,
    },
    /// The batch was created (or found in the state file when resuming).
    Submitted {
        /// The batch id.
        batch_id: String,
        /// Whether it came from the state file.
        resumed: bool,
    },
    /// A status poll.
    Status {
        /// The batch's status, as the API spells it.
        status: String,
        /// Requests done so far.
        completed: u32,
        /// Requests failed so far.
        failed: u32,
        /// Requests in the batch.
        total: u32,
    },
    /// A control request failed transiently and is retried.
    Retrying {
        /// What was being done.
        step: &'static str,
        /// The wait before the next attempt.
        delay: Duration,
        /// The error, in one line.
        reason: String,
    },
    /// An example was merged into the dataset.
    Written {
        /// Its id.
        id: String,
    },
    /// A request failed inside the batch; it went to the failures file.
    Failed {
        /// The prompt id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// How a batch run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchSummary {
    /// The batch that was collected, if any was needed.
    pub batch_id: Option<String>,
    /// Its final status.
    pub status: Option<String>,
    /// Examples in the file now.
    pub done: usize,
    /// Examples merged by this run.
    pub merged: usize,
    /// Requests that failed inside the batch.
    pub failed: usize,
    /// Usage and cost, at the batch discount.
    pub accounting: Accounting,
    /// Whether the run was cancelled while the batch was still running (resume to collect it).
    pub pending: bool,
    /// The failures file, when there were failures.
    pub failures_file: Option<PathBuf>,
}
