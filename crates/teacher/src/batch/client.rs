//! The Batch API's REST calls, one method each.
//!
//! Each method makes exactly one request, like a [`Teacher`](crate::Teacher): retries,
//! deadlines and cancellation are the [`BatchRunner`](super::BatchRunner)'s policy.

use std::sync::Arc;

use async_openai::types::batches::{Batch, BatchRequestOutput};
use async_openai::types::files::OpenAIFile;
use bytes::Bytes;
use distill_data::Prompt;
use serde::de::DeserializeOwned;

use crate::chat::{build_request, parse_response};
use crate::error::{Error, Result};
use crate::openai::{AzureTeacher, Endpoint, OpenAiTeacher};
use crate::teacher::{Completion, GenerationParams, TeacherId};

/// What a batch result's errors name as their URL.
const BATCH_OUTPUT: &str = "batch output";

/// A client for the Files and Batches endpoints of one OpenAI or Azure OpenAI deployment.
#[derive(Debug, Clone)]
pub struct BatchClient {
    endpoint: Arc<Endpoint>,
}

impl BatchClient {
    /// A client for an OpenAI (or OpenAI-compatible) teacher's endpoint.
    pub fn openai(teacher: &OpenAiTeacher) -> Self {
        BatchClient {
            endpoint: teacher.endpoint.clone(),
        }
    }

    /// A client for an Azure OpenAI teacher's endpoint (a global batch deployment).
    pub fn azure(teacher: &AzureTeacher) -> Self {
        BatchClient {
            endpoint: teacher.endpoint.clone(),
        }
    }

    /// The provider and the model (or deployment) every request names.
    pub fn teacher_id(&self) -> TeacherId {
        TeacherId {
            provider: self.endpoint.provider.into(),
            model: self.endpoint.model.clone(),
        }
    }

    /// A batch input file: one chat completion request per prompt and line, with the
    /// prompt's id as `custom_id`.
    pub fn input_file<'a>(
        &self,
        prompts: impl IntoIterator<Item = &'a Prompt>,
        params: &GenerationParams,
    ) -> Result<Vec<u8>> {
        let mut jsonl = Vec::new();
        for prompt in prompts {
            let body = build_request(
                &self.endpoint.model,
                &prompt.messages,
                params,
                self.endpoint.field,
            );
            let line = serde_json::json!({
                "custom_id": prompt.id,
                "method": "POST",
                "url": self.endpoint.batch_endpoint,
                "body": body,
            });
            serde_json::to_writer(&mut jsonl, &line).map_err(|source| Error::Encode {
                what: "a batch request",
                source,
            })?;
            jsonl.push(b'\n');
        }
        Ok(jsonl)
    }

    /// `POST /files`: uploads `jsonl` with purpose `batch`.
    pub async fn upload_file(&self, jsonl: &[u8]) -> Result<OpenAIFile> {
        let url = format!("{}/files", self.endpoint.api_root);
        let part = reqwest::multipart::Part::bytes(jsonl.to_vec())
            .file_name("distill-batch.jsonl")
            .mime_str("application/jsonl")
            .expect("a static, valid MIME type");
        let form = reqwest::multipart::Form::new()
            .text("purpose", "batch")
            .part("file", part);
        let body = self.endpoint.transport.post_multipart(&url, form).await?;
        self.decode(&url, &body)
    }

    /// `POST /batches`: a batch over an uploaded input file, to finish within 24 hours.
    pub async fn create_batch(&self, input_file_id: &str) -> Result<Batch> {
        let url = format!("{}/batches", self.endpoint.api_root);
        let body = serde_json::json!({
            "input_file_id": input_file_id,
            "endpoint": self.endpoint.batch_endpoint,
            "completion_window": "24h",
        });
        let body = serde_json::to_vec(&body).map_err(|source| Error::Encode {
            what: "the batch",
            source,
        })?;
        let answer = self.endpoint.transport.post_json(&url, body).await?;
        self.decode(&url, &answer)
    }

    /// `GET /batches/{batch_id}`: the batch's status and, once done, its files.
    pub async fn retrieve_batch(&self, batch_id: &str) -> Result<Batch> {
        let url = format!("{}/batches/{batch_id}", self.endpoint.api_root);
        let body = self.endpoint.transport.get(&url).await?;
        self.decode(&url, &body)
    }

    /// `GET /files/{file_id}/content`: a file's bytes (a batch's output or error file).
    pub async fn file_content(&self, file_id: &str) -> Result<Bytes> {
        let url = self.content_url(file_id);
        self.endpoint.transport.get(&url).await
    }

    fn content_url(&self, file_id: &str) -> String {
        format!("{}/files/{file_id}/content", self.endpoint.api_root)
    }

    fn decode<T: DeserializeOwned>(&self, url: &str, body: &[u8]) -> Result<T> {
        serde_json::from_slice(body).map_err(|source| Error::Decode {
            url: url.to_owned(),
            body: self.endpoint.transport.scrubbed(body),
            source,
        })
    }

    /// Line `index` (0-based) of the output or error file `file_id`.
    pub(crate) fn output_line(&self, file_id: &str, index: usize, line: &[u8]) -> Result<BatchRequestOutput> {
        serde_json::from_slice(line).map_err(|source| Error::Decode {
            url: format!("{} (line {})", self.content_url(file_id), index + 1),
            body: self.endpoint.transport.scrubbed(line),
            source,
        })
    }

    /// The completion in one result line, or why the request failed.
    pub(crate) fn completion_of(&self, out: &BatchRequestOutput, top_logprobs: u8) -> Result<Completion> {
        if let Some(e) = &out.error {
            return Err(Error::BatchRequest {
                code: e.code.clone(),
                message: e.message.clone(),
            });
        }
        let Some(response) = &out.response else {
            return Err(Error::Protocol {
                url: BATCH_OUTPUT.into(),
                problem: "the result line has neither a response nor an error".into(),
            });
        };
        let body = serde_json::to_vec(&response.body).map_err(|source| Error::Encode {
            what: "a batch result",
            source,
        })?;
        if response.status_code != 200 {
            let message = response.body["error"]["message"].as_str().unwrap_or("no message");
            return Err(Error::Api {
                url: BATCH_OUTPUT.into(),
                status: response.status_code,
                code: None,
                message: self.endpoint.transport.scrubbed(message.as_bytes()),
                body: self.endpoint.transport.scrubbed(&body),
                retry_after: None,
            });
        }
        parse_response(BATCH_OUTPUT, &body, top_logprobs, |b| {
            self.endpoint.transport.scrubbed(b)
        })
    }
}
