//! The server on loopback with SmolLM2-135M-Instruct, through a real HTTP client: every error
//! case in OpenAI's shape, backpressure, deadlines, disconnects, streaming, batching, and
//! log-probabilities equal to the model's own.

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;
mod support {
    pub mod own_logprobs;
}

use std::time::Duration;

use distill_serve::{ServeConfig, Server};
use distill_student::tch::Device;
use distill_student::tokenizer::Message;
use distill_student::{Precision, Pretrained};
use serde_json::{Value, json};
use support::own_logprobs::own_logprobs;
use tokio::sync::oneshot;

const MODEL: &str = "smollm2";

fn load() -> Pretrained {
    let mut model = Pretrained::load(assets::smollm2_gguf(), Device::Cpu).unwrap();
    model.prepare_for_generation(Precision::F32);
    model
}

/// A server on a free port; dropping it stops the server.
struct Running {
    url: String,
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    async fn start(config: ServeConfig) -> Self {
        let server = Server::new(load(), config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(listener, async {
            let _ = stopped.await;
        }));
        Self {
            url,
            client: reqwest::Client::new(),
            stop: Some(stop),
            served: Some(served),
        }
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .client
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Stops the server: it returns once the requests in flight are answered.
    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.served.take().unwrap().await.unwrap().unwrap();
    }
}

fn chat(content: &str, max_tokens: u64) -> Value {
    json!({
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    })
}

fn with(mut body: Value, extra: Value) -> Value {
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// Asserts an OpenAI-shaped error and returns its message.
fn error_of(status: u16, body: &Value, expected: u16, param: Option<&str>) -> String {
    assert_eq!(status, expected, "{body}");
    let error = &body["error"];
    assert!(
        error["message"].is_string() && error["type"].is_string(),
        "{body}"
    );
    assert!(
        error.get("param").is_some() && error.get("code").is_some(),
        "{body}"
    );
    if let Some(param) = param {
        assert_eq!(error["param"], param, "{body}");
    }
    error["message"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_an_openai_error_and_the_server_stays_up() {
    let mut config = ServeConfig::new(MODEL);
    config.api_key = Some("sekret".to_owned().into());
    let server = Running::start(config).await;
    let post = |body: &'static str, key: Option<&'static str>| {
        let mut request = server
            .client
            .post(format!("{}/v1/chat/completions", server.url))
            .header("content-type", "application/json")
            .body(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let good = r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}"#;

    // The key: missing, wrong, right.
    let (status, body) = post(good, None).await;
    assert!(error_of(status, &body, 401, None).contains("API key"));
    let (status, body) = post(good, Some("wrong")).await;
    error_of(status, &body, 401, None);
    let (status, body) = post(good, Some("sekret")).await;
    assert_eq!(status, 200, "{body}");

    let long_prompt = format!(
        r#"{{"model": "smollm2", "messages": [{{"role": "user", "content": "{}"}}]}}"#,
        "hello ".repeat(9000)
    );
    let long_prompt: &'static str = Box::leak(long_prompt.into_boxed_str());
    let cases: [(&str, u16, Option<&str>, &str); 14] = [
        (
            r#"{"model": "smollm2", "messages": "#,
            400,
            None,
            "parse the JSON",
        ),
        (r#"not json"#, 400, None, "parse the JSON"),
        (r#"{"messages": []}"#, 400, None, "model"),
        (
            r#"{"model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}]}"#,
            404,
            Some("model"),
            "gpt-4o",
        ),
        (
            r#"{"model": "smollm2", "messages": []}"#,
            400,
            Some("messages"),
            "empty",
        ),
        (
            r#"{"model": "smollm2", "messages": [{"role": "tool", "content": "x"}]}"#,
            400,
            Some("messages"),
            "tool",
        ),
        (
            r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "temperature": 3}"#,
            400,
            Some("temperature"),
            "between 0 and 2",
        ),
        (
            r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "top_p": 0}"#,
            400,
            Some("top_p"),
            "(0, 1]",
        ),
        (
            r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "n": 2}"#,
            400,
            Some("n"),
            "n must be 1",
        ),
        (
            r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 0}"#,
            400,
            Some("max_tokens"),
            "at least 1",
        ),
        (
            r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "logprobs": true, "top_logprobs": 21}"#,
            400,
            Some("top_logprobs"),
            "at most 20",
        ),
        (
            r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "top_logprobs": 3}"#,
            400,
            Some("top_logprobs"),
            "logprobs: true",
        ),
        (
            r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "stop": ["a","b","c","d","e"]}"#,
            400,
            Some("stop"),
            "at most 4",
        ),
        (
            long_prompt,
            400,
            Some("messages"),
            "maximum context length is 8192 tokens",
        ),
    ];
    for (body, expected, param, needle) in cases {
        let (status, answer) = post(body, Some("sekret")).await;
        let message = error_of(status, &answer, expected, param);
        assert!(
            message.contains(needle),
            "`{needle}` not in `{message}` for {:.80}",
            body
        );
    }
    // The prompt too long names both lengths.
    let (status, answer) = post(long_prompt, Some("sekret")).await;
    let message = error_of(status, &answer, 400, Some("messages"));
    assert!(
        message.contains("8192") && message.contains("resulted in 90"),
        "{message}"
    );
    // A prompt that fits, with a completion that does not.
    let (status, answer) = post(
        r#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 9000}"#,
        Some("sekret"),
    )
    .await;
    assert!(error_of(status, &answer, 400, Some("max_tokens")).contains("9000 in the completion"));

    // Routes and methods.
    let response = server
        .client
        .get(format!("{}/v1/nothing", server.url))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    error_of(status, &response.json().await.unwrap(), 404, None);
    let response = server
        .client
        .get(format!("{}/v1/chat/completions", server.url))
        .bearer_auth("sekret")
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    error_of(status, &response.json().await.unwrap(), 405, None);
    // /health and /metrics need no key; /v1/models does.
    let health = server
        .client
        .get(format!("{}/health", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let models = server
        .client
        .get(format!("{}/v1/models", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 401);
    let models: Value = server
        .client
        .get(format!("{}/v1/models", server.url))
        .bearer_auth("sekret")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], MODEL);
    // After all of that the server still answers.
    let (status, _) = post(good, Some("sekret")).await;
    assert_eq!(status, 200);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("distill_requests_total{route=\"/v1/chat/completions\",status=\"400\"} 15"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_429_with_retry_after() {
    let mut config = ServeConfig::new(MODEL);
    config.max_batch = 1;
    config.max_queue = 1;
    let server = std::sync::Arc::new(Running::start(config).await);
    let requests: Vec<_> = (0..5)
        .map(|_| {
            let server = server.clone();
            tokio::spawn(async move {
                let response = server
                    .client
                    .post(format!("{}/v1/chat/completions", server.url))
                    .json(&chat("Tell me a long story about a dragon.", 40))
                    .send()
                    .await
                    .unwrap();
                let retry_after = response.headers().get("retry-after").cloned();
                let status = response.status().as_u16();
                (status, retry_after, response.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        let (status, retry_after, body) = request.await.unwrap();
        if status == 429 {
            assert_eq!(retry_after.unwrap(), "1");
            error_of(status, &body, 429, None);
        } else {
            assert_eq!(status, 200, "{body}");
        }
        statuses.push(status);
    }
    // One decodes and one waits; the others arrive while both places are taken.
    assert!(statuses.contains(&200) && statuses.contains(&429), "{statuses:?}");
    std::sync::Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_past_its_deadline_is_a_504() {
    let mut config = ServeConfig::new(MODEL);
    config.request_timeout = Duration::ZERO;
    let server = Running::start(config).await;
    let (status, body) = server.post("/v1/chat/completions", &chat("Hi", 8)).await;
    assert!(error_of(status, &body, 504, None).contains("deadline"));
    server.stop().await;
}

/// The `data:` payloads of a server-sent event stream.
fn events(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_and_streamed_answers_agree_and_their_logprobs_are_the_models_own() {
    let server = Running::start(ServeConfig::new(MODEL)).await;
    let prompt = "What is the capital of France?";
    let request = with(chat(prompt, 24), json!({"logprobs": true, "top_logprobs": 5}));
    let (status, whole) = server.post("/v1/chat/completions", &request).await;
    assert_eq!(status, 200, "{whole}");
    let choice = &whole["choices"][0];
    let content = choice["message"]["content"].as_str().unwrap().to_owned();
    let entries = choice["logprobs"]["content"].as_array().unwrap();
    let usage = &whole["usage"];
    assert_eq!(whole["object"], "chat.completion");
    assert!(usage["prompt_tokens"].as_u64().unwrap() > 0);

    // The same logprobs as the model's teacher-forced forward, to 1e-4.
    let model = load();
    let own = own_logprobs(&model, &[Message::user(prompt)], 24);
    // Neither holds the end-of-sequence token.
    assert_eq!(entries.len(), own.len());
    for (i, (entry, own)) in entries.iter().zip(&own).enumerate() {
        assert_eq!(entry["token"], own.token, "token {i}");
        let got = entry["logprob"].as_f64().unwrap() as f32;
        assert!(
            (got - own.logprob).abs() <= 1e-4,
            "token {i}: {got} against {}",
            own.logprob
        );
        let alternatives = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(alternatives.len(), 5);
        for (alt, own) in alternatives.iter().zip(&own.top5) {
            assert!((alt["logprob"].as_f64().unwrap() as f32 - own).abs() <= 1e-4);
        }
    }

    // Streamed: a role chunk, the same text, the finish reason, the usage, then [DONE].
    let streamed = with(
        request.clone(),
        json!({"stream": true, "stream_options": {"include_usage": true}}),
    );
    let body = server
        .client
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&streamed)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let payloads = events(&body);
    assert_eq!(payloads.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = payloads[..payloads.len() - 1]
        .iter()
        .map(|p| serde_json::from_str(p).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"].get(0)?["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(text, content);
    let streamed_entries: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0)?["logprobs"]["content"].as_array())
        .flatten()
        .collect();
    assert_eq!(streamed_entries.len(), entries.len());
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"].as_array().unwrap().len(), 0);
    assert_eq!(last["usage"], *usage);
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        choice["finish_reason"]
    );

    // The completions endpoint, with the legacy logprobs.
    let (status, text) = server
        .post(
            "/v1/completions",
            &json!({"model": MODEL, "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0, "logprobs": 2}),
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text["object"], "text_completion");
    let logprobs = &text["choices"][0]["logprobs"];
    assert_eq!(logprobs["tokens"].as_array().unwrap().len(), 5);
    assert_eq!(logprobs["top_logprobs"][0].as_object().unwrap().len(), 2);
    assert_eq!(text["usage"]["completion_tokens"], 5);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_cut_the_answer() {
    let server = Running::start(ServeConfig::new(MODEL)).await;
    let (_, whole) = server
        .post("/v1/chat/completions", &chat("Count from 1 to 20.", 60))
        .await;
    let full = whole["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    // Cut at the second word of the whole answer.
    let stop = full.split_whitespace().nth(1).unwrap().to_owned();
    let (_, cut) = server
        .post(
            "/v1/chat/completions",
            &with(chat("Count from 1 to 20.", 60), json!({"stop": [stop.clone()]})),
        )
        .await;
    let text = cut["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text, &full[..full.find(&stop).unwrap()], "stop {stop:?}");
    assert_eq!(cut["choices"][0]["finish_reason"], "stop");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_decode_together_and_as_they_would_alone() {
    let mut config = ServeConfig::new(MODEL);
    config.batch_invariant = true;
    let server = std::sync::Arc::new(Running::start(config).await);
    let prompts = [
        "Name three colours.",
        "What is rain?",
        "Write a haiku about snow.",
        "Why is the sky blue?",
    ];
    let watcher = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut widest = 0;
            for _ in 0..200 {
                let metrics = server.metrics().await;
                let size = metrics
                    .lines()
                    .find_map(|l| l.strip_prefix("distill_batch_size "))
                    .and_then(|v| v.parse::<usize>().ok())
                    .unwrap_or(0);
                widest = widest.max(size);
                if widest == prompts.len() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            widest
        })
    };
    let together: Vec<_> = prompts
        .iter()
        .map(|p| {
            let server = server.clone();
            let body = chat(p, 32);
            tokio::spawn(async move { server.post("/v1/chat/completions", &body).await })
        })
        .collect();
    let mut answers = Vec::new();
    for request in together {
        let (status, body) = request.await.unwrap();
        assert_eq!(status, 200, "{body}");
        answers.push(
            body["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert!(watcher.await.unwrap() > 1, "the requests never shared a step");
    for (prompt, together) in prompts.iter().zip(&answers) {
        let (_, alone) = server.post("/v1/chat/completions", &chat(prompt, 32)).await;
        assert_eq!(alone["choices"][0]["message"]["content"], *together, "{prompt}");
    }
    std::sync::Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_frees_its_slot() {
    let mut config = ServeConfig::new(MODEL);
    config.max_batch = 1;
    let server = Running::start(config).await;
    let streamed = with(chat("Tell me a very long story.", 4000), json!({"stream": true}));
    let mut response = server
        .client
        .post(format!("{}/v1/chat/completions", server.url))
        .json(&streamed)
        .send()
        .await
        .unwrap();
    assert!(response.chunk().await.unwrap().is_some());
    drop(response);
    // The only slot comes free long before 4,000 tokens: the next request is answered.
    let (status, body) = server.post("/v1/chat/completions", &chat("Hi", 4)).await;
    assert_eq!(status, 200, "{body}");
    let metrics = server.metrics().await;
    assert!(metrics.contains("distill_cancelled_total 1"), "{metrics}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mangled_bodies_never_crash_the_server() {
    let mut config = ServeConfig::new(MODEL);
    config.request_timeout = Duration::from_secs(5);
    let server = Running::start(config).await;
    let good = br#"{"model": "smollm2", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2, "stream": false}"#;
    // A fixed xorshift stream: the same 300 bodies every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let noise = b"{}[]\":,0-9eE.+ \\\xff\x00truefalsenull";
    let mut answered = [0usize; 6];
    for _ in 0..300 {
        let mut body = good.to_vec();
        for _ in 0..1 + next() % 4 {
            let at = (next() as usize) % body.len();
            match next() % 3 {
                0 => body.truncate(at.max(1)),
                1 => body[at] = noise[(next() as usize) % noise.len()],
                _ => body.insert(at, noise[(next() as usize) % noise.len()]),
            }
        }
        let response = server
            .client
            .post(format!("{}/v1/chat/completions", server.url))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        // 504: a mangled `max_tokens` leaves the answer unbounded, and the deadline ends it.
        assert!(
            status < 500 || status == 504,
            "{status} for {}",
            String::from_utf8_lossy(&body)
        );
        answered[usize::from(status / 100)] += 1;
    }
    assert!(answered[4] > 200, "most mangled bodies are refused: {answered:?}");
    let (status, _) = server.post("/v1/chat/completions", &chat("Hi", 2)).await;
    assert_eq!(status, 200, "the server still answers");
    server.stop().await;
}
