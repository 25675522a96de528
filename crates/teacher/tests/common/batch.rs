//! Files and Batches endpoints in the shape of OpenAI's API reference, under `/v1` (OpenAI)
//! and `/openai` (Azure OpenAI).
//!
//! - `POST /files` (multipart: `purpose`, `file`) → a File object.
//! - `POST /batches` (`input_file_id`, `endpoint`, `completion_window`) → a Batch, `validating`.
//! - `GET /batches/{id}` → `in_progress` on the first poll, `completed` after
//!   [`BatchState::polls_until_done`] polls, with an output file and (if any) an error file.
//! - `GET /files/{id}/content` → the file's bytes.
//!
//! Prompts containing `FAIL` get a 400 line in the output file; prompts containing `LOST`
//! get a line in the error file. Faults on the control requests are switched on with the
//! `*_once` flags.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::{Call, ServerState, completion, error_response};

/// Batch-side state and counters.
#[derive(Default)]
pub struct BatchState {
    files: Mutex<HashMap<String, Vec<u8>>>,
    batches: Mutex<HashMap<String, MockBatch>>,
    next_id: AtomicUsize,
    /// Uploads received.
    pub uploads: AtomicUsize,
    /// Batches created.
    pub creates: AtomicUsize,
    /// Status polls received.
    pub polls: AtomicUsize,
    /// File downloads received.
    pub downloads: AtomicUsize,
    /// Polls (after the first) before a batch completes; 0 means 2.
    pub polls_until_done: AtomicU32,
    /// Answer the next create with 429 and `retry-after-ms: 30`.
    pub create_429_once: AtomicBool,
    /// Answer the next poll with 500.
    pub poll_500_once: AtomicBool,
    /// The `api-version` query of the last control request, if any.
    pub last_api_version: Mutex<Option<String>>,
    /// The `purpose` of the last upload.
    pub last_purpose: Mutex<Option<String>>,
}

struct MockBatch {
    input_file_id: String,
    endpoint: String,
    polls: u32,
    output_file_id: Option<String>,
    error_file_id: Option<String>,
    total: u32,
}

impl BatchState {
    fn id(&self, prefix: &str) -> String {
        format!("{prefix}-{}", self.next_id.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

pub(crate) fn routes(router: Router<Arc<ServerState>>) -> Router<Arc<ServerState>> {
    let mut router = router;
    for root in ["/v1", "/openai"] {
        router = router
            .route(&format!("{root}/files"), post(upload))
            .route(&format!("{root}/files/{{id}}/content"), get(content))
            .route(&format!("{root}/batches"), post(create))
            .route(&format!("{root}/batches/{{id}}"), get(poll));
    }
    router
}

fn note_version(state: &BatchState, query: Option<&str>) {
    let v = query.and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("api-version="))
            .map(str::to_owned)
    });
    *state.last_api_version.lock().unwrap() = v;
}

async fn upload(State(s): State<Arc<ServerState>>, uri: axum::http::Uri, mut form: Multipart) -> Response {
    let b = &s.batch;
    note_version(b, uri.query());
    b.uploads.fetch_add(1, Ordering::SeqCst);
    let (mut purpose, mut file, mut name) = (None, None, String::new());
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("purpose") => purpose = field.text().await.ok(),
            Some("file") => {
                name = field.file_name().unwrap_or("upload.jsonl").to_owned();
                file = field.bytes().await.ok().map(|b| b.to_vec());
            }
            _ => {}
        }
    }
    let (Some(purpose), Some(file)) = (purpose, file) else {
        return error_response(
            400,
            Some("invalid_request_error"),
            &[],
            "purpose and file are required",
        );
    };
    *b.last_purpose.lock().unwrap() = Some(purpose.clone());
    let id = b.id("file");
    let bytes = file.len();
    b.files.lock().unwrap().insert(id.clone(), file);
    axum::Json(json!({
        "id": id, "object": "file", "bytes": bytes, "created_at": 1_764_000_000u64,
        "filename": name, "purpose": purpose, "status": "processed"
    }))
    .into_response()
}

async fn content(State(s): State<Arc<ServerState>>, Path(id): Path<String>) -> Response {
    let b = &s.batch;
    b.downloads.fetch_add(1, Ordering::SeqCst);
    match b.files.lock().unwrap().get(&id) {
        Some(bytes) => (StatusCode::OK, bytes.clone()).into_response(),
        None => error_response(404, Some("not_found"), &[], "no such file"),
    }
}

async fn create(
    State(s): State<Arc<ServerState>>,
    uri: axum::http::Uri,
    axum::Json(req): axum::Json<Value>,
) -> Response {
    let b = &s.batch;
    note_version(b, uri.query());
    if b.create_429_once.swap(false, Ordering::SeqCst) {
        return error_response(
            429,
            Some("rate_limit_exceeded"),
            &[("retry-after-ms", "30".into())],
            "slow down",
        );
    }
    let Some(input) = req["input_file_id"].as_str().map(str::to_owned) else {
        return error_response(
            400,
            Some("invalid_request_error"),
            &[],
            "input_file_id is required",
        );
    };
    if req["completion_window"] != "24h" {
        return error_response(
            400,
            Some("invalid_request_error"),
            &[],
            "completion_window must be 24h",
        );
    }
    let Some(lines) = b
        .files
        .lock()
        .unwrap()
        .get(&input)
        .map(|f| f.split(|&c| c == b'\n').filter(|l| !l.is_empty()).count())
    else {
        return error_response(404, Some("not_found"), &[], "no such input file");
    };
    b.creates.fetch_add(1, Ordering::SeqCst);
    let id = b.id("batch");
    let endpoint = req["endpoint"].as_str().unwrap_or_default().to_owned();
    let mock = MockBatch {
        input_file_id: input,
        endpoint,
        polls: 0,
        output_file_id: None,
        error_file_id: None,
        total: lines as u32,
    };
    let body = batch_json(&id, &mock, "validating");
    b.batches.lock().unwrap().insert(id, mock);
    axum::Json(body).into_response()
}

async fn poll(State(s): State<Arc<ServerState>>, uri: axum::http::Uri, Path(id): Path<String>) -> Response {
    let b = &s.batch;
    note_version(b, uri.query());
    b.polls.fetch_add(1, Ordering::SeqCst);
    if b.poll_500_once.swap(false, Ordering::SeqCst) {
        return error_response(500, None, &[], "internal error");
    }
    let until = match b.polls_until_done.load(Ordering::SeqCst) {
        0 => 2,
        n => n,
    };
    let mut batches = b.batches.lock().unwrap();
    let Some(mock) = batches.get_mut(&id) else {
        return error_response(404, Some("not_found"), &[], "no such batch");
    };
    mock.polls += 1;
    if mock.polls < until {
        return axum::Json(batch_json(&id, mock, "in_progress")).into_response();
    }
    if mock.output_file_id.is_none() {
        let input = b
            .files
            .lock()
            .unwrap()
            .get(&mock.input_file_id)
            .cloned()
            .unwrap_or_default();
        let (output, errors) = run_batch(&input);
        let out_id = b.id("file");
        b.files.lock().unwrap().insert(out_id.clone(), output);
        mock.output_file_id = Some(out_id);
        if !errors.is_empty() {
            let err_id = b.id("file");
            b.files.lock().unwrap().insert(err_id.clone(), errors);
            mock.error_file_id = Some(err_id);
        }
    }
    axum::Json(batch_json(&id, mock, "completed")).into_response()
}

/// Answers every input line: output lines for answered requests, error lines for `LOST`.
fn run_batch(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let (mut output, mut errors) = (Vec::new(), Vec::new());
    for (i, line) in input.split(|&c| c == b'\n').filter(|l| !l.is_empty()).enumerate() {
        let req: Value = serde_json::from_slice(line).expect("the client wrote JSON lines");
        let custom_id = req["custom_id"].as_str().unwrap_or_default();
        let body = req["body"].clone();
        let prompt = body["messages"]
            .as_array()
            .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default()
            .to_owned();
        let record = if prompt.contains("LOST") {
            let e = json!({"id": format!("batch_req_{i}"), "custom_id": custom_id, "response": null,
                           "error": {"code": "server_error", "message": "the request could not be processed"}});
            serde_json::to_writer(&mut errors, &e).unwrap();
            errors.push(b'\n');
            continue;
        } else if prompt.contains("FAIL") {
            json!({"status_code": 400, "request_id": format!("req_{i}"),
                   "body": {"error": {"message": "bad request in batch", "type": "invalid_request_error"}}})
        } else {
            let call = Call {
                path: req["url"].as_str().unwrap_or_default().into(),
                query: None,
                prompt,
                attempt: 1,
                headers: HeaderMap::new(),
                body,
            };
            json!({"status_code": 200, "request_id": format!("req_{i}"), "body": completion(&call, "stop", false)})
        };
        let line = json!({"id": format!("batch_req_{i}"), "custom_id": custom_id, "response": record, "error": null});
        serde_json::to_writer(&mut output, &line).unwrap();
        output.push(b'\n');
    }
    (output, errors)
}

fn batch_json(id: &str, m: &MockBatch, status: &str) -> Value {
    let done = status == "completed";
    json!({
        "id": id,
        "object": "batch",
        "endpoint": m.endpoint,
        "errors": null,
        "input_file_id": m.input_file_id,
        "completion_window": "24h",
        "status": status,
        "output_file_id": m.output_file_id,
        "error_file_id": m.error_file_id,
        "created_at": 1_764_000_000u64,
        "in_progress_at": null,
        "expires_at": 1_764_086_400u64,
        "completed_at": if done { json!(1_764_000_100u64) } else { Value::Null },
        "request_counts": {"total": m.total, "completed": if done { m.total } else { 0 }, "failed": 0},
        "metadata": null
    })
}
