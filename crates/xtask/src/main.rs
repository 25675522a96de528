//! Project chores for distill, run as `cargo xtask <command>`.
//!
//! - `setup`: find or install libtorch 2.11.0 and fetch the offline model assets.
//! - `test`: set up, then `cargo fmt --check`, clippy with `-D warnings`, and `cargo test --workspace`.
//! - `lab`: set up, then run the end-to-end lab.
//!
//! xtask is never needed at run time; it only prepares a checkout.

mod assets;
mod libtorch;
mod llama_server;
mod openai_check;
mod shell;
mod venv;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use shell::{Failure, cargo};

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  setup   find or install libtorch (torch 2.11.0) and fetch the offline model assets
  test    setup, then cargo fmt --check, clippy -D warnings, cargo test --workspace, and compile the benches
  lab [FLAGS]  setup, build, then `distill lab FLAGS` (the whole lab, offline by default)
  assets  print where the offline model assets live
  llama-server [--port P]  serve SmolLM2 with llama.cpp's OpenAI-compatible server (.venv-llama)
  test-llama [--port P]    start that server and run distill-teacher's opt-in llama_server tests
  test-openai   run the official `openai` Python package against `distill serve` (.venv-openai)

environment:
  LIBTORCH      use this libtorch (must be 2.11.0) instead of .venv
  DISTILL_HOME  cache for model assets (default: $XDG_CACHE_HOME/distill or ~/.cache/distill)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("setup") => setup(),
        Some("test") => test(),
        Some("lab") => lab(&args[1..]),
        Some("llama-server") => {
            llama_server::port_from(&args[1..]).and_then(|p| llama_server::serve(&repo_root(), p))
        }
        Some("test-llama") => {
            llama_server::port_from(&args[1..]).and_then(|p| llama_server::test(&repo_root(), p))
        }
        Some("test-openai") => openai_check::test(&repo_root(), &target_dir(&repo_root())),
        Some("assets") => {
            println!("{}", assets::home().display());
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        other => {
            eprintln!("{USAGE}");
            if let Some(cmd) = other {
                eprintln!("\nerror: unknown command `{cmd}`");
            }
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("xtask: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root: xtask lives in `crates/xtask`.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/xtask sits two levels below the root")
        .to_path_buf()
}

/// Where cargo builds: CARGO_TARGET_DIR (relative to the root, as cargo reads it) or target/.
fn target_dir(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |dir| root.join(dir))
}

/// Installs or finds libtorch and fetches the offline models (SmolLM2, the lab's teacher, and
/// Gemma 3, the foreign-tokenizer teacher).
fn setup() -> Result<(), Failure> {
    let root = repo_root();
    let started = std::time::Instant::now();
    let torch = libtorch::ensure(&root)?;
    println!("setup: libtorch {} at {}", torch.version, torch.dir.display());
    let gguf = assets::ensure_smollm2()?;
    println!("setup: SmolLM2-135M-Instruct at {}", gguf.display());
    let gemma = assets::ensure_gemma3()?;
    println!("setup: Gemma 3 270M at {}", gemma.display());
    println!("setup: done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn test() -> Result<(), Failure> {
    setup()?;
    let root = repo_root();
    cargo(
        &root,
        &["fmt", "--all", "--check"],
        "formatting (run `cargo fmt --all`)",
    )?;
    cargo(
        &root,
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
        "clippy",
    )?;
    cargo(&root, &["test", "--workspace"], "tests")?;
    // Every bench compiles, in the test profile the tests just built (no release build).
    cargo(
        &root,
        &["test", "--workspace", "--benches", "--no-run"],
        "compiling the benches",
    )?;
    Ok(())
}

/// Set-up, a release build of the `distill` example, then `distill lab <flags>`.
///
/// Each phase is timed on its own so the lab's own time (the 15-minute budget) is
/// reported apart from set-up and the build.
fn lab(flags: &[String]) -> Result<(), Failure> {
    let setup_started = std::time::Instant::now();
    setup()?;
    let setup_seconds = setup_started.elapsed().as_secs_f64();
    let root = repo_root();
    let build_started = std::time::Instant::now();
    cargo(
        &root,
        &["build", "--release", "--example", "distill"],
        "building the distill example",
    )?;
    let build_seconds = build_started.elapsed().as_secs_f64();
    let binary = target_dir(&root).join("release/examples/distill");
    println!("xtask: {} lab {}", binary.display(), flags.join(" "));
    let lab_started = std::time::Instant::now();
    shell::run(
        std::process::Command::new(&binary)
            .arg("lab")
            .args(flags)
            .current_dir(&root),
        "the lab",
    )?;
    println!(
        "xtask: set-up {setup_seconds:.1} s, build {build_seconds:.1} s, lab {:.1} s",
        lab_started.elapsed().as_secs_f64()
    );
    Ok(())
}
