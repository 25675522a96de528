//! Running commands, and failures that name the step and the fix.

use std::fmt;
use std::path::Path;
use std::process::{Command, Output};

/// A failed step: what was being done, what went wrong, and how to fix it.
#[derive(Debug)]
pub struct Failure {
    step: &'static str,
    problem: String,
    fix: Option<String>,
}

impl Failure {
    pub fn new(step: &'static str, problem: impl Into<String>) -> Self {
        Self {
            step,
            problem: problem.into(),
            fix: None,
        }
    }

    pub fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed: {}", self.step, self.problem)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n  fix: {fix}")?;
        }
        Ok(())
    }
}

/// Runs a command with inherited stdio; fails with `step` when it exits non-zero.
pub fn run(cmd: &mut Command, step: &'static str) -> Result<(), Failure> {
    let status = cmd
        .status()
        .map_err(|e| Failure::new(step, format!("could not start {:?}: {e}", cmd.get_program())))?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure::new(step, format!("{cmd:?} exited with {status}")))
    }
}

/// Runs a command and captures its output; `None` when it cannot start.
pub fn capture(cmd: &mut Command) -> Option<Output> {
    cmd.output().ok()
}

/// Runs `cargo <args>` in the repository root.
pub fn cargo(root: &Path, args: &[&str], step: &'static str) -> Result<(), Failure> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("xtask: cargo {}", args.join(" "));
    run(Command::new(cargo).args(args).current_dir(root), step)
}

/// Free space in bytes on the file system holding `path`, from `df`; `None` if unknown.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let out = capture(Command::new("df").arg("-Pk").arg(path))?;
    let text = String::from_utf8(out.stdout).ok()?;
    let kib: u64 = text.lines().nth(1)?.split_whitespace().nth(3)?.parse().ok()?;
    Some(kib * 1024)
}
