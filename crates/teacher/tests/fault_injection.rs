//! The engine against a scripted server: for every fault, every prompt ends either in the
//! dataset or in the failures file, never both, never lost; permanent errors are not retried;
//! server wait hints are honoured.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::{Call, FaultServer, Reply, answer_for, prompts};
use distill_data::{FinishReason, Prompt, read_file};
use distill_teacher::engine::{FailureRecord, failures_path};
use distill_teacher::retry::RetryPolicy;
use distill_teacher::{
    CancellationToken, Engine, Error, Event, GenerateOptions, OpenAiSettings, OpenAiTeacher, StopReason,
    Summary, Teacher,
};

fn teacher(server: &FaultServer) -> Arc<dyn Teacher> {
    let settings = OpenAiSettings {
        base_url: server.base_url(),
        api_key: None,
        organization: None,
        project: None,
    };
    Arc::new(OpenAiTeacher::new(&settings, "test-model").unwrap())
}

fn options(dir: &Path, n: usize) -> GenerateOptions {
    let mut o = GenerateOptions::new(n, dir.join("out.jsonl"));
    o.concurrency = 4;
    o.retry = RetryPolicy {
        max_attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
        max_retry_after: Duration::from_secs(2),
    };
    o.request_timeout = Duration::from_secs(5);
    o
}

fn written_ids(path: &Path) -> Vec<String> {
    if !path.exists() {
        return Vec::new();
    }
    read_file(path).unwrap().into_iter().map(|e| e.id).collect()
}

fn failures(output: &Path) -> Vec<FailureRecord> {
    match std::fs::read_to_string(failures_path(output)) {
        Ok(text) => text.lines().map(|l| serde_json::from_str(l).unwrap()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Every prompt is written or failed, exactly once; returns (written, failed) id sets.
fn assert_accounted(output: &Path, prompts: &[Prompt]) -> (BTreeSet<String>, BTreeSet<String>) {
    let written = written_ids(output);
    let failed: Vec<String> = failures(output).into_iter().map(|f| f.id).collect();
    let w: BTreeSet<String> = written.iter().cloned().collect();
    let f: BTreeSet<String> = failed.iter().cloned().collect();
    assert_eq!(w.len(), written.len(), "duplicate ids in the dataset");
    assert_eq!(f.len(), failed.len(), "duplicate ids in the failures file");
    assert!(w.is_disjoint(&f), "an id is both written and failed");
    let all: BTreeSet<String> = prompts.iter().map(|p| p.id.clone()).collect();
    let union: BTreeSet<String> = w.union(&f).cloned().collect();
    assert_eq!(union, all, "every prompt must be written or failed");
    (w, f)
}

async fn run(server: &FaultServer, opts: GenerateOptions, prompts: &[Prompt]) -> Result<Summary, Error> {
    Engine::new(teacher(server), opts)
        .run(prompts.to_vec(), CancellationToken::new())
        .await
}

#[tokio::test]
async fn rate_limit_storm_honours_retry_after_ms() {
    let server = FaultServer::start(Duration::ZERO, |c: &Call| {
        if c.attempt <= 3 {
            Reply::Error {
                status: 429,
                code: Some("rate_limit_exceeded"),
                headers: vec![("retry-after-ms", "60".into()), ("retry-after", "1".into())],
            }
        } else {
            Reply::Ok
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(12);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let summary = Engine::new(teacher(&server), options(dir.path(), 12))
        .with_events(tx)
        .run(ps.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.stop, StopReason::Completed);
    let (w, f) = assert_accounted(&dir.path().join("out.jsonl"), &ps);
    assert_eq!((w.len(), f.len()), (12, 0));
    assert_eq!(summary.progress.retries, 36);
    let mut by_prompt: HashMap<String, u32> = HashMap::new();
    for s in server.seen() {
        *by_prompt.entry(s.call.prompt).or_default() += 1;
    }
    assert!(by_prompt.values().all(|&n| n == 4), "{by_prompt:?}");
    // retry-after-ms wins over Retry-After: each wait is the 60 ms hint plus at most 10%
    // jitter (the engine's chosen delay, not a clock reading, so nothing here can flake).
    let mut retries = 0;
    while let Ok(ev) = rx.try_recv() {
        if let Event::Retrying { delay, .. } = ev.event {
            retries += 1;
            assert!(
                delay >= Duration::from_millis(60) && delay <= Duration::from_millis(66),
                "{delay:?}"
            );
        }
    }
    assert_eq!(retries, 36);
}

#[tokio::test]
async fn server_errors_are_retried() {
    let server = FaultServer::start(Duration::ZERO, |c: &Call| match c.attempt {
        1 => Reply::status(500),
        2 => Reply::status(503),
        _ => Reply::Ok,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(10);
    let summary = run(&server, options(dir.path(), 10), &ps).await.unwrap();
    let (w, _) = assert_accounted(&dir.path().join("out.jsonl"), &ps);
    assert_eq!(w.len(), 10);
    assert!(server.attempts().values().all(|&n| n == 3));
    assert_eq!(summary.progress.failed, 0);
}

#[tokio::test]
async fn timeouts_are_retried() {
    let server = FaultServer::start(Duration::ZERO, |c: &Call| {
        if c.attempt == 1 {
            Reply::Hang(Duration::from_secs(3))
        } else {
            Reply::Ok
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(6);
    let mut o = options(dir.path(), 6);
    o.request_timeout = Duration::from_millis(200);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let summary = Engine::new(teacher(&server), o)
        .with_events(tx)
        .run(ps.clone(), CancellationToken::new())
        .await
        .unwrap();
    let (w, _) = assert_accounted(&dir.path().join("out.jsonl"), &ps);
    assert_eq!(w.len(), 6);
    // Each first attempt was abandoned at the deadline and retried, not waited out.
    assert_eq!(summary.progress.retries, 6);
    let mut timed_out = 0;
    while let Ok(ev) = rx.try_recv() {
        if let Event::Retrying { reason, .. } = ev.event {
            assert!(reason.contains("timed out"), "{reason}");
            timed_out += 1;
        }
    }
    assert_eq!(timed_out, 6);
}

#[tokio::test]
async fn malformed_json_is_retried() {
    let server = FaultServer::start(Duration::ZERO, |c: &Call| {
        if c.attempt == 1 {
            Reply::Malformed
        } else {
            Reply::Ok
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(8);
    run(&server, options(dir.path(), 8), &ps).await.unwrap();
    let (w, _) = assert_accounted(&dir.path().join("out.jsonl"), &ps);
    assert_eq!(w.len(), 8);
}

#[tokio::test]
async fn retry_cap_sends_prompts_to_the_failures_file() {
    // Prompts 0, 3, 6, … always fail with 502; the rest succeed.
    let server = FaultServer::start(Duration::ZERO, |c: &Call| {
        let n: usize = c.prompt.rsplit(' ').next().unwrap().parse().unwrap();
        if n.is_multiple_of(3) {
            Reply::status(502)
        } else {
            Reply::Ok
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(12);
    let summary = run(&server, options(dir.path(), 12), &ps).await.unwrap();
    let output = dir.path().join("out.jsonl");
    let (w, f) = assert_accounted(&output, &ps);
    assert_eq!((w.len(), f.len()), (8, 4));
    assert_eq!(summary.stop, StopReason::SourceExhausted);
    assert_eq!(
        summary.failures_file.as_deref(),
        Some(failures_path(&output).as_path())
    );
    for rec in failures(&output) {
        assert_eq!(rec.attempts, 4);
        assert!(rec.reason.contains("502"), "{}", rec.reason);
        assert!(rec.prompt.starts_with("question number"));
        assert_eq!(rec.messages.len(), 2);
    }
}

#[tokio::test]
async fn failed_prompts_are_replaced_to_reach_n() {
    let server = FaultServer::start(Duration::ZERO, |c: &Call| {
        if c.prompt.ends_with(" 1") || c.prompt.ends_with(" 2") {
            Reply::status(500)
        } else {
            Reply::Ok
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(20);
    let summary = run(&server, options(dir.path(), 10), &ps).await.unwrap();
    assert_eq!(summary.stop, StopReason::Completed);
    assert_eq!(written_ids(&dir.path().join("out.jsonl")).len(), 10);
    assert_eq!(failures(&dir.path().join("out.jsonl")).len(), 2);
}

#[tokio::test]
async fn random_mixed_faults_lose_nothing() {
    // A seeded mix of every transient fault on half of all requests.
    let server = FaultServer::start(Duration::ZERO, |c: &Call| {
        let h = c.prompt.bytes().fold(c.attempt as u64 * 0x9E37_79B9, |h, b| {
            h.wrapping_mul(31).wrapping_add(b as u64)
        });
        match h % 10 {
            0 => Reply::Error {
                status: 429,
                code: None,
                headers: vec![("retry-after-ms", "5".into())],
            },
            1 => Reply::status(500),
            2 => Reply::Malformed,
            3 => Reply::Hang(Duration::from_secs(2)),
            4 => Reply::Error {
                status: 429,
                code: None,
                headers: vec![("x-ratelimit-reset-requests", "10ms".into())],
            },
            _ => Reply::Ok,
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(40);
    let mut o = options(dir.path(), 40);
    o.request_timeout = Duration::from_millis(150);
    o.retry.max_attempts = 3;
    let summary = run(&server, o, &ps).await.unwrap();
    let (w, f) = assert_accounted(&dir.path().join("out.jsonl"), &ps);
    assert_eq!(w.len() + f.len(), 40);
    assert_eq!(summary.progress.done, w.len());
    assert_eq!(summary.progress.failed, f.len());
    assert!(summary.progress.retries > 0);
    // Every written example is the server's answer for its prompt.
    for e in read_file(dir.path().join("out.jsonl")).unwrap() {
        assert_eq!(e.response, answer_for(e.prompt_text().unwrap()));
    }
}

#[tokio::test]
async fn bad_request_is_permanent_and_the_run_goes_on() {
    let server = FaultServer::start(Duration::ZERO, |c: &Call| {
        if c.prompt.ends_with(" 4") {
            Reply::status(400)
        } else {
            Reply::Ok
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(8);
    run(&server, options(dir.path(), 8), &ps).await.unwrap();
    let (w, f) = assert_accounted(&dir.path().join("out.jsonl"), &ps);
    assert_eq!((w.len(), f.len()), (7, 1));
    assert_eq!(
        server.attempts()["question number 4"],
        1,
        "400 must not be retried"
    );
    assert_eq!(failures(&dir.path().join("out.jsonl"))[0].attempts, 1);
}

#[tokio::test]
async fn insufficient_quota_stops_the_run_without_retrying() {
    let server = FaultServer::start(Duration::ZERO, |c: &Call| {
        if c.prompt.ends_with(" 5") {
            Reply::Error {
                status: 429,
                code: Some("insufficient_quota"),
                headers: vec![("retry-after", "0".into())],
            }
        } else {
            Reply::Ok
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(30);
    let mut o = options(dir.path(), 30);
    o.concurrency = 1;
    let err = run(&server, o, &ps).await.unwrap_err();
    assert!(matches!(&err, Error::Fatal { .. }), "{err:?}");
    assert_eq!(
        server.attempts()["question number 5"],
        1,
        "insufficient_quota must not be retried"
    );
    let output = dir.path().join("out.jsonl");
    assert_eq!(written_ids(&output).len(), 5);
    let f = failures(&output);
    assert_eq!(f.len(), 1);
    assert!(f[0].reason.contains("insufficient_quota"), "{}", f[0].reason);
    // No request was sent after the fatal one.
    assert_eq!(server.seen().len(), 6);
}

#[tokio::test]
async fn content_filter_is_recorded() {
    let server = FaultServer::start(Duration::ZERO, |c: &Call| {
        if c.prompt.ends_with(" 1") {
            Reply::ContentFilter
        } else {
            Reply::Ok
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(3);
    run(&server, options(dir.path(), 3), &ps).await.unwrap();
    let examples = read_file(dir.path().join("out.jsonl")).unwrap();
    let filtered: Vec<_> = examples
        .iter()
        .filter(|e| e.finish_reason() == Some(&FinishReason::ContentFilter))
        .collect();
    assert_eq!(filtered.len(), 1);
    let cf = &filtered[0].metadata["content_filter"];
    assert_eq!(cf["completion"]["violence"]["filtered"], true);
    assert_eq!(
        cf["prompt"][0]["content_filter_results"]["hate"]["severity"],
        "safe"
    );
    assert!(
        examples
            .iter()
            .filter(|e| e.id != filtered[0].id)
            .all(|e| !e.metadata.contains_key("content_filter"))
    );
}

#[tokio::test]
async fn cancel_then_resume_gives_exactly_n() {
    let server = FaultServer::start(Duration::from_millis(20), |_: &Call| Reply::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(40);
    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let engine = Engine::new(teacher(&server), options(dir.path(), 30)).with_events(tx);
    let c2 = cancel.clone();
    let watcher = tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if ev.progress.done >= 10 {
                c2.cancel();
            }
        }
    });
    let summary = engine.run(ps.clone(), cancel).await.unwrap();
    drop(engine);
    watcher.await.unwrap();
    assert_eq!(summary.stop, StopReason::Cancelled);
    let first = written_ids(&dir.path().join("out.jsonl"));
    assert!(first.len() >= 10 && first.len() < 30, "{}", first.len());
    // In-flight requests were finished and written, not dropped on the floor.
    assert_eq!(summary.progress.in_flight, 0);

    // Without resume, an existing file is refused rather than overwritten.
    let err = run(&server, options(dir.path(), 30), &ps).await.unwrap_err();
    assert!(err.to_string().contains("resume"), "{err}");

    let mut o = options(dir.path(), 30);
    o.resume = true;
    let summary = run(&server, o, &ps).await.unwrap();
    assert_eq!(summary.stop, StopReason::Completed);
    assert_eq!(summary.progress.resumed, first.len());
    let ids = written_ids(&dir.path().join("out.jsonl"));
    let unique: BTreeSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (30, 30));
    // The resumed run asked only for what was missing.
    assert_eq!(server.seen().len(), 30);
}

#[tokio::test]
async fn dataset_records_teacher_usage_cost_and_logprobs() {
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(4);
    let mut o = options(dir.path(), 4);
    o.params.top_logprobs = 3;
    o.prices.insert(
        "test-model",
        distill_teacher::pricing::Price {
            input_per_mtok: 1.0,
            output_per_mtok: 2.0,
        },
    );
    let summary = run(&server, o, &ps).await.unwrap();
    let examples = read_file(dir.path().join("out.jsonl")).unwrap();
    let mut prompt_tokens = 0;
    let mut completion_tokens = 0;
    for e in &examples {
        let t = e.teacher.as_ref().unwrap();
        assert_eq!(
            (t.provider.as_str(), t.model.as_str()),
            ("openai-compatible", "test-model")
        );
        assert_eq!(t.finish_reason, Some(FinishReason::Stop));
        let u = t.usage.unwrap();
        prompt_tokens += u.prompt_tokens;
        completion_tokens += u.completion_tokens;
        let lp = e.logprobs.as_ref().unwrap();
        assert_eq!(
            lp.iter().map(|t| t.token.as_str()).collect::<String>(),
            e.response
        );
        assert!(
            lp.iter()
                .all(|t| t.top_logprobs.len() == 3 && t.top_logprobs[0].logprob == t.logprob)
        );
    }
    let acc = summary.progress.accounting;
    assert_eq!(
        (acc.prompt_tokens, acc.completion_tokens),
        (prompt_tokens, completion_tokens)
    );
    let expected = (prompt_tokens as f64 * 1.0 + completion_tokens as f64 * 2.0) / 1e6;
    assert!((acc.cost_usd - expected).abs() < 1e-12);
    assert_eq!(acc.unpriced_requests, 0);
}

#[tokio::test]
async fn a_cost_budget_stops_new_requests_and_a_resume_continues() {
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let ps = prompts(40);
    let price = distill_teacher::pricing::Price {
        input_per_mtok: 1.0,
        output_per_mtok: 2.0,
    };
    let mut o = options(dir.path(), 40);
    o.prices.insert("test-model", price);
    // Any answer costs more than this: the first one written reaches the budget.
    o.max_cost_usd = Some(1e-9);
    let summary = run(&server, o.clone(), &ps).await.unwrap();
    assert_eq!(summary.stop, StopReason::BudgetReached);
    let written = written_ids(&dir.path().join("out.jsonl")).len();
    assert!(
        (1..=o.concurrency + 1).contains(&written),
        "{written} answers for a budget of one (concurrency {})",
        o.concurrency
    );
    assert!(summary.progress.accounting.cost_usd >= 1e-9);

    o.max_cost_usd = None;
    o.resume = true;
    let summary = run(&server, o, &ps).await.unwrap();
    assert_eq!(summary.stop, StopReason::Completed);
    assert_eq!(written_ids(&dir.path().join("out.jsonl")).len(), 40);
}

#[test]
fn the_cost_estimate_prices_every_prompt_at_its_whole_budget() {
    let mut prices = distill_teacher::pricing::PriceTable::empty();
    prices.insert(
        "m",
        distill_teacher::pricing::Price {
            input_per_mtok: 1.0,
            output_per_mtok: 10.0,
        },
    );
    let params = distill_teacher::GenerationParams {
        max_tokens: Some(100),
        ..Default::default()
    };
    let ps = prompts(3);
    let estimate = distill_teacher::engine::estimate_cost(&ps, &params, &prices, "m").unwrap();
    let prompt_tokens: usize = ps
        .iter()
        .map(|p| p.messages.iter().map(|m| m.content.len() + 16).sum::<usize>() / 4)
        .sum();
    let want = (prompt_tokens as f64 * 1.0 + 3.0 * 100.0 * 10.0) / 1e6;
    assert!((estimate - want).abs() < 1e-12, "{estimate} vs {want}");
    assert_eq!(
        distill_teacher::engine::estimate_cost(&ps, &params, &prices, "unpriced"),
        None
    );
}

#[tokio::test]
async fn duplicate_prompts_in_the_source_are_asked_once() {
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let mut ps = prompts(5);
    ps.extend(prompts(5));
    let summary = run(&server, options(dir.path(), 10), &ps).await.unwrap();
    assert_eq!(summary.stop, StopReason::SourceExhausted);
    assert_eq!(written_ids(&dir.path().join("out.jsonl")).len(), 5);
    assert_eq!(server.seen().len(), 5);
}

#[tokio::test]
async fn discovers_the_served_model() {
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    let settings = OpenAiSettings {
        base_url: server.base_url(),
        api_key: None,
        organization: None,
        project: None,
    };
    assert_eq!(
        distill_teacher::discover_model(&settings).await.unwrap(),
        "served-model"
    );
    let teacher = OpenAiTeacher::new(&settings, "x").unwrap();
    assert_eq!(
        teacher.list_models().await.unwrap(),
        ["served-model", "other-model"]
    );
    let cloud = OpenAiSettings {
        base_url: "https://api.openai.com/v1".into(),
        ..settings
    };
    let err = distill_teacher::discover_model(&cloud).await.unwrap_err();
    assert!(err.to_string().contains("model"), "{err}");
}

#[tokio::test]
async fn resume_clears_failures_that_now_succeed() {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let server = FaultServer::start(Duration::ZERO, move |c: &Call| {
        if c.prompt.ends_with(" 1") && !flag.load(std::sync::atomic::Ordering::SeqCst) {
            Reply::status(500)
        } else {
            Reply::Ok
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    let ps = prompts(4);
    run(&server, options(dir.path(), 4), &ps).await.unwrap();
    assert_eq!(failures(&output).len(), 1);
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut o = options(dir.path(), 4);
    o.resume = true;
    let summary = run(&server, o, &ps).await.unwrap();
    assert_eq!(summary.stop, StopReason::Completed);
    assert!(summary.failures_file.is_none());
    assert!(
        !failures_path(&output).exists(),
        "a stale failures file would list a written prompt"
    );
    let (w, f) = assert_accounted(&output, &ps);
    assert_eq!((w.len(), f.len()), (4, 0));
}

/// A teacher in this process that answers at once and notes when each request came, on the
/// runtime's clock (paused in the test below, so the pacing is exact).
struct Clocked {
    calls: std::sync::Mutex<Vec<tokio::time::Instant>>,
}

#[async_trait::async_trait]
impl Teacher for Clocked {
    fn id(&self) -> distill_teacher::TeacherId {
        distill_teacher::TeacherId {
            provider: "local".into(),
            model: "clocked".into(),
        }
    }

    async fn complete(
        &self,
        messages: &[distill_data::Message],
        _params: &distill_teacher::GenerationParams,
    ) -> Result<distill_teacher::Completion, Error> {
        self.calls.lock().unwrap().push(tokio::time::Instant::now());
        Ok(distill_teacher::Completion {
            choices: vec![distill_teacher::Choice {
                text: answer_for(&messages.last().unwrap().content),
                finish_reason: Some(FinishReason::Stop),
                logprobs: None,
                content_filter_results: None,
            }],
            usage: None,
            latency: Duration::ZERO,
            model: "clocked".into(),
            created: None,
            prompt_filter_results: None,
        })
    }
}

#[tokio::test(start_paused = true)]
async fn client_side_rate_limit_paces_requests() {
    let clocked = Arc::new(Clocked {
        calls: std::sync::Mutex::new(Vec::new()),
    });
    let dir = tempfile::tempdir().unwrap();
    let mut o = options(dir.path(), 36);
    o.concurrency = 16;
    o.sync = distill_data::SyncPolicy::OnClose;
    // 1,200 requests/min = 20/s, with a burst of 12.
    o.limits = distill_teacher::limiter::RateLimits {
        requests_per_minute: Some(1_200),
        tokens_per_minute: None,
        burst: 0.01,
    };
    let started = tokio::time::Instant::now();
    Engine::new(clocked.clone(), o)
        .run(prompts(36), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(written_ids(&dir.path().join("out.jsonl")).len(), 36);
    let calls = clocked.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 36);
    // 12 at once, then 24 more at 20/s: the last at 1.2 s.
    let at: Vec<Duration> = calls.iter().map(|c| *c - started).collect();
    assert!(at[..12].iter().all(|t| *t < Duration::from_millis(1)), "{at:?}");
    let last = *at.last().unwrap();
    assert!(
        last >= Duration::from_millis(1_195) && last <= Duration::from_millis(1_210),
        "{last:?}"
    );
    let in_first_half_second = at.iter().filter(|t| **t < Duration::from_millis(500)).count();
    assert_eq!(in_first_half_second, 12 + 9, "{at:?}");
}
