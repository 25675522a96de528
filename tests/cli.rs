//! The `distill` binary on bad input, as a user meets it: one line on stderr that names the
//! problem, exit code 1 for a runtime failure and 2 for a usage error, no panic, and nothing
//! already written lost. The binary is the `distill` example, which `cargo test` builds.

#[path = "../crates/gguf/tests/support/assets.rs"]
mod assets;
#[path = "support/binary.rs"]
mod binary;

use std::path::Path;
use std::process::{Command, Output};

use distill::lab::{LabConfig, TeacherChoice};

use binary::binary;

/// `distill ARGS` in `dir`, offline and without API keys (a test adds the ones it needs).
fn offline(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command
        .args(args)
        .current_dir(dir)
        .env("HF_HUB_OFFLINE", "1")
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("DISTILL_CONFIG")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("AZURE_OPENAI_ENDPOINT")
        .env_remove("AZURE_OPENAI_API_KEY");
    command
}

/// Runs `distill ARGS` offline, without API keys, in `dir`.
fn distill(dir: &Path, args: &[&str]) -> Output {
    offline(dir, args).output().unwrap()
}

/// Asserts a failure with `code` and one stderr line holding every one of `needles`;
/// returns that line.
fn fails(output: &Output, code: i32, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "stderr: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let line = lines
        .iter()
        .find(|l| l.starts_with("error"))
        .unwrap_or_else(|| panic!("no error line: {stderr}"));
    for needle in needles {
        assert!(line.contains(needle), "`{needle}` is not in: {line}");
    }
    line.to_string()
}

/// Asserts one line of error: the runtime failures print nothing but it.
fn one_line(output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
    assert_eq!(lines, 1, "more than one line: {stderr}");
}

const GOOD: &str = r#"{"prompt": "What is 2+2?", "response": "4"}"#;

#[test]
fn a_missing_dataset_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = distill(dir.path(), &["data", "validate", "missing.jsonl"]);
    fails(&out, 1, &["missing.jsonl"]);
    one_line(&out);
    let student = assets::smollm2_gguf();
    let out = distill(
        dir.path(),
        &[
            "train",
            "--dataset",
            "missing.jsonl",
            "--student-model",
            student.to_str().unwrap(),
            "--output-dir",
            "out",
            "--device",
            "cpu",
        ],
    );
    fails(&out, 1, &["missing.jsonl"]);
}

#[test]
fn a_malformed_line_is_named_by_file_and_line_and_lenient_mode_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(
        &data,
        format!("{GOOD}\n{{\"prompt\": \"x\", \"response\": \n{GOOD}\n"),
    )
    .unwrap();
    let out = distill(dir.path(), &["data", "validate", "bad.jsonl"]);
    let line = fails(&out, 1, &["bad.jsonl:2:"]);
    assert_eq!(
        line.matches("EOF while parsing").count(),
        1,
        "the cause twice: {line}"
    );
    one_line(&out);
    let out = distill(dir.path(), &["data", "validate", "--lenient", "bad.jsonl"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&data).unwrap().lines().count(),
        3,
        "the input changed"
    );
}

#[test]
fn an_unknown_model_while_offline_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = distill(
        dir.path(),
        &[
            "chat",
            "--model",
            "no-such-org/no-such-model",
            "--prompt",
            "hello",
        ],
    );
    fails(&out, 1, &["no-such-org/no-such-model"]);
    one_line(&out);
}

#[test]
fn fp16_and_bf16_without_cuda_say_how_to_train_on_the_cpu() {
    if distill::student::tch::Cuda::is_available() {
        return; // The failure under test needs a machine without CUDA.
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("d.jsonl"), format!("{GOOD}\n")).unwrap();
    let student = assets::smollm2_gguf();
    for flag in ["--fp16", "--bf16"] {
        let out = distill(
            dir.path(),
            &[
                "train",
                "--dataset",
                "d.jsonl",
                "--student-model",
                student.to_str().unwrap(),
                "--output-dir",
                "out",
                flag,
            ],
        );
        fails(&out, 1, &["CUDA", "CPU"]);
        assert!(
            !dir.path().join("out/checkpoints").exists(),
            "{flag}: training started"
        );
    }
}

#[test]
fn a_run_directory_of_another_configuration_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let run_dir = dir.path().join("run");
    let teacher = assets::smollm2_gguf();
    // The directory of a quick lab with seed 8; the command below asks for seed 7.
    let mut earlier = LabConfig::new(
        &run_dir,
        TeacherChoice::Local {
            model: teacher.clone(),
        },
    )
    .quick();
    earlier.seed = 8;
    std::fs::create_dir_all(&run_dir).unwrap();
    let fingerprint = serde_json::to_vec_pretty(&earlier.fingerprint()).unwrap();
    std::fs::write(run_dir.join("lab.json"), &fingerprint).unwrap();
    let out = distill(
        dir.path(),
        &[
            "lab",
            "--quick",
            "--seed",
            "7",
            "--run-dir",
            "run",
            "--teacher-model",
            teacher.to_str().unwrap(),
        ],
    );
    fails(&out, 1, &["run", "seed"]);
    assert_eq!(std::fs::read(run_dir.join("lab.json")).unwrap(), fingerprint);
    assert_eq!(
        std::fs::read_dir(&run_dir).unwrap().count(),
        1,
        "the run directory changed"
    );
}

#[test]
fn a_full_disk_during_generation_is_one_line() {
    if !Path::new("/dev/full").exists() {
        return; // Linux only: writes to /dev/full fail with ENOSPC.
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("p.jsonl"),
        "{\"prompt\": \"Say hi.\"}\n{\"prompt\": \"Say bye.\"}\n",
    )
    .unwrap();
    let teacher = assets::smollm2_gguf();
    let out = distill(
        dir.path(),
        &[
            "generate",
            "--provider",
            "local",
            "--model",
            teacher.to_str().unwrap(),
            "--prompts",
            "p.jsonl",
            "--num-examples",
            "2",
            "--max-tokens",
            "4",
            "--output",
            "/dev/full",
        ],
    );
    fails(&out, 1, &["/dev/full", "No space left on device"]);
}

#[test]
fn the_manuals_first_command_without_a_key_names_the_offline_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let out = distill(
        dir.path(),
        &[
            "generate",
            "--num_examples",
            "50",
            "--output_path",
            "data.jsonl",
            "--model",
            "gpt-4o",
        ],
    );
    fails(&out, 1, &["OPENAI_API_KEY", "--provider local"]);
    one_line(&out);
    assert!(!dir.path().join("data.jsonl").exists());
}

#[test]
fn usage_errors_exit_2_and_success_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = distill(dir.path(), &["lab", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    let out = distill(dir.path(), &["train"]);
    assert_eq!(out.status.code(), Some(2));
    std::fs::write(dir.path().join("d.jsonl"), format!("{GOOD}\n")).unwrap();
    let out = distill(dir.path(), &["data", "stats", "d.jsonl"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty());
}

#[test]
fn a_lab_on_a_priced_teacher_asks_before_spending_more_than_a_dollar() {
    let dir = tempfile::tempdir().unwrap();
    // 100 prompts of 40,000 characters: about a million prompt tokens, ~$2.6 at gpt-4o's price.
    let long = "word ".repeat(8_000);
    let prompts: String = (0..100)
        .map(|i| format!("{{\"prompt\": \"{i} {long}\"}}\n"))
        .collect();
    std::fs::write(dir.path().join("long.jsonl"), prompts).unwrap();
    let student = assets::smollm2_gguf();
    let args = [
        "lab",
        "--prompts",
        "long.jsonl",
        "--num-prompts",
        "100",
        "--run-dir",
        "run",
        "--student-model",
        student.to_str().unwrap(),
    ];
    let out = offline(dir.path(), &args)
        .env("OPENAI_API_KEY", "sk-test-not-a-real-key")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("costs about $2."), "{stderr}");
    fails(&out, 1, &["--yes", "--max-cost"]);
    assert!(!stderr.contains("sk-test"), "the key leaked: {stderr}");
    assert!(!dir.path().join("run").exists(), "the lab started");
}

/// Three examples of 2, 6 and 10 words (prompt and response together).
fn three_lengths(dir: &Path) {
    let lines = [
        r#"{"prompt": "Hi", "response": "there"}"#,
        r#"{"prompt": "one two three", "response": "four five six"}"#,
        r#"{"prompt": "a b c d e", "response": "f g h i j"}"#,
    ];
    std::fs::write(dir.join("in.jsonl"), lines.join("\n") + "\n").unwrap();
}

fn lines_in(path: &Path) -> usize {
    std::fs::read_to_string(path).unwrap().lines().count()
}

#[test]
fn a_config_file_gives_defaults_that_flags_override() {
    let dir = tempfile::tempdir().unwrap();
    three_lengths(dir.path());
    std::fs::write(
        dir.path().join("distill.toml"),
        "quiet = true\n[data.filter]\nmax_words = 6\noutput = \"from_file.jsonl\"\n[train]\nepochs = 2\n",
    )
    .unwrap();
    let ok = |out: &Output| {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        )
    };

    // The file's values, through --config and through DISTILL_CONFIG.
    let out = distill(
        dir.path(),
        &["--config", "distill.toml", "data", "filter", "in.jsonl"],
    );
    ok(&out);
    assert_eq!(lines_in(&dir.path().join("from_file.jsonl")), 2);
    let out = offline(dir.path(), &["data", "filter", "in.jsonl", "-o", "env.jsonl"])
        .env("DISTILL_CONFIG", "distill.toml")
        .output()
        .unwrap();
    ok(&out);
    assert_eq!(lines_in(&dir.path().join("env.jsonl")), 2);

    // Flags win over the file, a flag that conflicts with the file's (-v against quiet)
    // drops the file's, and the file is ignored without --config.
    let out = distill(
        dir.path(),
        &[
            "--config",
            "distill.toml",
            "-v",
            "data",
            "filter",
            "in.jsonl",
            "--max-words",
            "100",
            "-o",
            "flag.jsonl",
        ],
    );
    ok(&out);
    assert_eq!(lines_in(&dir.path().join("flag.jsonl")), 3);
    let out = distill(dir.path(), &["data", "filter", "in.jsonl", "-o", "plain.jsonl"]);
    ok(&out);
    assert_eq!(lines_in(&dir.path().join("plain.jsonl")), 3);
}

#[test]
fn a_bad_config_file_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    three_lengths(dir.path());
    let cases = [
        (
            "[data.filter]\nmax-word = 6\n",
            vec!["bad.toml:2:", "[data.filter] max-word", "has no --max-word"],
        ),
        (
            "[data.filter]\nmax-words = \"many\"\n",
            vec!["bad.toml:2:", "max-words", "invalid digit"],
        ),
        (
            "[data.filter]\nkeep-truncated = 1\n",
            vec!["bad.toml:2:", "expects true or false"],
        ),
        (
            "[generate]\nnum-examples = 5\n[generat]\nmodel = \"x\"\n",
            vec!["bad.toml:3:", "no --generat"],
        ),
        ("[data.filter\n", vec!["bad.toml:1:"]),
    ];
    for (text, needles) in cases {
        std::fs::write(dir.path().join("bad.toml"), text).unwrap();
        let out = distill(
            dir.path(),
            &[
                "--config", "bad.toml", "data", "filter", "in.jsonl", "-o", "x.jsonl",
            ],
        );
        fails(&out, 2, &needles);
        one_line(&out);
        assert!(!dir.path().join("x.jsonl").exists());
    }
    let out = distill(
        dir.path(),
        &["--config", "absent.toml", "data", "stats", "in.jsonl"],
    );
    fails(&out, 2, &["absent.toml"]);
}

#[test]
fn the_readmes_config_file_is_valid() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme.find("```toml\n").expect("a TOML example in the README") + "```toml\n".len();
    let text = &readme[start..start + readme[start..].find("```").unwrap()];
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("distill.toml"), text).unwrap();
    std::fs::write(dir.path().join("d.jsonl"), format!("{GOOD}\n")).unwrap();
    // Every key is checked against its command's flags whichever command runs.
    let out = distill(
        dir.path(),
        &["--config", "distill.toml", "data", "stats", "d.jsonl"],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
