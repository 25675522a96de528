//! No secret appears in any log line at trace level (ours, reqwest's, hyper's), in `Debug`
//! output, in error messages, in the dataset or in the failures file, even when a server
//! echoes the credentials back in an error body.
//!
//! This binary installs a global trace-level subscriber (which also captures `log` records),
//! so it holds this one test only.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::time::OffsetDateTime;
use common::{Call, FaultServer, Reply};
use distill_teacher::engine::failures_path;
use distill_teacher::retry::RetryPolicy;
use distill_teacher::{
    AzureTeacher, CancellationToken, Engine, GenerateOptions, OpenAiTeacher, Provider, ProviderSettings,
    Teacher, TeacherConfig,
};

const OPENAI_KEY: &str = "sk-proj-SECRETopenai0123456789";
const AZURE_KEY: &str = "azSECRETkey9876543210";
const ENTRA_TOKEN: &str = "eyJSECRETentraToken.abc.def";
const CLIENT_SECRET: &str = "cs~SECRETclientSecret42";

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct FixedToken;

#[async_trait::async_trait]
impl TokenCredential for FixedToken {
    async fn get_token(
        &self,
        _: &[&str],
        _: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        Ok(AccessToken::new(
            ENTRA_TOKEN,
            OffsetDateTime::now_utc() + Duration::from_secs(3600),
        ))
    }
}

/// Every request: prompts ending in 0 first get a 500, prompts ending in 3 get a 401 that
/// echoes the credentials, the rest succeed.
fn script(c: &Call) -> Reply {
    if c.prompt.ends_with('3') {
        Reply::EchoCredentials(401)
    } else if c.prompt.ends_with('0') && c.attempt == 1 {
        Reply::status(500)
    } else {
        Reply::Ok
    }
}

fn options(dir: &std::path::Path, name: &str) -> GenerateOptions {
    let mut o = GenerateOptions::new(6, dir.join(name));
    o.concurrency = 1;
    o.params.top_logprobs = 2;
    o.retry = RetryPolicy {
        initial_backoff: Duration::from_millis(1),
        ..Default::default()
    };
    o
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_in_logs_debug_errors_or_files() {
    let capture = Capture::default();
    let writer = capture.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("this test binary installs the only subscriber");

    let server = FaultServer::start(Duration::ZERO, script).await;
    let dir = tempfile::tempdir().unwrap();
    let mut evidence = String::new();

    // OpenAI with a key.
    let vars = [
        ("OPENAI_API_KEY", OPENAI_KEY.to_owned()),
        ("OPENAI_BASE_URL", server.base_url()),
    ];
    let config = TeacherConfig::from_vars(Provider::OpenAi, |k| {
        vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    evidence += &format!("{config:?}\n{config:#?}\n");
    let ProviderSettings::OpenAi(s) = &config.provider else {
        panic!()
    };
    let openai = OpenAiTeacher::new(s, "gpt-4o-mini").unwrap();
    evidence += &format!("{openai:?}\n");
    let err = Engine::new(Arc::new(openai), options(dir.path(), "openai.jsonl"))
        .run(common::prompts(6), CancellationToken::new())
        .await
        .unwrap_err();
    evidence += &format!("{err}\n{err:?}\n{err:#?}\n");
    let mut source: Option<&dyn std::error::Error> = Some(&err);
    while let Some(e) = source {
        evidence += &format!("{e}\n");
        source = e.source();
    }

    // Azure with an api-key, and the client-secret config.
    let vars = [
        ("AZURE_OPENAI_ENDPOINT", server.root_url()),
        ("AZURE_OPENAI_DEPLOYMENT_NAME", "dep".to_owned()),
        ("AZURE_OPENAI_API_KEY", AZURE_KEY.to_owned()),
        ("AZURE_TENANT_ID", "tenant".to_owned()),
        ("AZURE_CLIENT_ID", "client".to_owned()),
        ("AZURE_CLIENT_SECRET", CLIENT_SECRET.to_owned()),
    ];
    let lookup = |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone());
    let config = TeacherConfig::from_vars(Provider::Azure, lookup).unwrap();
    evidence += &format!("{config:?}\n");
    let ProviderSettings::Azure(s) = &config.provider else {
        panic!()
    };
    let azure = AzureTeacher::new(s).unwrap();
    evidence += &format!("{azure:?}\n");
    let err = Engine::new(Arc::new(azure), options(dir.path(), "azure.jsonl"))
        .run(common::prompts(6), CancellationToken::new())
        .await
        .unwrap_err();
    evidence += &format!("{err}\n{err:?}\n");

    // Azure with Entra ID (the client-secret settings, but a test credential's token).
    let sp = [("AZURE_OPENAI_AUTH", "client-secret".to_owned())];
    let config = TeacherConfig::from_vars(Provider::Azure, |k| {
        sp.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.clone())
            .or_else(|| lookup(k))
    })
    .unwrap();
    evidence += &format!("{config:?}\n");
    let ProviderSettings::Azure(s) = &config.provider else {
        panic!()
    };
    let entra = AzureTeacher::with_credential(s, Arc::new(FixedToken)).unwrap();
    evidence += &format!("{entra:?}\n");
    let teacher: Arc<dyn Teacher> = Arc::new(entra);
    let err = Engine::new(teacher, options(dir.path(), "entra.jsonl"))
        .run(common::prompts(6), CancellationToken::new())
        .await
        .unwrap_err();
    evidence += &format!("{err}\n{err:?}\n");

    for name in ["openai.jsonl", "azure.jsonl", "entra.jsonl"] {
        let out = dir.path().join(name);
        evidence += &std::fs::read_to_string(&out).unwrap();
        evidence += &std::fs::read_to_string(failures_path(&out)).unwrap();
    }

    // The server did receive the secrets: the checks below are not vacuous.
    let sent: Vec<String> = server
        .seen()
        .iter()
        .flat_map(|s| {
            s.call
                .headers
                .iter()
                .map(|(_, v)| v.to_str().unwrap_or_default().to_owned())
                .collect::<Vec<_>>()
        })
        .collect();
    for secret in [OPENAI_KEY, AZURE_KEY, ENTRA_TOKEN] {
        assert!(sent.iter().any(|v| v.contains(secret)), "{secret} was never sent");
    }

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("TRACE"), "trace-level events must be captured");
    assert!(logs.contains("retrying"), "the retry events must be captured");
    assert!(logs.contains("fatal error"), "the fatal error must be logged");
    assert!(
        evidence.contains("[REDACTED]"),
        "the echoed credentials must be scrubbed, not dropped"
    );
    for secret in [OPENAI_KEY, AZURE_KEY, ENTRA_TOKEN, CLIENT_SECRET] {
        assert!(!logs.contains(secret), "secret in the logs:\n{logs}");
        assert!(
            !evidence.contains(secret),
            "secret in Debug/errors/files:\n{evidence}"
        );
    }
}
