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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_openai::types::batches::{Batch, BatchRequestOutput, BatchStatus};
use async_openai::types::files::OpenAIFile;
use distill_data::{ExampleWriter, Prompt, WriterOptions};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use crate::chat::{build_request, parse_response};
use crate::engine::{FailureRecord, failures_path};
use crate::error::{Error, ErrorClass, Result};
use crate::openai::{AzureTeacher, Endpoint, OpenAiTeacher};
use crate::pricing::{Accounting, PriceTable};
use crate::retry::RetryPolicy;
use crate::teacher::{Completion, GenerationParams};

/// The Batch API's discount on list prices.
pub const BATCH_PRICE_FACTOR: f64 = 0.5;
/// The most requests OpenAI accepts in one batch.
pub const MAX_BATCH_REQUESTS: usize = 50_000;

/// The sidecar state file for `output`: `data/x.jsonl` → `data/x.batch.json`.
pub fn batch_state_path(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = name.strip_suffix(".jsonl").unwrap_or(&name);
    output.with_file_name(format!("{stem}.batch.json"))
}

/// What the sidecar file remembers about a submitted batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchState {
    /// The uploaded input file.
    pub input_file_id: String,
    /// The batch, once created.
    pub batch_id: Option<String>,
    /// The prompt ids in the batch, in input order.
    pub custom_ids: Vec<String>,
    /// The model the requests name.
    pub model: String,
}

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

/// Runs generation through the Batch API.
pub struct BatchRunner {
    endpoint: Arc<Endpoint>,
    options: BatchOptions,
    events: Option<UnboundedSender<BatchEvent>>,
}

impl BatchRunner {
    /// A runner for an OpenAI (or OpenAI-compatible) teacher's endpoint.
    pub fn openai(teacher: &OpenAiTeacher, options: BatchOptions) -> Self {
        BatchRunner {
            endpoint: teacher.endpoint.clone(),
            options,
            events: None,
        }
    }

    /// A runner for an Azure OpenAI teacher's endpoint (a global batch deployment).
    pub fn azure(teacher: &AzureTeacher, options: BatchOptions) -> Self {
        BatchRunner {
            endpoint: teacher.endpoint.clone(),
            options,
            events: None,
        }
    }

    /// Sends progress events to `events`.
    pub fn with_events(mut self, events: UnboundedSender<BatchEvent>) -> Self {
        self.events = Some(events);
        self
    }

    fn emit(&self, event: BatchEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }

    /// Submits (or resumes) a batch, waits for it, and merges its results. Prompts are taken
    /// in order, skipping ids already in the dataset; on resume the same source must be given
    /// so that results can be matched to their prompts.
    pub async fn run(
        &self,
        prompts: impl IntoIterator<Item = Prompt>,
        cancel: CancellationToken,
    ) -> Result<BatchSummary> {
        let opts = &self.options;
        opts.params.validate()?;
        if opts.params.n != 1 {
            return Err(Error::Options("n must be 1: one example per prompt".into()));
        }
        let state_path = batch_state_path(&opts.output);
        let existing_state = read_state(&state_path)?;
        if existing_state.is_some() && !opts.resume {
            return Err(Error::Options(format!(
                "{} records a pending batch; pass resume to collect it",
                state_path.display()
            )));
        }
        if !opts.resume
            && std::fs::metadata(&opts.output)
                .map(|m| m.len() > 0)
                .unwrap_or(false)
        {
            return Err(Error::Options(format!(
                "{} already exists; pass resume to continue it, or choose another output",
                opts.output.display()
            )));
        }
        if let Some(dir) = opts.output.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut writer = ExampleWriter::open_with(&opts.output, WriterOptions::default())?;
        let mut by_id: HashMap<String, Prompt> = HashMap::new();
        let mut pending_ids = Vec::new();
        let wanted = opts
            .num_examples
            .saturating_sub(writer.completed_ids().len())
            .min(MAX_BATCH_REQUESTS);
        for prompt in prompts {
            let fresh = !writer.contains(&prompt.id) && !by_id.contains_key(&prompt.id);
            if existing_state.is_none() && fresh && pending_ids.len() < wanted {
                pending_ids.push(prompt.id.clone());
            }
            if fresh {
                by_id.insert(prompt.id.clone(), prompt);
            }
            if existing_state.is_none() && pending_ids.len() >= wanted {
                break;
            }
        }

        let mut summary = BatchSummary {
            batch_id: None,
            status: None,
            done: writer.completed_ids().len(),
            merged: 0,
            failed: 0,
            accounting: Accounting::default(),
            pending: false,
            failures_file: None,
        };
        let mut state = match existing_state {
            Some(s) => s,
            None if pending_ids.is_empty() => return Ok(summary),
            None => match self.upload(&pending_ids, &by_id, &state_path, &cancel).await {
                Err(Error::Cancelled) => return Ok(summary),
                other => other?,
            },
        };
        let batch_id = match &state.batch_id {
            Some(id) => {
                self.emit(BatchEvent::Submitted {
                    batch_id: id.clone(),
                    resumed: true,
                });
                id.clone()
            }
            None => {
                let batch = match self.create_batch(&state.input_file_id, &cancel).await {
                    Err(Error::Cancelled) => {
                        summary.pending = true;
                        return Ok(summary);
                    }
                    other => other?,
                };
                state.batch_id = Some(batch.id.clone());
                write_state(&state_path, &state)?;
                tracing::info!(batch_id = %batch.id, "batch created");
                self.emit(BatchEvent::Submitted {
                    batch_id: batch.id.clone(),
                    resumed: false,
                });
                batch.id
            }
        };
        summary.batch_id = Some(batch_id.clone());

        let Some(batch) = self.wait(&batch_id, &cancel).await? else {
            summary.pending = true;
            return Ok(summary);
        };
        summary.status = Some(status_name(&batch.status).to_owned());
        if batch.status == BatchStatus::Failed {
            let detail = batch
                .errors
                .map(|e| {
                    e.data
                        .iter()
                        .map(|d| format!("{}: {}", d.code, d.message))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default();
            // A failed batch never produces output: forget it so the next run submits anew.
            remove_state(&state_path)?;
            return Err(Error::Batch {
                batch_id,
                status: "failed".into(),
                detail,
            });
        }

        let failures_file = failures_path(&opts.output);
        let mut failures: Vec<FailureRecord> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for file_id in [batch.output_file_id.clone(), batch.error_file_id.clone()]
            .into_iter()
            .flatten()
        {
            let url = self.content_url(&file_id);
            let body = match self
                .retrying("download results", &cancel, || self.endpoint.transport.get(&url))
                .await
            {
                Err(Error::Cancelled) => {
                    summary.pending = true;
                    return Ok(summary);
                }
                other => other?,
            };
            for (index, line) in body.split(|&b| b == b'\n').enumerate() {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let out: BatchRequestOutput =
                    serde_json::from_slice(line).map_err(|source| Error::Decode {
                        url: format!("{url} (line {})", index + 1),
                        body: self.endpoint.transport.scrubbed(line),
                        source,
                    })?;
                if writer.contains(&out.custom_id) || !seen.insert(out.custom_id.clone()) {
                    continue;
                }
                let Some(prompt) = by_id.get(&out.custom_id) else {
                    tracing::warn!(id = %out.custom_id, "batch result for a prompt that is not in the source; skipped");
                    continue;
                };
                match self.completion_of(&out) {
                    Ok(completion) => {
                        let example = to_batch_example(prompt, &completion, &self.endpoint, &opts.params);
                        match writer.append(&example) {
                            Ok(()) => {
                                let cost = completion.usage.as_ref().and_then(|u| {
                                    opts.prices
                                        .cost(&completion.model, u, BATCH_PRICE_FACTOR)
                                        .or_else(|| {
                                            opts.prices.cost(&self.endpoint.model, u, BATCH_PRICE_FACTOR)
                                        })
                                });
                                summary.accounting.add(completion.usage.as_ref(), cost);
                                summary.merged += 1;
                                self.emit(BatchEvent::Written { id: example.id });
                            }
                            Err(distill_data::Error::InvalidExample { reason, .. }) => {
                                failures.push(failure(prompt, format!("invalid example: {reason}")));
                            }
                            Err(other) => return Err(other.into()),
                        }
                    }
                    Err(reason) => failures.push(failure(prompt, reason)),
                }
            }
        }
        // Requests the batch never answered (expired or cancelled batches).
        for id in &state.custom_ids {
            if !writer.contains(id)
                && !seen.contains(id)
                && let Some(prompt) = by_id.get(id)
            {
                failures.push(failure(
                    prompt,
                    format!("no result: the batch ended as {}", status_name(&batch.status)),
                ));
            }
        }
        writer.sync()?;
        if !failures.is_empty() {
            write_failures(&failures_file, &failures)?;
            for f in &failures {
                self.emit(BatchEvent::Failed {
                    id: f.id.clone(),
                    reason: f.reason.clone(),
                });
            }
            summary.failures_file = Some(failures_file);
        } else {
            // An earlier run's list would name prompts that are now in the dataset.
            remove_file_if_present(&failures_file)?;
        }
        summary.failed = failures.len();
        summary.done = writer.completed_ids().len();
        remove_state(&state_path)?;
        Ok(summary)
    }

    async fn upload(
        &self,
        ids: &[String],
        by_id: &HashMap<String, Prompt>,
        state_path: &Path,
        cancel: &CancellationToken,
    ) -> Result<BatchState> {
        let mut jsonl = Vec::new();
        for id in ids {
            let prompt = &by_id[id];
            let body = build_request(
                &self.endpoint.model,
                &prompt.messages,
                &self.options.params,
                self.endpoint.field,
            );
            let line = serde_json::json!({
                "custom_id": id,
                "method": "POST",
                "url": self.endpoint.batch_endpoint,
                "body": body,
            });
            serde_json::to_writer(&mut jsonl, &line)
                .map_err(|e| Error::Options(format!("cannot encode a request: {e}")))?;
            jsonl.push(b'\n');
        }
        let url = format!("{}/files", self.endpoint.api_root);
        let file: OpenAIFile = self
            .retrying_json("upload input", cancel, || {
                let part = reqwest::multipart::Part::bytes(jsonl.clone())
                    .file_name("distill-batch.jsonl")
                    .mime_str("application/jsonl")
                    .expect("a static, valid MIME type");
                let form = reqwest::multipart::Form::new()
                    .text("purpose", "batch")
                    .part("file", part);
                self.endpoint.transport.post_multipart(&url, form)
            })
            .await?;
        let state = BatchState {
            input_file_id: file.id.clone(),
            batch_id: None,
            custom_ids: ids.to_vec(),
            model: self.endpoint.model.clone(),
        };
        write_state(state_path, &state)?;
        tracing::info!(file_id = %file.id, requests = ids.len(), "batch input uploaded");
        self.emit(BatchEvent::Uploaded {
            file_id: file.id,
            requests: ids.len(),
        });
        Ok(state)
    }

    async fn create_batch(&self, input_file_id: &str, cancel: &CancellationToken) -> Result<Batch> {
        let url = format!("{}/batches", self.endpoint.api_root);
        let body = serde_json::json!({
            "input_file_id": input_file_id,
            "endpoint": self.endpoint.batch_endpoint,
            "completion_window": "24h",
        });
        let body =
            serde_json::to_vec(&body).map_err(|e| Error::Options(format!("cannot encode the batch: {e}")))?;
        self.retrying_json("create batch", cancel, || {
            self.endpoint.transport.post_json(&url, body.clone())
        })
        .await
    }

    /// Polls until the batch is terminal; `None` when cancelled first.
    async fn wait(&self, batch_id: &str, cancel: &CancellationToken) -> Result<Option<Batch>> {
        let url = format!("{}/batches/{batch_id}", self.endpoint.api_root);
        loop {
            let batch: Batch = match self
                .retrying_json("poll batch", cancel, || self.endpoint.transport.get(&url))
                .await
            {
                Ok(b) => b,
                Err(Error::Cancelled) => return Ok(None),
                Err(e) => return Err(e),
            };
            let counts = batch.request_counts.clone().unwrap_or_default();
            self.emit(BatchEvent::Status {
                status: status_name(&batch.status).to_owned(),
                completed: counts.completed,
                failed: counts.failed,
                total: counts.total,
            });
            if matches!(
                batch.status,
                BatchStatus::Completed | BatchStatus::Failed | BatchStatus::Expired | BatchStatus::Cancelled
            ) {
                return Ok(Some(batch));
            }
            tokio::select! {
                _ = tokio::time::sleep(self.options.poll_interval) => {}
                _ = cancel.cancelled() => return Ok(None),
            }
        }
    }

    fn content_url(&self, file_id: &str) -> String {
        format!("{}/files/{file_id}/content", self.endpoint.api_root)
    }

    fn completion_of(&self, out: &BatchRequestOutput) -> std::result::Result<Completion, String> {
        if let Some(e) = &out.error {
            return Err(format!("{}: {}", e.code, e.message));
        }
        let Some(response) = &out.response else {
            return Err("the result line has neither a response nor an error".into());
        };
        if response.status_code != 200 {
            let message = response.body["error"]["message"].as_str().unwrap_or("no message");
            return Err(format!("HTTP {}: {message}", response.status_code));
        }
        let body = serde_json::to_vec(&response.body).map_err(|e| e.to_string())?;
        parse_response("batch output", &body, self.options.params.top_logprobs, |b| {
            self.endpoint.transport.scrubbed(b)
        })
        .map_err(|e| e.reason())
    }

    async fn retrying_json<T, F, Fut>(
        &self,
        step: &'static str,
        cancel: &CancellationToken,
        send: F,
    ) -> Result<T>
    where
        T: serde::de::DeserializeOwned,
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<bytes::Bytes>>,
    {
        let body = self.retrying(step, cancel, send).await?;
        serde_json::from_slice(&body).map_err(|source| Error::Decode {
            url: step.to_owned(),
            body: self.endpoint.transport.scrubbed(&body),
            source,
        })
    }

    /// Sends with retries on transient errors; [`Error::Cancelled`] if cancelled while waiting.
    async fn retrying<F, Fut>(
        &self,
        step: &'static str,
        cancel: &CancellationToken,
        send: F,
    ) -> Result<bytes::Bytes>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<bytes::Bytes>>,
    {
        let policy = &self.options.retry;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = match tokio::time::timeout(self.options.request_timeout, send()).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout(self.options.request_timeout)),
            };
            let error = match result {
                Ok(body) => return Ok(body),
                Err(e) => e,
            };
            let hint = match error.class() {
                ErrorClass::Transient { retry_after } if attempt < policy.max_attempts => retry_after,
                _ => return Err(error),
            };
            let delay = policy.delay(attempt, hint, &mut rand::rng());
            tracing::debug!(step, attempt, ?delay, reason = %error.reason(), "retrying a batch request");
            self.emit(BatchEvent::Retrying {
                step,
                delay,
                reason: error.reason(),
            });
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.cancelled() => return Err(Error::Cancelled),
            }
        }
    }
}

fn status_name(s: &BatchStatus) -> &'static str {
    match s {
        BatchStatus::Validating => "validating",
        BatchStatus::Failed => "failed",
        BatchStatus::InProgress => "in_progress",
        BatchStatus::Finalizing => "finalizing",
        BatchStatus::Completed => "completed",
        BatchStatus::Expired => "expired",
        BatchStatus::Cancelling => "cancelling",
        BatchStatus::Cancelled => "cancelled",
    }
}

fn to_batch_example(
    prompt: &Prompt,
    completion: &Completion,
    endpoint: &Endpoint,
    params: &GenerationParams,
) -> distill_data::Example {
    let choice = completion.first();
    let mut example = prompt
        .clone()
        .into_example(choice.map(|c| c.text.clone()).unwrap_or_default());
    example.teacher = Some(distill_data::TeacherInfo {
        model: if completion.model.is_empty() {
            endpoint.model.clone()
        } else {
            completion.model.clone()
        },
        provider: endpoint.provider.to_owned(),
        finish_reason: choice.and_then(|c| c.finish_reason.clone()),
        usage: completion.usage,
        latency_ms: None,
        created: completion.created,
    });
    if params.top_logprobs > 0 {
        example.logprobs = choice.and_then(|c| c.logprobs.clone());
    }
    example
        .metadata
        .insert("batch".into(), serde_json::Value::Bool(true));
    example
}

fn failure(prompt: &Prompt, reason: String) -> FailureRecord {
    FailureRecord {
        id: prompt.id.clone(),
        prompt: prompt
            .messages
            .iter()
            .rev()
            .find(|m| m.role == distill_data::Role::User)
            .map(|m| m.content.clone())
            .unwrap_or_default(),
        messages: prompt.messages.clone(),
        reason,
        attempts: 1,
    }
}

fn write_failures(path: &Path, failures: &[FailureRecord]) -> Result<()> {
    let mut text = Vec::new();
    for f in failures {
        serde_json::to_writer(&mut text, f).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: e.into(),
        })?;
        text.push(b'\n');
    }
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

fn read_state(path: &Path) -> Result<Option<BatchState>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| Error::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes to a temporary file, syncs, and renames: the state file is always whole.
fn write_state(path: &Path, state: &BatchState) -> Result<()> {
    use std::io::Write;
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(state).map_err(|e| io(e.into()))?;
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(&bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn remove_state(path: &Path) -> Result<()> {
    remove_file_if_present(path)
}

fn remove_file_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_file_round_trips_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let path = batch_state_path(&dir.path().join("out.jsonl"));
        assert_eq!(path.file_name().unwrap(), "out.batch.json");
        assert_eq!(read_state(&path).unwrap(), None);
        let s = BatchState {
            input_file_id: "file-1".into(),
            batch_id: Some("batch_1".into()),
            custom_ids: vec!["a".into()],
            model: "gpt-4o-mini".into(),
        };
        write_state(&path, &s).unwrap();
        assert_eq!(read_state(&path).unwrap(), Some(s));
        std::fs::write(&path, b"{not json").unwrap();
        assert!(read_state(&path).is_err());
        remove_state(&path).unwrap();
        remove_state(&path).unwrap();
    }
}
