//! A scripted OpenAI-compatible HTTP server for fault injection, shared by the integration
//! tests, the kill test and the benches.
//!
//! Every chat request is answered by a script: a function of the call (path, prompt, attempt
//! number for that prompt) that returns a [`Reply`]: a well-formed completion (echoing the
//! prompt, with logprobs when asked), an HTTP error with headers, a malformed body, a content
//! filter stop, or a hang. The server also implements the Files and Batches endpoints in the
//! shape of OpenAI's documentation (see [`batch`]).
#![allow(dead_code)] // each test binary uses a different part

pub mod batch;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// One chat request as the script sees it.
#[derive(Debug, Clone)]
pub struct Call {
    /// The request path, e.g. `/v1/chat/completions`.
    pub path: String,
    /// The query string, if any.
    pub query: Option<String>,
    /// The last user message.
    pub prompt: String,
    /// 1 for the first request with this prompt, 2 for its first retry, …
    pub attempt: u32,
    /// The request headers.
    pub headers: HeaderMap,
    /// The JSON body.
    pub body: Value,
}

/// What the server answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A valid completion echoing the prompt.
    Ok,
    /// HTTP `status` with `headers` and a JSON error body carrying `code`.
    Error {
        status: u16,
        code: Option<&'static str>,
        headers: Vec<(&'static str, String)>,
    },
    /// 200 with a body that is not JSON.
    Malformed,
    /// A completion stopped by Azure's content filter, with filter annotations.
    ContentFilter,
    /// Waits this long, then answers normally (longer than the client's timeout: a timeout).
    Hang(Duration),
    /// HTTP `status` whose error message repeats the credentials the client sent (a careless
    /// proxy): the client must scrub them before keeping the body.
    EchoCredentials(u16),
}

impl Reply {
    /// A plain HTTP error without headers.
    pub fn status(status: u16) -> Reply {
        Reply::Error {
            status,
            code: None,
            headers: vec![],
        }
    }
}

type Script = Arc<dyn Fn(&Call) -> Reply + Send + Sync>;

/// What the server saw.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The call.
    pub call: Call,
    /// When it arrived.
    pub at: Instant,
}

pub(crate) struct ServerState {
    script: Script,
    latency: Duration,
    attempts: Mutex<HashMap<String, u32>>,
    seen: Mutex<Vec<Seen>>,
    record: bool,
    pub(crate) batch: batch::BatchState,
}

/// A running server; it stops when dropped.
pub struct FaultServer {
    pub addr: SocketAddr,
    state: Arc<ServerState>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FaultServer {
    /// Starts a server that answers with `script` after `latency`.
    pub async fn start(
        latency: Duration,
        script: impl Fn(&Call) -> Reply + Send + Sync + 'static,
    ) -> FaultServer {
        Self::start_with(latency, true, script).await
    }

    /// Like [`Self::start`]; `record: false` keeps no log (for benches).
    pub async fn start_with(
        latency: Duration,
        record: bool,
        script: impl Fn(&Call) -> Reply + Send + Sync + 'static,
    ) -> FaultServer {
        let state = Arc::new(ServerState {
            script: Arc::new(script),
            latency,
            attempts: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            record,
            batch: batch::BatchState::default(),
        });
        let app = batch::routes(Router::new())
            .route("/v1/models", axum::routing::get(models))
            .fallback(chat)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a local port");
        let addr = listener.local_addr().expect("local address");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        FaultServer {
            addr,
            state,
            shutdown: Some(tx),
        }
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// `http://127.0.0.1:PORT` (an Azure "endpoint").
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every chat request so far, in arrival order.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests per prompt.
    pub fn attempts(&self) -> HashMap<String, u32> {
        self.state.attempts.lock().unwrap().clone()
    }

    /// The batch endpoints' counters.
    pub fn batch(&self) -> &batch::BatchState {
        &self.state.batch
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The shape llama.cpp's server answers with (no `created`).
async fn models() -> Response {
    json_response(json!({"object": "list", "data": [
        {"id": "served-model", "object": "model", "owned_by": "me", "permissions": []},
        {"id": "other-model", "object": "model", "owned_by": "me", "permissions": []}
    ]}))
}

async fn chat(
    State(state): State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST || !uri.path().ends_with("/chat/completions") {
        return (StatusCode::NOT_FOUND, "no such route").into_response();
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error_response(400, Some("invalid_json"), &[], "request body is not JSON");
    };
    let prompt = body["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let attempt = {
        let mut attempts = state.attempts.lock().unwrap();
        let n = attempts.entry(prompt.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let call = Call {
        path: uri.path().to_owned(),
        query: uri.query().map(str::to_owned),
        prompt,
        attempt,
        headers,
        body,
    };
    if state.record {
        state.seen.lock().unwrap().push(Seen {
            call: call.clone(),
            at: Instant::now(),
        });
    }
    let reply = (state.script)(&call);
    if !state.latency.is_zero() {
        tokio::time::sleep(state.latency).await;
    }
    match reply {
        Reply::Ok => json_response(completion(&call, "stop", false)),
        Reply::ContentFilter => json_response(completion(&call, "content_filter", true)),
        Reply::Error {
            status,
            code,
            headers,
        } => error_response(status, code, &headers, "scripted failure"),
        Reply::Malformed => (
            StatusCode::OK,
            [("content-type", "application/json")],
            "{\"id\": \"chatcmpl-1\", \"choi",
        )
            .into_response(),
        Reply::EchoCredentials(status) => {
            let sent: Vec<String> = ["authorization", "api-key"]
                .iter()
                .filter_map(|h| {
                    call.headers
                        .get(*h)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                })
                .collect();
            error_response(
                status,
                Some("invalid_api_key"),
                &[],
                &format!("Incorrect API key provided: {}", sent.join(", ")),
            )
        }
        Reply::Hang(d) => {
            tokio::time::sleep(d).await;
            json_response(completion(&call, "stop", false))
        }
    }
}

/// The deterministic answer to a prompt.
pub fn answer_for(prompt: &str) -> String {
    format!("Answer: {prompt}")
}

/// A completion echoing the prompt; with logprobs split on spaces, top alternatives sorted.
fn completion(call: &Call, finish_reason: &str, filtered: bool) -> Value {
    let text = answer_for(&call.prompt);
    let k = call.body["top_logprobs"].as_u64().unwrap_or(0) as usize;
    let want_logprobs = call.body["logprobs"].as_bool().unwrap_or(false);
    let tokens = split_tokens(&text);
    let logprobs = want_logprobs.then(|| {
        let content: Vec<Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let lp = -0.05 * (i % 7) as f64;
                let mut top = vec![json!({"token": t, "logprob": lp, "bytes": t.as_bytes()})];
                for j in 1..k {
                    top.push(json!({"token": format!("alt{j}"), "logprob": lp - j as f64, "bytes": format!("alt{j}").as_bytes()}));
                }
                json!({"token": t, "logprob": lp, "bytes": t.as_bytes(), "top_logprobs": if k == 0 { vec![] } else { top }})
            })
            .collect();
        json!({"content": content, "refusal": null})
    });
    let mut choice = json!({
        "index": 0,
        "message": {"role": "assistant", "content": text},
        "finish_reason": finish_reason,
        "logprobs": logprobs,
    });
    let mut out = json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_764_000_000u32,
        "model": call.body["model"].as_str().unwrap_or("test-model"),
        "usage": {
            "prompt_tokens": call.prompt.split_whitespace().count() + 8,
            "completion_tokens": tokens.len(),
            "total_tokens": call.prompt.split_whitespace().count() + 8 + tokens.len()
        },
    });
    if filtered {
        choice["content_filter_results"] = json!({"violence": {"filtered": true, "severity": "medium"}});
        out["prompt_filter_results"] = json!([{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}}]);
    }
    out["choices"] = json!([choice]);
    out
}

/// Splits into tokens that concatenate back to `text`: words with their leading space.
pub fn split_tokens(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        if c == ' ' && !current.is_empty() {
            tokens.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    if !current.is_empty() {
        tokens.push(current);
    }
    tokens
}

fn json_response(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

pub(crate) fn error_response(
    status: u16,
    code: Option<&str>,
    headers: &[(&'static str, String)],
    message: &str,
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({"error": {"message": message, "type": code.unwrap_or("server_error"), "code": code, "param": null}});
    let mut response = (status, axum::Json(body)).into_response();
    for (name, value) in headers {
        response
            .headers_mut()
            .insert(*name, value.parse().expect("a valid header value"));
    }
    response
}

/// `n` distinct prompts.
pub fn prompts(n: usize) -> Vec<distill_data::Prompt> {
    (0..n)
        .map(|i| distill_data::Prompt::from_text(Some("Be brief."), format!("question number {i}")))
        .collect()
}
