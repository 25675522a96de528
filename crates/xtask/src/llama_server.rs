//! llama.cpp's OpenAI-compatible server (from `llama-cpp-python[server]`) serving the
//! SmolLM2-135M-Instruct GGUF: a real peer for distill-teacher's opt-in integration tests.
//!
//! The server lives in its own venv, `.venv-llama` (git-ignored), so that its numpy and
//! pydantic never meet the torch venv. Building llama.cpp takes about 12 minutes on 2 cores
//! the first time; pip caches the wheel afterwards.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::assets;
use crate::shell::{Failure, run};
use crate::venv::Venv;

/// The port the tests use unless told otherwise.
pub const DEFAULT_PORT: u16 = 8089;

/// How long the server may take to load the model and answer.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(120);

/// Parses `[--port P]`.
pub fn port_from(args: &[String]) -> Result<u16, Failure> {
    match args {
        [] => Ok(DEFAULT_PORT),
        [flag, value] if flag == "--port" => value
            .parse()
            .map_err(|_| Failure::new("arguments", format!("`{value}` is not a port number"))),
        other => Err(Failure::new(
            "arguments",
            format!("unexpected arguments {other:?}; expected [--port P]"),
        )),
    }
}

/// `cargo xtask llama-server`: runs the server in the foreground until interrupted.
pub fn serve(root: &Path, port: u16) -> Result<(), Failure> {
    let mut server = start(root, port)?;
    println!("llama-server: OpenAI-compatible API at http://127.0.0.1:{port}/v1 (Ctrl-C to stop)");
    let status = server
        .child
        .wait()
        .map_err(|e| Failure::new("llama.cpp server", format!("cannot wait for the server: {e}")))?;
    Err(Failure::new(
        "llama.cpp server",
        format!("the server exited with {status}"),
    ))
}

/// `cargo xtask test-llama`: starts the server, runs distill-teacher's `llama_server` tests
/// against it, and stops it whatever the outcome.
pub fn test(root: &Path, port: u16) -> Result<(), Failure> {
    let server = start(root, port)?;
    let url = format!("http://127.0.0.1:{port}/v1");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    println!("xtask: DISTILL_LLAMA_URL={url} cargo test -p distill-teacher --test llama_server -- --ignored");
    let result = run(
        Command::new(cargo)
            .args([
                "test",
                "-p",
                "distill-teacher",
                "--test",
                "llama_server",
                "--",
                "--ignored",
            ])
            .env("DISTILL_LLAMA_URL", &url)
            .current_dir(root),
        "llama.cpp integration tests",
    );
    drop(server);
    result
}

/// A running server, stopped on drop.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(root: &Path, port: u16) -> Result<Server, Failure> {
    let python = LLAMA_VENV.ensure(root)?;
    let model = assets::ensure_smollm2()?;
    if TcpStream::connect(("127.0.0.1", port)).is_ok() {
        return Err(
            Failure::new("llama.cpp server", format!("port {port} is already in use"))
                .fix("stop whatever listens there, or pass --port P"),
        );
    }
    println!("llama-server: starting on port {port} with {}", model.display());
    let child = Command::new(&python)
        .args(["-m", "llama_cpp.server", "--model"])
        .arg(&model)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--n_ctx",
            "2048",
            "--logits_all",
            "true",
        ])
        .spawn()
        .map_err(|e| {
            Failure::new(
                "llama.cpp server",
                format!("cannot start {}: {e}", python.display()),
            )
        })?;
    let mut server = Server { child };
    let started = Instant::now();
    while !healthy(port) {
        if let Ok(Some(status)) = server.child.try_wait() {
            return Err(Failure::new(
                "llama.cpp server",
                format!("the server exited with {status} while starting"),
            ));
        }
        if started.elapsed() > HEALTH_TIMEOUT {
            return Err(Failure::new(
                "llama.cpp server",
                "the server did not answer within 120 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "llama-server: healthy after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(server)
}

/// `GET /v1/models` answers 200.
fn healthy(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let request = format!("GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// `.venv-llama`, with `llama-cpp-python[server]`.
const LLAMA_VENV: Venv = Venv {
    dir: ".venv-llama",
    module: "llama_cpp.server",
    packages: &["llama-cpp-python[server]"],
    note: "builds llama.cpp: ~12 min on 2 cores the first time",
    step: "llama.cpp venv",
};
