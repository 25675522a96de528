//! `distill serve` as a user runs it: our own teacher client (`distill generate`) against it
//! writes a dataset whose log-probabilities are the model's own, SIGTERM lets the request in
//! flight finish and exits 0, and a port in use is a one-line error.

#[path = "../crates/gguf/tests/support/assets.rs"]
mod assets;
#[path = "support/binary.rs"]
mod binary;
#[path = "../crates/serve/tests/support/own_logprobs.rs"]
mod own_logprobs;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use distill::student::tch::Device;
use distill::student::tokenizer::Message;
use distill::student::{Precision, Pretrained};
use own_logprobs::own_logprobs;

use binary::binary;

/// `distill serve` on a free port, and its address once it listens.
struct Serving {
    child: Child,
    address: String,
}

impl Serving {
    fn start(extra: &[&str]) -> Self {
        let model = assets::smollm2_gguf();
        let mut child = Command::new(binary())
            .args([
                "serve",
                "--model",
                model.to_str().unwrap(),
                "--port",
                "0",
                "--served-model-name",
                "student",
            ])
            .args(extra)
            .env("HF_HUB_OFFLINE", "1")
            .env_remove("DISTILL_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.strip_suffix("/v1\n"))
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .to_owned();
        Self { child, address }
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; the status and the body.
fn post(address: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

#[test]
fn our_teacher_client_against_distill_serve_records_the_models_own_logprobs() {
    let server = Serving::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let prompts = Path::new(env!("CARGO_MANIFEST_DIR")).join("datasets/prompts/lab.jsonl");
    let output = dir.path().join("data.jsonl");
    let generated = Command::new(binary())
        .args(["generate", "--provider", "openai", "--base-url"])
        .arg(format!("http://{}/v1", server.address))
        .args([
            "--model",
            "student",
            "--num-examples",
            "3",
            "--top-logprobs",
            "5",
            "--max-tokens",
            "16",
        ])
        .args(["--temperature", "0", "--prompts"])
        .arg(&prompts)
        .arg("--output")
        .arg(&output)
        .env_remove("OPENAI_API_KEY")
        .env_remove("DISTILL_CONFIG")
        .output()
        .unwrap();
    assert!(
        generated.status.success(),
        "{}",
        String::from_utf8_lossy(&generated.stderr)
    );

    let examples = distill::data::read_file(&output).unwrap();
    assert_eq!(examples.len(), 3);
    let mut model = Pretrained::load(assets::smollm2_gguf(), Device::Cpu).unwrap();
    model.prepare_for_generation(Precision::F32);
    for example in &examples {
        let logprobs = example.logprobs.as_ref().expect("the dataset holds logprobs");
        let messages: Vec<Message> = example
            .messages
            .iter()
            .map(|m| Message::new(m.role.as_str(), m.content.clone()))
            .collect();
        let own = own_logprobs(&model, &messages, 16);
        assert_eq!(logprobs.len(), own.len(), "{}", example.id);
        for (i, (entry, own)) in logprobs.iter().zip(&own).enumerate() {
            assert_eq!(entry.token, own.token, "{} token {i}", example.id);
            assert!(
                (entry.logprob - f64::from(own.logprob)).abs() <= 1e-4,
                "{} token {i}: {} against the model's {}",
                example.id,
                entry.logprob,
                own.logprob
            );
            assert_eq!(entry.top_logprobs.len(), 5);
            for (alternative, own) in entry.top_logprobs.iter().zip(&own.top5) {
                assert!((alternative.logprob - f64::from(*own)).abs() <= 1e-4);
            }
        }
    }
}

#[test]
fn sigterm_answers_the_request_in_flight_then_exits_0() {
    let mut server = Serving::start(&[]);
    let address = server.address.clone();
    let request = std::thread::spawn(move || {
        post(
            &address,
            "/v1/chat/completions",
            r#"{"model": "student", "messages": [{"role": "user", "content": "Tell me a story."}], "max_tokens": 48, "temperature": 0}"#,
        )
    });
    // Once the request is decoding, ask the server to stop.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let killed = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let (status, body) = request.join().unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"completion_tokens\""), "{body}");
    let exit = server.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn a_port_in_use_is_a_one_line_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let model = assets::smollm2_gguf();
    let out = Command::new(binary())
        .args(["serve", "--model", model.to_str().unwrap(), "--port", &port])
        .env_remove("DISTILL_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(&format!("cannot listen on 127.0.0.1:{port}")) && lines[0].contains("in use"),
        "{stderr}"
    );
}
