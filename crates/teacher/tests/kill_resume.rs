//! Kill and resume: a generator process is SIGKILLed at about 50%, then rerun with resume;
//! the dataset ends with exactly N unique ids and no torn line.
//!
//! This test binary is its own helper: run with `DISTILL_KILL_CHILD=<base_url>` it is the
//! generator (the engine with resume on, against the given server); otherwise it is the test.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Call, FaultServer, Reply, answer_for, prompts};
use distill_teacher::{
    CancellationToken, Engine, GenerateOptions, OpenAiSettings, OpenAiTeacher, StopReason,
};

const N: usize = 40;
const CHILD_ENV: &str = "DISTILL_KILL_CHILD";

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    match std::env::var(CHILD_ENV) {
        Ok(base_url) => {
            let output = PathBuf::from(std::env::args().nth(1).expect("the output path"));
            runtime.block_on(child(base_url, output))
        }
        Err(_) => {
            runtime.block_on(parent());
            println!("test kill_resume ... ok");
            ExitCode::SUCCESS
        }
    }
}

async fn child(base_url: String, output: PathBuf) -> ExitCode {
    let settings = OpenAiSettings {
        base_url,
        api_key: None,
        organization: None,
        project: None,
    };
    let teacher = Arc::new(OpenAiTeacher::new(&settings, "test-model").expect("a teacher"));
    let mut options = GenerateOptions::new(N, output);
    options.concurrency = 4;
    options.resume = true;
    match Engine::new(teacher, options)
        .run(prompts(N * 2), CancellationToken::new())
        .await
    {
        Ok(summary) if summary.stop == StopReason::Completed => ExitCode::SUCCESS,
        Ok(summary) => {
            eprintln!("child stopped early: {summary:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("child failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn spawn(base_url: &str, output: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().expect("the test binary"))
        .arg(output)
        .env(CHILD_ENV, base_url)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the generator")
}

fn complete_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

async fn parent() {
    // 50 ms per request and 4 in flight: about 80 examples/s, so 40 take about half a second.
    let server = FaultServer::start(Duration::from_millis(50), |_: &Call| Reply::Ok).await;
    let dir = tempfile::tempdir().expect("a temp dir");
    let output = dir.path().join("out.jsonl");

    let mut child = spawn(&server.base_url(), &output);
    let deadline = Instant::now() + Duration::from_secs(30);
    while complete_lines(&output) < N / 2 {
        assert!(Instant::now() < deadline, "the generator made no progress");
        assert!(
            child.try_wait().expect("poll the child").is_none(),
            "the generator exited before the kill"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().expect("SIGKILL the generator");
    child.wait().expect("reap the generator");
    let at_kill = complete_lines(&output);
    assert!((N / 2..N).contains(&at_kill), "killed at {at_kill} of {N}");

    // The worst a kill can leave: half a record with no newline.
    let mut bytes = std::fs::read(&output).expect("read the dataset");
    bytes.extend_from_slice(b"{\"format_version\":1,\"id\":\"torn");
    std::fs::write(&output, bytes).expect("write a torn tail");

    let status = spawn(&server.base_url(), &output)
        .wait()
        .expect("run the resumed generator");
    assert!(status.success(), "the resumed generator failed: {status}");

    let text = std::fs::read_to_string(&output).expect("read the dataset");
    assert!(text.ends_with('\n'), "the file ends with a torn line");
    let examples = distill_data::read_file(&output).expect("every line is a whole record");
    let ids: Vec<&str> = examples.iter().map(|e| e.id.as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), N, "exactly N examples");
    assert_eq!(unique.len(), N, "no id twice");
    assert!(
        examples
            .iter()
            .all(|e| e.response == answer_for(e.prompt_text().unwrap_or_default()))
    );
    // The first N prompts, none skipped: no prompt failed, so none was replaced.
    let expected: BTreeSet<String> = prompts(N).into_iter().map(|p| p.id).collect();
    assert_eq!(unique, expected.iter().map(String::as_str).collect());
    // Requests: at most the examples plus those in flight at the kill.
    assert!(
        server.seen().len() <= N + 4 + 4,
        "{} requests",
        server.seen().len()
    );
}
