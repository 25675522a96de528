//! A bounded load test for any OpenAI-compatible server (ours or llama.cpp's): N chat
//! requests at concurrency C, every `bad_every`-th one malformed. Reports errors, the latency
//! percentiles of the good requests and the total generated tokens per second.
//!
//! ```text
//! cargo run --release -p distill-serve --example load -- URL MODEL [requests] [concurrency] [max_tokens] [bad_every]
//! ```
//! URL is the server's `/v1` base. Defaults: 200 requests, concurrency 16, 64 tokens, every 10th bad.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PROMPTS: [&str; 8] = [
    "Explain the concept of machine learning to a 10-year old.",
    "What are three tips for staying healthy?",
    "Describe how a rainbow forms.",
    "Write a short poem about the sea.",
    "Why do cats purr?",
    "How does a bicycle stay upright?",
    "Give me a recipe for pancakes.",
    "What is the difference between weather and climate?",
];

/// Malformed or invalid bodies, each of which must get a 4xx.
const BAD: [&str; 4] = [
    r#"{"model": "MODEL", "messages": "#,
    r#"{"model": "MODEL", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}"#,
    r#"{"model": "MODEL", "messages": []}"#,
    r#"{"messages": [{"role": "user", "content": "hi"}]}"#,
];

#[derive(Debug, Default)]
struct Outcome {
    latencies: Vec<f64>,
    tokens: usize,
    good_failed: Vec<String>,
    bad_rejected: usize,
    bad_accepted: Vec<String>,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(url), Some(model)) = (args.first(), args.get(1)) else {
        eprintln!("usage: load URL MODEL [requests] [concurrency] [max_tokens] [bad_every]");
        std::process::exit(2);
    };
    let number = |i: usize, default: usize| args.get(i).map_or(default, |v| v.parse().expect("a number"));
    let (requests, concurrency, max_tokens, bad_every) =
        (number(2, 200), number(3, 16), number(4, 64), number(5, 10));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()
        .expect("an HTTP client");
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, next, url, model) = (client.clone(), next.clone(), url.clone(), model.clone());
            tokio::spawn(async move {
                let mut outcome = Outcome::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= requests {
                        return outcome;
                    }
                    let bad = bad_every > 0 && i % bad_every == bad_every - 1;
                    let body = if bad {
                        BAD[i % BAD.len()].replace("MODEL", &model)
                    } else {
                        json!({
                            "model": model,
                            "messages": [{"role": "user", "content": PROMPTS[i % PROMPTS.len()]}],
                            "max_tokens": max_tokens,
                            "temperature": 0,
                            // Every answer runs to max_tokens, so that servers compare on equal work.
                            "ignore_eos": true,
                        })
                        .to_string()
                    };
                    let sent = Instant::now();
                    let response = client
                        .post(format!("{url}/chat/completions"))
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    let (status, answer) = match response {
                        Ok(r) => (
                            r.status().as_u16(),
                            r.json::<Value>().await.unwrap_or(Value::Null),
                        ),
                        Err(e) => (0, json!({"transport": e.to_string()})),
                    };
                    match (bad, status) {
                        (false, 200) => {
                            outcome.latencies.push(sent.elapsed().as_secs_f64());
                            outcome.tokens +=
                                answer["usage"]["completion_tokens"].as_u64().unwrap_or(0) as usize;
                        }
                        (false, _) => outcome.good_failed.push(format!("{status}: {answer}")),
                        (true, 400..=499) => outcome.bad_rejected += 1,
                        (true, _) => outcome.bad_accepted.push(format!("{status}: {answer}")),
                    }
                }
            })
        })
        .collect();
    let mut all = Outcome::default();
    for worker in workers {
        let outcome = worker.await.expect("a worker");
        all.latencies.extend(outcome.latencies);
        all.tokens += outcome.tokens;
        all.good_failed.extend(outcome.good_failed);
        all.bad_rejected += outcome.bad_rejected;
        all.bad_accepted.extend(outcome.bad_accepted);
    }
    let seconds = started.elapsed().as_secs_f64();
    all.latencies.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let n = all.latencies.len();
        if n == 0 {
            return f64::NAN;
        }
        all.latencies[((p / 100.0) * (n - 1) as f64).round() as usize]
    };
    println!(
        "{requests} requests at concurrency {concurrency}, {max_tokens} tokens each: {} good ok, {} good failed, {} bad \
         rejected (4xx), {} bad accepted",
        all.latencies.len(),
        all.good_failed.len(),
        all.bad_rejected,
        all.bad_accepted.len()
    );
    println!(
        "latency p50 {:.2} s, p95 {:.2} s, p99 {:.2} s; {:.1} s in all; {:.1} generated tokens/s, {:.2} requests/s",
        percentile(50.0),
        percentile(95.0),
        percentile(99.0),
        seconds,
        all.tokens as f64 / seconds,
        all.latencies.len() as f64 / seconds
    );
    for failure in all.good_failed.iter().chain(&all.bad_accepted).take(5) {
        println!("  {failure}");
    }
    if !all.good_failed.is_empty() || !all.bad_accepted.is_empty() {
        std::process::exit(1);
    }
}
