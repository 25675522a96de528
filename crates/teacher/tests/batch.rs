//! Batch mode against a scripted Files + Batches server: submit, poll, download, merge; resume
//! by batch id; faults on the control requests.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Call, FaultServer, Reply, answer_for, prompts};
use distill_data::{Prompt, read_file};
use distill_teacher::batch::{BatchEvent, BatchOptions, BatchRunner, BatchState, batch_state_path};
use distill_teacher::engine::{FailureRecord, failures_path};
use distill_teacher::pricing::Price;
use distill_teacher::retry::RetryPolicy;
use distill_teacher::{AzureSettings, AzureTeacher, CancellationToken, OpenAiSettings, OpenAiTeacher};

fn openai(server: &FaultServer) -> OpenAiTeacher {
    let settings = OpenAiSettings {
        base_url: server.base_url(),
        api_key: None,
        organization: None,
        project: None,
    };
    OpenAiTeacher::new(&settings, "test-model").unwrap()
}

fn options(dir: &std::path::Path, n: usize) -> BatchOptions {
    let mut o = BatchOptions::new(n, dir.join("out.jsonl"));
    o.poll_interval = Duration::from_millis(5);
    o.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(2),
        ..Default::default()
    };
    o.params.top_logprobs = 2;
    o
}

fn failures(out: &std::path::Path) -> Vec<FailureRecord> {
    std::fs::read_to_string(failures_path(out))
        .map(|t| t.lines().map(|l| serde_json::from_str(l).unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn submit_poll_download_merge() {
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    server.batch().create_429_once.store(true, Ordering::SeqCst);
    server.batch().poll_500_once.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let mut ps: Vec<Prompt> = prompts(6);
    ps.push(Prompt::from_text(None, "please FAIL this one"));
    ps.push(Prompt::from_text(None, "this one gets LOST"));
    let mut o = options(dir.path(), 8);
    o.prices.insert(
        "test-model",
        Price {
            input_per_mtok: 2.0,
            output_per_mtok: 4.0,
        },
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let summary = BatchRunner::openai(&openai(&server), o)
        .with_events(tx)
        .run(ps.clone(), CancellationToken::new())
        .await
        .unwrap();

    let out = dir.path().join("out.jsonl");
    let examples = read_file(&out).unwrap();
    assert_eq!(examples.len(), 6);
    for e in &examples {
        assert_eq!(e.response, answer_for(e.prompt_text().unwrap()));
        assert_eq!(e.metadata["batch"], true);
        assert!(
            e.logprobs
                .as_ref()
                .unwrap()
                .iter()
                .all(|t| t.top_logprobs.len() == 2)
        );
    }
    let f = failures(&out);
    assert_eq!(f.len(), 2);
    assert!(
        f.iter()
            .any(|r| r.prompt.contains("FAIL") && r.reason.contains("HTTP 400"))
    );
    assert!(
        f.iter()
            .any(|r| r.prompt.contains("LOST") && r.reason.contains("server_error"))
    );
    assert_eq!((summary.merged, summary.failed, summary.done), (6, 2, 6));
    assert!(!summary.pending);
    assert_eq!(summary.status.as_deref(), Some("completed"));
    // Half price.
    let acc = summary.accounting;
    let full = (acc.prompt_tokens as f64 * 2.0 + acc.completion_tokens as f64 * 4.0) / 1e6;
    assert!(acc.prompt_tokens > 0 && (acc.cost_usd - full / 2.0).abs() < 1e-12);
    // The state file is gone once the results are merged.
    assert!(!batch_state_path(&out).exists());

    let b = server.batch();
    assert_eq!(b.uploads.load(Ordering::SeqCst), 1);
    assert_eq!(
        b.creates.load(Ordering::SeqCst),
        1,
        "the 429 on create was retried once"
    );
    assert_eq!(b.last_purpose.lock().unwrap().as_deref(), Some("batch"));
    assert!(b.polls.load(Ordering::SeqCst) >= 3, "the 500 on poll was retried");
    assert!(server.seen().is_empty(), "batch mode sends no live requests");
    let mut retried = 0;
    while let Ok(ev) = rx.try_recv() {
        if let BatchEvent::Retrying { .. } = ev {
            retried += 1;
        }
    }
    assert_eq!(retried, 2);
}

#[tokio::test]
async fn resumes_by_batch_id_without_resubmitting() {
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    server.batch().polls_until_done.store(4, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let ps = prompts(10);

    // First run: stop as soon as the batch is submitted.
    let cancel = CancellationToken::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let c2 = cancel.clone();
    tokio::spawn(async move {
        while let Some(ev) = rx.recv().await {
            if matches!(ev, BatchEvent::Submitted { .. }) {
                c2.cancel();
            }
        }
    });
    let teacher = openai(&server);
    let summary = BatchRunner::openai(&teacher, options(dir.path(), 10))
        .with_events(tx)
        .run(ps.clone(), cancel)
        .await
        .unwrap();
    assert!(summary.pending);
    let state: BatchState = serde_json::from_slice(&std::fs::read(batch_state_path(&out)).unwrap()).unwrap();
    assert_eq!(Some(state.batch_id.clone().unwrap()), summary.batch_id);
    assert_eq!(state.custom_ids.len(), 10);

    // Without resume, the pending batch is not silently abandoned.
    let err = BatchRunner::openai(&teacher, options(dir.path(), 10))
        .run(ps.clone(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("pending batch"), "{err}");

    let mut o = options(dir.path(), 10);
    o.resume = true;
    let summary = BatchRunner::openai(&teacher, o)
        .run(ps.clone(), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((summary.merged, summary.done), (10, 10));
    let b = server.batch();
    assert_eq!(
        (b.uploads.load(Ordering::SeqCst), b.creates.load(Ordering::SeqCst)),
        (1, 1)
    );
    assert!(!batch_state_path(&out).exists());

    // Done: a further resume has nothing to submit.
    let mut o = options(dir.path(), 10);
    o.resume = true;
    let summary = BatchRunner::openai(&teacher, o)
        .run(ps, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((summary.merged, summary.batch_id), (0, None));
    assert_eq!(b.uploads.load(Ordering::SeqCst), 1);
    assert_eq!(read_file(&out).unwrap().len(), 10);
}

#[tokio::test]
async fn merge_interrupted_halfway_is_repeated_without_duplicates() {
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    let ps = prompts(6);
    let teacher = openai(&server);
    BatchRunner::openai(&teacher, options(dir.path(), 6))
        .run(ps.clone(), CancellationToken::new())
        .await
        .unwrap();
    // Simulate a crash after half of the merge: keep 3 lines and a torn fourth, and put the
    // state file back.
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(
        &out,
        format!("{}\n{}\n{}\n{}", lines[0], lines[1], lines[2], &lines[3][..20]),
    )
    .unwrap();
    let state = BatchState {
        input_file_id: "file-1".into(),
        batch_id: Some("batch-2".into()),
        custom_ids: ps.iter().map(|p| p.id.clone()).collect(),
        model: "test-model".into(),
    };
    std::fs::write(batch_state_path(&out), serde_json::to_vec(&state).unwrap()).unwrap();
    let mut o = options(dir.path(), 6);
    o.resume = true;
    let summary = BatchRunner::openai(&teacher, o)
        .run(ps, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!((summary.merged, summary.done), (3, 6));
    let ids: Vec<String> = read_file(&out).unwrap().into_iter().map(|e| e.id).collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!((ids.len(), unique.len()), (6, 6));
    assert_eq!(server.batch().creates.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn azure_batch_urls_and_api_version() {
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    let settings = AzureSettings {
        endpoint: server.root_url(),
        deployment: "gpt4o-global-batch".into(),
        api_version: "2024-10-21".into(),
        auth: distill_teacher::AzureAuth::ApiKey("k".to_owned().into()),
    };
    let teacher = AzureTeacher::new(&settings).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let summary = BatchRunner::azure(&teacher, options(dir.path(), 3))
        .run(prompts(3), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.merged, 3);
    let b = server.batch();
    assert_eq!(b.last_api_version.lock().unwrap().as_deref(), Some("2024-10-21"));
    let example = &read_file(dir.path().join("out.jsonl")).unwrap()[0];
    let t = example.teacher.as_ref().unwrap();
    assert_eq!(
        (t.provider.as_str(), t.model.as_str()),
        ("azure", "gpt4o-global-batch")
    );
}
