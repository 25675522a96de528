//! Crash test for `ExampleWriter`: a child process appends records in a loop and is killed
//! with SIGKILL at random moments, 20 times. After each kill the file must hold only whole,
//! correct records with no gaps; reopening must report and cut any torn tail.
//!
//! The test binary is its own child (`crash --child PATH`), hence `harness = false`.
//! Records are up to 400 kB, so that some kills land inside a `write` and leave a genuinely
//! torn line. Kills mostly land between writes, though, so on every other round without a
//! natural torn tail the parent also injects one (a prefix of the next record, as a kill
//! mid-`write` leaves) to exercise the cut on each run.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use distill_data::prompts::SplitMix64;
use distill_data::{Example, ExampleWriter, Message, SyncPolicy, TokenLogprob, TopLogprob, WriterOptions};

const ROUNDS: usize = 20;
const SEED: u64 = 0x2026_1127;

/// Record `i`, fully determined by `i`, so the parent can check every byte of it.
fn record(i: u64) -> Example {
    let size = [200usize, 10_000, 100_000, 400_000][(i % 4) as usize];
    let mut e = Example::new(
        vec![Message::user(format!("crash record {i}"))],
        "é".repeat(size / 2),
    );
    e.metadata.insert("i".into(), i.into());
    if i % 2 == 1 {
        let alt = TopLogprob {
            token: "t".into(),
            bytes: Some(vec![116]),
            logprob: -1.25,
        };
        let tok = TokenLogprob {
            token: "é".into(),
            bytes: Some(vec![195, 169]),
            logprob: -0.5,
            top_logprobs: vec![alt; 20],
        };
        e.logprobs = Some(vec![tok; 64]);
    }
    e
}

/// The child: append records 0, 1, 2, … forever, skipping those already in the file.
fn child(path: &Path) -> ! {
    // OnClose: fsync would only slow the loop; surviving kill -9 does not depend on it.
    let opts = WriterOptions {
        sync: SyncPolicy::OnClose,
        ..WriterOptions::default()
    };
    let mut w = ExampleWriter::open_with(path, opts).expect("child: open");
    for i in 0.. {
        let e = record(i);
        if !w.contains(&e.id) {
            w.append(&e).expect("child: append");
        }
    }
    unreachable!()
}

/// The exact bytes the writer writes for record `i`.
fn line(i: u64) -> Vec<u8> {
    let mut l = serde_json::to_vec(&record(i)).unwrap();
    l.push(b'\n');
    l
}

/// Checks that the file is exactly records 0..n, byte for byte, optionally followed by a
/// proper prefix of record n (what a kill inside `write` leaves). Returns (n, torn).
fn check_file(path: &Path, lines: &mut Vec<Vec<u8>>) -> (u64, bool) {
    let bytes = std::fs::read(path).unwrap_or_default();
    let (mut at, mut n) = (0, 0u64);
    while at < bytes.len() {
        if lines.len() as u64 == n {
            lines.push(line(n));
        }
        let want = &lines[n as usize];
        let rest = &bytes[at..];
        if rest.len() < want.len() {
            assert!(
                want.starts_with(rest),
                "the tail is not a prefix of record {n}: corrupt"
            );
            return (n, true);
        }
        assert!(
            rest.starts_with(want),
            "record {n} differs from what was written (corrupt, or one is missing)"
        );
        at += want.len();
        n += 1;
    }
    (n, false)
}

fn parent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.jsonl");
    let exe = std::env::current_exe().unwrap();
    let mut rng = SplitMix64::new(SEED);
    let (mut torn_seen, mut injected, mut last_n) = (0, 0, 0);
    let mut lines = Vec::new();
    let start = Instant::now();
    for round in 0..ROUNDS {
        let mut c = Command::new(&exe)
            .arg("--child")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(30 + rng.below(120)));
        c.kill().unwrap(); // SIGKILL on Unix
        let status = c.wait().unwrap();
        assert!(
            status.code().is_none(),
            "round {round}: the child exited on its own: {status}"
        );

        let (n, mut torn) = check_file(&path, &mut lines);
        assert!(
            n >= last_n,
            "round {round}: records were lost ({last_n} before, {n} now)"
        );
        torn_seen += usize::from(torn);
        if !torn && round % 2 == 1 {
            let mut line = line(n);
            line.truncate(1 + rng.below(line.len() as u64 - 1) as usize);
            let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
            std::io::Write::write_all(&mut f, &line).unwrap();
            (torn, injected) = (true, injected + 1);
        }
        let w = ExampleWriter::open(&path).unwrap();
        assert_eq!(
            w.torn_tail().is_some(),
            torn,
            "round {round}: torn tail not reported"
        );
        assert_eq!(w.completed_ids().len() as u64, n, "round {round}");
        drop(w);
        let (n2, torn2) = check_file(&path, &mut lines);
        assert_eq!(
            (n2, torn2),
            (n, false),
            "round {round}: reopen did not leave exactly the whole records"
        );
        last_n = n;
    }
    println!(
        "crash test: {ROUNDS} kills in {:.1}s, {last_n} whole records survive, {torn_seen} torn tails from kills \
         and {injected} injected, all cut (seed {SEED:#x})",
        start.elapsed().as_secs_f64()
    );
    assert!(last_n > 0, "the child never wrote a record");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--child") {
        child(Path::new(&args[2]));
    }
    if !cfg!(unix) {
        println!("crash test: skipped (needs SIGKILL)");
        return;
    }
    // Filters such as `cargo test -- some_name` are passed to every test binary; this one has
    // a single test, run unless it is filtered out by name.
    if let Some(filter) = args.iter().skip(1).find(|a| !a.starts_with('-'))
        && !"crash_kill9_20_times".contains(filter.as_str())
    {
        return;
    }
    parent();
    println!("test crash_kill9_20_times ... ok");
}
