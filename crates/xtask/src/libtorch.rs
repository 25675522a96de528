//! Finding or installing a libtorch that matches tch 0.24 (torch 2.11.0).
//!
//! The chosen directory is linked as `<root>/.libtorch`, which `.cargo/config.toml`
//! passes to torch-sys as `LIBTORCH`, so builds need no exported variables.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::shell::{Failure, capture, free_bytes, run};

/// The torch release that tch 0.24 is generated against.
pub const TORCH_VERSION: &str = "2.11.0";
/// Room that pip needs for torch and its nvidia-* wheels, with some margin.
const INSTALL_BYTES: u64 = 6 << 30;

/// A libtorch directory (with `include/` and `lib/`) and its version.
pub struct Libtorch {
    pub dir: PathBuf,
    pub version: String,
}

/// Returns a matching libtorch, installing torch into `<root>/.venv` if none is present.
pub fn ensure(root: &Path) -> Result<Libtorch, Failure> {
    let link = root.join(".libtorch");
    let torch = match find_existing(root, &link)? {
        Some(found) => found,
        None => install_into_venv(root)?,
    };
    point_link(&link, &torch.dir)?;
    Ok(torch)
}

fn find_existing(root: &Path, link: &Path) -> Result<Option<Libtorch>, Failure> {
    // cargo's [env] sets LIBTORCH to our own link for every `cargo run`; only a value the
    // user chose counts as a request.
    if let Some(dir) = std::env::var_os("LIBTORCH").map(PathBuf::from)
        && dir != link
    {
        let version = version_of(&dir).ok_or_else(|| {
            Failure::new(
                "libtorch",
                format!("LIBTORCH={} holds no libtorch", dir.display()),
            )
            .fix("point LIBTORCH at a libtorch 2.11.0 directory (with include/ and lib/), or unset it")
        })?;
        return check_version(dir, version, "LIBTORCH").map(Some);
    }
    if let Some(version) = version_of(link)
        && version.starts_with(TORCH_VERSION)
    {
        let dir = std::fs::canonicalize(link).unwrap_or_else(|_| link.to_path_buf());
        return Ok(Some(Libtorch { dir, version }));
    }
    if let Some(dir) = torch_dir_of_python(Path::new("python3")) {
        match version_of(&dir) {
            Some(version) if version.starts_with(TORCH_VERSION) => {
                return Ok(Some(Libtorch { dir, version }));
            }
            Some(version) => println!(
                "setup: the active python3 has torch {version}, not {TORCH_VERSION}; using .venv instead"
            ),
            None => {}
        }
    }
    let venv_python = root.join(".venv/bin/python3");
    if let Some(dir) = torch_dir_of_python(&venv_python)
        && let Some(version) = version_of(&dir)
    {
        return check_version(dir, version, ".venv").map(Some);
    }
    Ok(None)
}

fn check_version(dir: PathBuf, version: String, source: &str) -> Result<Libtorch, Failure> {
    if version.starts_with(TORCH_VERSION) {
        Ok(Libtorch { dir, version })
    } else {
        Err(Failure::new(
            "libtorch",
            format!(
                "{source} has torch {version} at {}, but tch 0.24 needs {TORCH_VERSION}",
                dir.display()
            ),
        )
        .fix(format!(
            "install torch=={TORCH_VERSION} there, or remove it and rerun `cargo xtask setup`"
        )))
    }
}

/// The version of a libtorch directory: pip's `version.py`, or a standalone `build-version`.
fn version_of(dir: &Path) -> Option<String> {
    if !dir.join("lib").is_dir() || !dir.join("include").is_dir() {
        return None;
    }
    if let Ok(text) = std::fs::read_to_string(dir.join("version.py")) {
        let line = text.lines().find(|l| l.starts_with("__version__"))?;
        return Some(line.split(['\'', '"']).nth(1)?.to_string());
    }
    let text = std::fs::read_to_string(dir.join("build-version")).ok()?;
    Some(text.trim().to_string())
}

/// Where `python` would import torch from, found without importing it (importing costs seconds).
fn torch_dir_of_python(python: &Path) -> Option<PathBuf> {
    let probe = "import importlib.util as u; s = u.find_spec('torch'); \
                 print(s.submodule_search_locations[0] if s else '')";
    let out = capture(Command::new(python).args(["-c", probe]))?;
    let dir = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

fn install_into_venv(root: &Path) -> Result<Libtorch, Failure> {
    let venv = root.join(".venv");
    let python = venv.join("bin/python3");
    if !python.exists() {
        println!("setup: creating {}", venv.display());
        run(
            Command::new("python3").args(["-m", "venv"]).arg(&venv),
            "creating .venv",
        )
        .map_err(|e| e.fix("install Python 3 with the venv module (Debian: apt-get install python3-venv)"))?;
    }
    let has_pip =
        capture(Command::new(&python).args(["-m", "pip", "--version"])).is_some_and(|o| o.status.success());
    if !has_pip {
        return Err(
            Failure::new("installing torch", format!("{} has no pip", python.display()))
                .fix("install pip (python3 -m ensurepip, or apt-get install python3-pip), then rerun"),
        );
    }
    if let Some(free) = free_bytes(root)
        && free < INSTALL_BYTES
    {
        return Err(Failure::new(
            "installing torch",
            format!("only {:.1} GiB free on the disk holding {}", free as f64 / (1u64 << 30) as f64, root.display()),
        )
        .fix("torch and its CUDA wheels need about 6 GB: free some space, or set LIBTORCH to an existing torch 2.11.0"));
    }
    println!("setup: installing torch=={TORCH_VERSION} into .venv (about 4.7 GB; takes minutes)");
    run(
        Command::new(&python)
            .args(["-m", "pip", "install", "--disable-pip-version-check"])
            .arg(format!("torch=={TORCH_VERSION}")),
        "installing torch",
    )
    .map_err(|e| {
        e.fix("check that PyPI is reachable and the disk has room, then rerun `cargo xtask setup`")
    })?;
    let dir = torch_dir_of_python(&python)
        .ok_or_else(|| Failure::new("installing torch", "pip finished but .venv cannot find torch"))?;
    let version = version_of(&dir)
        .ok_or_else(|| Failure::new("installing torch", format!("{} holds no libtorch", dir.display())))?;
    check_version(dir, version, ".venv")
}

fn point_link(link: &Path, dir: &Path) -> Result<(), Failure> {
    if std::fs::read_link(link).is_ok_and(|current| current == dir) {
        return Ok(());
    }
    let _ = std::fs::remove_file(link);
    std::os::unix::fs::symlink(dir, link).map_err(|e| {
        Failure::new(
            "libtorch",
            format!("cannot link {} to {}: {e}", link.display(), dir.display()),
        )
    })
}
