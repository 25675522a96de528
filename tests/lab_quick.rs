//! `distill lab --quick` end to end on the embedded teacher (SmolLM2 from the asset cache):
//! every stage runs, the run directory holds what the lab promises, a second run in the same
//! directory resumes (nothing redone) or refuses another configuration, and a lab killed with
//! SIGKILL during generation and again during training ends with the same dataset and the same
//! weights, bit for bit, as the uninterrupted run.

#[path = "../crates/gguf/tests/support/assets.rs"]
mod assets;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::OnceLock;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use distill::data::Split;
use distill::evaluate::{Candidate, Role, evaluate};
use distill::lab::{self, LabConfig, LabEvent, Stage, TeacherChoice};

/// Where the kill test's child process runs its lab; unset in the parent.
const CHILD_RUN_DIR: &str = "DISTILL_TEST_LAB_CHILD_RUN_DIR";

/// The quick lab's configuration for a run directory.
fn quick_config(run_dir: &Path) -> LabConfig {
    let teacher = TeacherChoice::Local {
        model: assets::smollm2_gguf(),
    };
    let mut config = LabConfig::new(run_dir, teacher).quick();
    config.prompts = concat!(env!("CARGO_MANIFEST_DIR"), "/datasets/prompts/lab.jsonl").into();
    config
}

/// A fresh directory for one of this file's runs, under Cargo's scratch space for tests.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("lab_quick")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The uninterrupted quick lab, run once for both tests, and what it returned.
fn uninterrupted() -> &'static (PathBuf, lab::LabOutcome) {
    static RUN: OnceLock<(PathBuf, lab::LabOutcome)> = OnceLock::new();
    RUN.get_or_init(|| {
        let run_dir = scratch("uninterrupted");
        let outcome = lab::run(&quick_config(&run_dir), &AtomicBool::new(false), &mut |_| {}).unwrap();
        (run_dir, outcome)
    })
}

#[test]
fn quick_lab_fills_its_run_directory_and_resumes() {
    let (run_dir, outcome) = uninterrupted();
    let config = quick_config(run_dir);
    let stop = AtomicBool::new(false);

    for file in [
        "lab.json",
        "data.jsonl",
        "evaluation.json",
        "generation/teacher.jsonl",
        "metrics.jsonl",
        "loss_curve.svg",
        "report.md",
        "report.json",
        "charts.svg",
        "manifest.json",
        "final_model.gguf",
        "final_model/config.json",
        "final_model/model.safetensors",
        "final_model/tokenizer.json",
        "final_model/README.md",
    ] {
        assert!(run_dir.join(file).exists(), "{file} is missing");
    }
    // The dataset: every prompt answered once, in its split, with soft labels and the vocab hash.
    let data = distill::data::read_file(run_dir.join("data.jsonl")).unwrap();
    assert_eq!(data.len(), config.num_prompts);
    let count = |s| data.iter().filter(|e| e.split == Some(s)).count();
    assert_eq!(count(Split::Test), config.test_prompts);
    assert_eq!(count(Split::Val), config.val_prompts);
    for e in &data {
        let logprobs = e.logprobs.as_ref().expect("local teacher answers carry logprobs");
        assert!(
            logprobs
                .iter()
                .all(|t| t.top_logprobs.len() == usize::from(config.top_logprobs))
        );
        assert!(e.metadata.contains_key("teacher_vocab_hash"));
    }
    // The report: teacher, student and untrained student, the teacher reproducing its answers.
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["models"].as_array().unwrap().len(), 3);
    let teacher = outcome.report.model(Role::Teacher).unwrap();
    assert!(
        teacher.rouge_l() > 0.9,
        "teacher ROUGE-L vs its own answers: {}",
        teacher.rouge_l()
    );
    let student = outcome.report.model(Role::Student).unwrap();
    assert!(student.parameters < teacher.parameters);
    // Every answer token but the closing end token carried the local teacher's top-k.
    let soft = outcome.report.soft_labels.unwrap();
    assert_eq!(soft.cross_tokenizer_examples, 0);
    assert!(
        soft.soft_targets > 0 && soft.soft_targets < soft.target_tokens,
        "{soft:?}"
    );
    assert!(report["soft_labels"]["soft_targets"].as_u64() == Some(soft.soft_targets as u64));
    assert_eq!(student.showcase.len(), 1);
    let card = std::fs::read_to_string(run_dir.join("final_model/README.md")).unwrap();
    assert!(card.starts_with("---\n") && card.contains("base_model:"));
    assert!(
        std::fs::read_to_string(run_dir.join("report.md"))
            .unwrap()
            .contains("machine learning")
    );
    assert!(
        std::fs::read_to_string(run_dir.join("report.md"))
            .unwrap()
            .contains("Soft labels (the teacher's top-k probabilities) on")
    );

    // `distill eval` of the final model on the dataset reproduces the report's quality figures.
    let test: Vec<_> = data
        .iter()
        .filter(|e| e.split == Some(Split::Test))
        .cloned()
        .collect();
    let candidate = Candidate::load("student", Role::Student, &run_dir.join("final_model")).unwrap();
    let again = evaluate(candidate, &test, &config.eval, &mut |_, _| {}).unwrap();
    assert_eq!(again.answers, student.answers);
    assert_eq!(again.vs_teacher, student.vs_teacher);
    assert_eq!(
        again.teacher_token_cross_entropy,
        student.teacher_token_cross_entropy
    );

    // Run again: generation, training and evaluation are complete, so they are skipped.
    let mut skipped = Vec::new();
    lab::run(&config, &stop, &mut |e| {
        if let LabEvent::StageSkipped { stage } = e {
            skipped.push(stage)
        }
    })
    .unwrap();
    assert_eq!(skipped, [Stage::Generate, Stage::Train, Stage::Evaluate]);

    // Another configuration in the same directory is refused, naming what differs.
    let mut other = config.clone();
    other.seed += 1;
    let err = lab::run(&other, &stop, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("seed"), "{err}");
}

/// Not a test on its own: the kill test's child process, which runs the quick lab in the
/// directory its parent names (and does nothing when run without one).
#[test]
#[ignore = "run by `a_lab_killed_during_generation_and_training_ends_as_an_uninterrupted_one`"]
fn lab_child_process() {
    if let Some(run_dir) = std::env::var_os(CHILD_RUN_DIR) {
        lab::run(
            &quick_config(Path::new(&run_dir)),
            &AtomicBool::new(false),
            &mut |e| {
                if let LabEvent::Note(note) = e {
                    println!("note: {note}");
                }
            },
        )
        .unwrap();
    }
}

/// The quick lab in `run_dir` as a child process (this test binary, running only
/// [`lab_child_process`]). Labs that must match bit for bit run in their own processes:
/// libtorch's thread count is per process, and the other test of this file changes it.
fn lab_process(run_dir: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "lab_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--quiet",
        ])
        .env(CHILD_RUN_DIR, run_dir);
    command
}

/// Starts [`lab_process`] with its output discarded.
fn spawn_lab(run_dir: &Path) -> Child {
    lab_process(run_dir)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Kills `child` with SIGKILL as soon as `ready` holds, and returns what `ready` saw; fails if
/// the child ends first or nothing happens for ten minutes.
fn kill_when<T>(mut child: Child, mut ready: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(seen) = ready() {
            child.kill().unwrap();
            child.wait().unwrap();
            return seen;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the lab ended ({status}) before it could be killed");
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the lab made no progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The complete lines of a file that is being appended to.
fn complete_lines(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |bytes| bytes.iter().filter(|&&b| b == b'\n').count())
}

/// An example without what differs from run to run by nature (the request's latency and
/// creation time).
fn comparable(mut example: distill::data::Example) -> distill::data::Example {
    if let Some(teacher) = example.teacher.as_mut() {
        teacher.latency_ms = None;
        teacher.created = None;
    }
    example
}

#[test]
fn a_lab_killed_during_generation_and_training_ends_as_an_uninterrupted_one() {
    let run_dir = scratch("killed");
    let config = quick_config(&run_dir);

    let generation = run_dir.join("generation/teacher.jsonl");
    let answered = kill_when(spawn_lab(&run_dir), || {
        let lines = complete_lines(&generation);
        (lines > 0).then_some(lines)
    });
    assert!(
        answered < config.num_prompts && !run_dir.join("data.jsonl").exists(),
        "killed after generation had ended ({answered} answers)"
    );

    let checkpoints = run_dir.join("checkpoints");
    let checkpoint = kill_when(spawn_lab(&run_dir), || {
        let names = std::fs::read_dir(&checkpoints).ok()?;
        names
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .find(|name| name.starts_with("step-"))
    });
    assert!(
        !run_dir.join(".train-complete").exists(),
        "killed after training had ended (first checkpoint {checkpoint})"
    );

    let resumed = lab_process(&run_dir).output().unwrap();
    let notes = String::from_utf8_lossy(&resumed.stdout);
    assert!(resumed.status.success(), "the resumed lab failed: {notes}");
    assert!(
        notes.contains("resuming from the checkpoint"),
        "training did not resume: {notes}"
    );

    let (reference, _) = uninterrupted();
    let examples = |dir: &Path| -> Vec<_> {
        let data = distill::data::read_file(dir.join("data.jsonl")).unwrap();
        data.into_iter().map(comparable).collect()
    };
    assert_eq!(examples(&run_dir), examples(reference), "the datasets differ");
    let weights = |dir: &Path| std::fs::read(dir.join("final_model/model.safetensors")).unwrap();
    assert!(
        weights(&run_dir) == weights(reference),
        "the resumed lab's weights differ from the uninterrupted lab's"
    );
    std::fs::remove_dir_all(&run_dir).unwrap();
}
