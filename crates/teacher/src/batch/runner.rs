//! The batch runner: submit (or resume), wait, merge.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::path::Path;

use async_openai::types::batches::{Batch, BatchStatus};
use distill_data::{ExampleWriter, Prompt, WriterOptions};
use tokio::sync::mpsc::UnboundedSender;
use tokio_util::sync::CancellationToken;

use super::state::{read_state, remove_state, write_state};
use super::{
    BATCH_PRICE_FACTOR, BatchClient, BatchEvent, BatchOptions, BatchState, BatchSummary, MAX_BATCH_REQUESTS,
    batch_state_path,
};
use crate::convert::{batch_example, cost, refusal};
use crate::error::{Error, Result};
use crate::failures::FailureLog;
use crate::openai::{AzureTeacher, OpenAiTeacher};
use crate::output::open_output;
use crate::retry::{Attempts, within};
use crate::teacher::TeacherId;

/// Runs generation through the Batch API.
pub struct BatchRunner {
    client: BatchClient,
    options: BatchOptions,
    events: Option<UnboundedSender<BatchEvent>>,
}

/// The prompts of a run: those the source offers that are not in the dataset yet, by id,
/// and the ids a new batch would ask for, in source order.
struct Selection {
    by_id: HashMap<String, Prompt>,
    to_submit: Vec<String>,
}

impl BatchRunner {
    /// A runner that makes its requests with `client`.
    pub fn new(client: BatchClient, options: BatchOptions) -> Self {
        BatchRunner {
            client,
            options,
            events: None,
        }
    }

    /// A runner for an OpenAI (or OpenAI-compatible) teacher's endpoint.
    pub fn openai(teacher: &OpenAiTeacher, options: BatchOptions) -> Self {
        Self::new(BatchClient::openai(teacher), options)
    }

    /// A runner for an Azure OpenAI teacher's endpoint (a global batch deployment).
    pub fn azure(teacher: &AzureTeacher, options: BatchOptions) -> Self {
        Self::new(BatchClient::azure(teacher), options)
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
        let state_path = batch_state_path(&opts.output);
        let saved = self.check(&state_path)?;
        let mut writer = open_output(&opts.output, opts.resume, WriterOptions::default())?;
        let selection = self.select(prompts, &writer, saved.is_none());
        let mut summary = BatchSummary {
            batch_id: None,
            status: None,
            done: writer.completed_ids().len(),
            merged: 0,
            failed: 0,
            accounting: Default::default(),
            pending: false,
            failures_file: None,
        };
        let mut state = match saved {
            Some(s) => s,
            None if selection.to_submit.is_empty() => return Ok(summary),
            None => match self.upload(&selection, &state_path, &cancel).await {
                Err(Error::Cancelled) => return Ok(summary),
                other => other?,
            },
        };
        let batch_id = match self.submit(&mut state, &state_path, &cancel).await {
            Err(Error::Cancelled) => {
                return Ok(BatchSummary {
                    pending: true,
                    ..summary
                });
            }
            other => other?,
        };
        summary.batch_id = Some(batch_id.clone());
        let Some(batch) = self.wait(&batch_id, &cancel).await? else {
            return Ok(BatchSummary {
                pending: true,
                ..summary
            });
        };
        summary.status = Some(status_name(&batch.status).to_owned());
        if batch.status == BatchStatus::Failed {
            // A failed batch never produces output: forget it so the next run submits anew.
            remove_state(&state_path)?;
            return Err(failed_batch(batch_id, batch));
        }
        let merge = Merge {
            state: &state,
            prompts: &selection.by_id,
            teacher: self.client.teacher_id(),
            seen: HashSet::new(),
            failures: FailureLog::start(&opts.output)?,
        };
        match self
            .merge(merge, &batch, &mut writer, &mut summary, &cancel)
            .await
        {
            Err(Error::Cancelled) => {
                return Ok(BatchSummary {
                    pending: true,
                    ..summary
                });
            }
            other => other?,
        }
        remove_state(&state_path)?;
        Ok(summary)
    }

    /// Checks the options and reads the state file: a pending batch needs `resume`.
    fn check(&self, state_path: &Path) -> Result<Option<BatchState>> {
        let opts = &self.options;
        opts.params.validate()?;
        if opts.params.n != 1 {
            return Err(Error::Options("n must be 1: one example per prompt".into()));
        }
        let saved = read_state(state_path)?;
        if saved.is_some() && !opts.resume {
            return Err(Error::Options(format!(
                "{} records a pending batch; pass resume to collect it",
                state_path.display()
            )));
        }
        Ok(saved)
    }

    /// The prompts not yet in the dataset; with `submitting`, the first of them, up to what
    /// the dataset lacks and one batch holds, are chosen for a new batch.
    fn select(
        &self,
        prompts: impl IntoIterator<Item = Prompt>,
        writer: &ExampleWriter,
        submitting: bool,
    ) -> Selection {
        let wanted = self
            .options
            .num_examples
            .saturating_sub(writer.completed_ids().len())
            .min(MAX_BATCH_REQUESTS);
        let mut selection = Selection {
            by_id: HashMap::new(),
            to_submit: Vec::new(),
        };
        for prompt in prompts {
            let fresh = !writer.contains(&prompt.id) && !selection.by_id.contains_key(&prompt.id);
            if submitting && fresh && selection.to_submit.len() < wanted {
                selection.to_submit.push(prompt.id.clone());
            }
            if fresh {
                selection.by_id.insert(prompt.id.clone(), prompt);
            }
            if submitting && selection.to_submit.len() >= wanted {
                break;
            }
        }
        selection
    }

    /// Uploads the input file and saves its id.
    async fn upload(
        &self,
        selection: &Selection,
        state_path: &Path,
        cancel: &CancellationToken,
    ) -> Result<BatchState> {
        let ids = &selection.to_submit;
        let jsonl = self
            .client
            .input_file(ids.iter().map(|id| &selection.by_id[id]), &self.options.params)?;
        let file = self
            .call("upload input", cancel, || self.client.upload_file(&jsonl))
            .await?;
        let state = BatchState {
            input_file_id: file.id.clone(),
            batch_id: None,
            custom_ids: ids.clone(),
            model: self.client.teacher_id().model,
        };
        write_state(state_path, &state)?;
        tracing::info!(file_id = %file.id, requests = ids.len(), "batch input uploaded");
        self.emit(BatchEvent::Uploaded {
            file_id: file.id,
            requests: ids.len(),
        });
        Ok(state)
    }

    /// The batch of `state`: created now and saved, or the saved one when resuming.
    async fn submit(
        &self,
        state: &mut BatchState,
        state_path: &Path,
        cancel: &CancellationToken,
    ) -> Result<String> {
        if let Some(id) = &state.batch_id {
            self.emit(BatchEvent::Submitted {
                batch_id: id.clone(),
                resumed: true,
            });
            return Ok(id.clone());
        }
        let input = state.input_file_id.clone();
        let batch = self
            .call("create batch", cancel, || self.client.create_batch(&input))
            .await?;
        state.batch_id = Some(batch.id.clone());
        write_state(state_path, state)?;
        tracing::info!(batch_id = %batch.id, "batch created");
        self.emit(BatchEvent::Submitted {
            batch_id: batch.id.clone(),
            resumed: false,
        });
        Ok(batch.id)
    }

    /// Polls until the batch is terminal; `None` when cancelled first.
    async fn wait(&self, batch_id: &str, cancel: &CancellationToken) -> Result<Option<Batch>> {
        loop {
            let batch = match self
                .call("poll batch", cancel, || self.client.retrieve_batch(batch_id))
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

    /// Downloads the output and error files and merges them into the dataset; the prompts
    /// the batch never answered go to the failures file too.
    async fn merge(
        &self,
        mut merge: Merge<'_>,
        batch: &Batch,
        writer: &mut ExampleWriter,
        summary: &mut BatchSummary,
        cancel: &CancellationToken,
    ) -> Result<()> {
        for file_id in [&batch.output_file_id, &batch.error_file_id]
            .into_iter()
            .flatten()
        {
            let body = self
                .call("download results", cancel, || self.client.file_content(file_id))
                .await?;
            for (index, line) in body.split(|&b| b == b'\n').enumerate() {
                if !line.iter().all(u8::is_ascii_whitespace) {
                    self.merge_line(&mut merge, file_id, index, line, writer, summary)?;
                }
            }
        }
        let unanswered = format!("no result: the batch ended as {}", status_name(&batch.status));
        for id in &merge.state.custom_ids {
            if !writer.contains(id)
                && !merge.seen.contains(id)
                && let Some(prompt) = merge.prompts.get(id)
            {
                self.fail(&mut merge.failures, prompt, unanswered.clone())?;
            }
        }
        writer.sync()?;
        summary.failed = merge.failures.count();
        summary.failures_file = merge.failures.written();
        summary.done = writer.completed_ids().len();
        Ok(())
    }

    /// Merges one result line: an example written, a failure recorded, or nothing for a
    /// prompt already in the dataset.
    fn merge_line(
        &self,
        merge: &mut Merge<'_>,
        file_id: &str,
        index: usize,
        line: &[u8],
        writer: &mut ExampleWriter,
        summary: &mut BatchSummary,
    ) -> Result<()> {
        let out = self.client.output_line(file_id, index, line)?;
        if writer.contains(&out.custom_id) || !merge.seen.insert(out.custom_id.clone()) {
            return Ok(());
        }
        let Some(prompt) = merge.prompts.get(&out.custom_id) else {
            tracing::warn!(id = %out.custom_id, "batch result for a prompt that is not in the source; skipped");
            return Ok(());
        };
        let params = &self.options.params;
        let completion = match self.client.completion_of(&out, params.top_logprobs) {
            Ok(c) => c,
            Err(e) => return self.fail(&mut merge.failures, prompt, e.reason()),
        };
        let example = batch_example(prompt, &completion, &merge.teacher, params);
        if let Some(reason) = refusal(writer.append(&example))? {
            return self.fail(&mut merge.failures, prompt, reason);
        }
        let cost = cost(
            &self.options.prices,
            &completion,
            &merge.teacher,
            BATCH_PRICE_FACTOR,
        );
        summary.accounting.add(completion.usage.as_ref(), cost);
        summary.merged += 1;
        self.emit(BatchEvent::Written { id: example.id });
        Ok(())
    }

    fn fail(&self, failures: &mut FailureLog, prompt: &Prompt, reason: String) -> Result<()> {
        let record = failures.record(prompt, reason, 1)?;
        self.emit(BatchEvent::Failed {
            id: record.id,
            reason: record.reason,
        });
        Ok(())
    }

    /// One control request under the retry policy, each attempt within the request timeout;
    /// [`Error::Cancelled`] when cancelled while waiting to retry.
    async fn call<T, F, Fut>(&self, step: &'static str, cancel: &CancellationToken, send: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let timeout = self.options.request_timeout;
        let send = &send;
        let attempt = move || async move { Some(within(timeout, send()).await) };
        let on_retry = |retry: crate::retry::Retry<'_>| {
            let reason = retry.error.reason();
            tracing::debug!(step, attempt = retry.attempt, delay = ?retry.delay, %reason, "retrying a batch request");
            self.emit(BatchEvent::Retrying {
                step,
                delay: retry.delay,
                reason,
            });
        };
        match self.options.retry.attempt(cancel, attempt, on_retry).await {
            Attempts::Done(value) => Ok(value),
            Attempts::Failed { error, .. } => Err(error),
            Attempts::Cancelled => Err(Error::Cancelled),
        }
    }
}

/// What merging a batch's results needs besides the dataset.
struct Merge<'a> {
    state: &'a BatchState,
    prompts: &'a HashMap<String, Prompt>,
    teacher: TeacherId,
    /// Results merged or failed so far (a prompt may appear in both files).
    seen: HashSet<String>,
    failures: FailureLog,
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

/// The error for a batch that ended as `failed`, with the errors the provider reported.
fn failed_batch(batch_id: String, batch: Batch) -> Error {
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
    Error::Batch {
        batch_id,
        status: "failed".into(),
        detail,
    }
}
