//! `cargo xtask test-openai`: the official `openai` Python package (in `.venv-openai`)
//! against `distill serve` on SmolLM2: models, whole and streamed chat answers,
//! log-probabilities, plain completions and errors all parse (`scripts/openai_check.py`).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use crate::assets;
use crate::shell::{Failure, cargo, run};
use crate::venv::Venv;

const OPENAI_VENV: Venv = Venv {
    dir: ".venv-openai",
    module: "openai",
    packages: &["openai"],
    note: "a few seconds",
    step: "openai venv",
};

/// The name the check asks for.
const SERVED_NAME: &str = "student";

/// Stops the server on drop.
struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn test(root: &Path, target: &Path) -> Result<(), Failure> {
    let python = OPENAI_VENV.ensure(root)?;
    let model = assets::ensure_smollm2()?;
    cargo(
        root,
        &["build", "--example", "distill"],
        "building the distill example",
    )?;
    let binary = target.join("debug/examples/distill");
    let mut child = Command::new(&binary)
        .args([
            "serve",
            "--port",
            "0",
            "--served-model-name",
            SERVED_NAME,
            "--model",
        ])
        .arg(&model)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| Failure::new("distill serve", format!("cannot start {}: {e}", binary.display())))?;
    let mut line = String::new();
    let stdout = child.stdout.take().expect("piped");
    let serving = Serving(child);
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| Failure::new("distill serve", e.to_string()))?;
    let url = line
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .ok_or_else(|| Failure::new("distill serve", format!("no address in {line:?}")))?;
    println!("xtask: {}", line.trim());
    let result = run(
        Command::new(&python)
            .arg(root.join("scripts/openai_check.py"))
            .args([url, SERVED_NAME]),
        "the openai package check",
    );
    drop(serving);
    result
}
