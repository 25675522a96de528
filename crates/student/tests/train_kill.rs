//! A training process SIGKILLed after its second checkpoint, then resumed, ends with the same
//! weights, bit for bit, as a run that was never interrupted.
//!
//! The test re-runs its own binary as the child (`child_trains` is ignored unless the parent sets
//! `DISTILL_TRAIN_CHILD`); the child reports its progress on stdout, and after the step that
//! follows the second checkpoint it stalls, so the kill always lands between checkpoints with
//! work that the resumed run must redo.

#[path = "train_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;

use distill_student::train::{LossKind, Parts, TrainConfig, TrainEvent, Trainer};
use tch::Tensor;

const CHILD_ENV: &str = "DISTILL_TRAIN_CHILD";
const STALL_AFTER: u64 = 7;

fn config(out: &Path) -> TrainConfig {
    let mut c = support::config(out, LossKind::Kl);
    c.max_steps = Some(12);
    c.save_every = 3;
    c.keep_checkpoints = 2;
    c.eval_every = 4;
    c
}

fn parts() -> Parts {
    let tokenizer = support::tokenizer();
    let mut train = support::examples(34, &tokenizer, true);
    let val = train.split_off(28);
    Parts {
        student: support::tiny_model(&tokenizer, 2),
        teacher: None,
        train,
        val,
    }
}

fn run(config: TrainConfig, on_event: &mut dyn FnMut(&TrainEvent)) {
    let mut trainer = Trainer::from_parts(config, parts()).unwrap();
    trainer.run(&AtomicBool::new(false), on_event).unwrap();
}

fn weights(out: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(out.join("final_model/model.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

#[test]
#[ignore = "the child process of `killed_and_resumed_equals_uninterrupted`"]
fn child_trains() {
    let Some(out) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let mut stdout = std::io::stdout();
    run(config(&PathBuf::from(out)), &mut |e| {
        let line = match e {
            TrainEvent::Step { record, .. } => format!("step {}", record.step),
            TrainEvent::Checkpoint { step, .. } => format!("checkpoint {step}"),
            _ => return,
        };
        writeln!(stdout, "{line}").unwrap();
        stdout.flush().unwrap();
        if line == format!("step {STALL_AFTER}") {
            std::thread::sleep(std::time::Duration::from_secs(120));
        }
    });
}

#[test]
fn killed_and_resumed_equals_uninterrupted() {
    let whole = tempfile::tempdir().unwrap();
    run(config(whole.path()), &mut |_| {});

    let killed = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_trains",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, killed.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line == format!("step {STALL_AFTER}");
        seen.push(line);
        if done {
            child.kill().unwrap(); // SIGKILL
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child was killed: {status:?}");
    assert!(seen.contains(&"checkpoint 6".to_string()), "{seen:?}");
    assert!(!killed.path().join("final_model").exists());

    let mut resumed = config(killed.path());
    resumed.resume = true;
    let mut first = None;
    run(resumed, &mut |e| {
        if let TrainEvent::Started { start_step, .. } = e {
            first = Some(*start_step);
        }
    });
    // The kill landed after step 7; the checkpoint of step 6 is where the run continued.
    assert_eq!(first, Some(6));
    let (a, b) = (weights(whole.path()), weights(killed.path()));
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in &a {
        assert!(t.equal(&b[name]), "{name} differs after the resume");
    }
    // The metrics of the redone step 7 appear once.
    let metrics = std::fs::read_to_string(killed.path().join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .filter(|l| !l.contains("val_loss"))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, (1..=12).collect::<Vec<_>>());
}
