//! Azure OpenAI request shapes (URL, api-version, api-key header) and the Entra ID token flow
//! with a test credential implementing azure_core's `TokenCredential`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};
use azure_core::time::OffsetDateTime;
use common::{Call, FaultServer, Reply};
use distill_data::Message;
use distill_teacher::engine::failures_path;
use distill_teacher::{
    AzureSettings, AzureTeacher, COGNITIVE_SERVICES_SCOPE, CancellationToken, Engine, Error, ErrorClass,
    GenerateOptions, GenerationParams, Provider, ProviderSettings, Teacher, TeacherConfig,
};

/// Hands out `entra-token-1`, `entra-token-2`, … each valid for `lifetime`.
#[derive(Debug)]
struct TestCredential {
    calls: AtomicUsize,
    lifetime: Duration,
    fail: bool,
}

impl TestCredential {
    fn new(lifetime: Duration) -> Arc<Self> {
        Arc::new(TestCredential {
            calls: AtomicUsize::new(0),
            lifetime,
            fail: false,
        })
    }
}

#[async_trait::async_trait]
impl TokenCredential for TestCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        _options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        assert_eq!(scopes, [COGNITIVE_SERVICES_SCOPE]);
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Credential,
                "no identity available",
            ));
        }
        Ok(AccessToken::new(
            format!("entra-token-{n}"),
            OffsetDateTime::now_utc() + self.lifetime,
        ))
    }
}

fn settings(server: &FaultServer, vars: &[(&str, &str)]) -> AzureSettings {
    let mut all = vec![
        ("AZURE_OPENAI_ENDPOINT", server.root_url()),
        ("AZURE_OPENAI_DEPLOYMENT_NAME", "gpt4o-dep".to_owned()),
    ];
    all.extend(vars.iter().map(|(k, v)| (*k, v.to_string())));
    let config = TeacherConfig::from_vars(Provider::Azure, |k| {
        all.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
    })
    .unwrap();
    match config.provider {
        ProviderSettings::Azure(s) => s,
        other => panic!("expected azure, got {other:?}"),
    }
}

fn ask() -> Vec<Message> {
    vec![Message::system("Be brief."), Message::user("question number 1")]
}

#[tokio::test]
async fn api_key_request_shape() {
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    let s = settings(
        &server,
        &[
            ("AZURE_OPENAI_API_KEY", "az-key-123"),
            ("AZURE_OPENAI_API_VERSION", "2025-01-01-preview"),
        ],
    );
    let teacher = AzureTeacher::new(&s).unwrap();
    assert_eq!(teacher.id().provider, "azure");
    assert_eq!(teacher.id().model, "gpt4o-dep");
    let c = teacher
        .complete(
            &ask(),
            &GenerationParams {
                max_tokens: Some(32),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(c.first().unwrap().text, common::answer_for("question number 1"));
    let seen = server.seen();
    let call = &seen[0].call;
    assert_eq!(call.path, "/openai/deployments/gpt4o-dep/chat/completions");
    assert_eq!(call.query.as_deref(), Some("api-version=2025-01-01-preview"));
    assert_eq!(call.headers["api-key"], "az-key-123");
    assert!(call.headers.get("authorization").is_none());
    assert_eq!(call.body["model"], "gpt4o-dep");
    assert_eq!(call.body["max_tokens"], 32);
}

#[tokio::test]
async fn entra_token_is_cached_until_near_expiry() {
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    let s = settings(&server, &[]);
    let credential = TestCredential::new(Duration::from_secs(3600));
    let teacher = AzureTeacher::with_credential(&s, credential.clone()).unwrap();
    for _ in 0..5 {
        teacher
            .complete(&ask(), &GenerationParams::default())
            .await
            .unwrap();
    }
    assert_eq!(
        credential.calls.load(Ordering::SeqCst),
        1,
        "a valid token must be reused"
    );
    for seen in server.seen() {
        assert_eq!(seen.call.headers["authorization"], "Bearer entra-token-1");
        assert!(seen.call.headers.get("api-key").is_none());
        assert_eq!(seen.call.query.as_deref(), Some("api-version=2024-10-21"));
    }

    // A token inside the refresh margin (5 minutes) is replaced before use.
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    let s = settings(&server, &[]);
    let credential = TestCredential::new(Duration::from_secs(120));
    let teacher = AzureTeacher::with_credential(&s, credential.clone()).unwrap();
    for _ in 0..3 {
        teacher
            .complete(&ask(), &GenerationParams::default())
            .await
            .unwrap();
    }
    assert_eq!(credential.calls.load(Ordering::SeqCst), 3);
    let tokens: Vec<_> = server
        .seen()
        .iter()
        .map(|s| s.call.headers["authorization"].clone())
        .collect();
    assert_eq!(
        tokens,
        [
            "Bearer entra-token-1",
            "Bearer entra-token-2",
            "Bearer entra-token-3"
        ]
    );
}

#[tokio::test]
async fn concurrent_requests_share_one_token_fetch() {
    let server = FaultServer::start(Duration::from_millis(10), |_: &Call| Reply::Ok).await;
    let s = settings(&server, &[]);
    let credential = TestCredential::new(Duration::from_secs(3600));
    let teacher: Arc<dyn Teacher> = Arc::new(AzureTeacher::with_credential(&s, credential.clone()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let mut o = GenerateOptions::new(16, dir.path().join("out.jsonl"));
    o.concurrency = 8;
    Engine::new(teacher, o)
        .run(common::prompts(16), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(credential.calls.load(Ordering::SeqCst), 1);
    assert_eq!(server.seen().len(), 16);
}

#[tokio::test]
async fn credential_failure_is_a_credential_error() {
    let server = FaultServer::start(Duration::ZERO, |_: &Call| Reply::Ok).await;
    let s = settings(&server, &[]);
    let credential = Arc::new(TestCredential {
        calls: AtomicUsize::new(0),
        lifetime: Duration::ZERO,
        fail: true,
    });
    let teacher = AzureTeacher::with_credential(&s, credential).unwrap();
    let err = teacher
        .complete(&ask(), &GenerationParams::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Credential { .. }), "{err:?}");
    assert!(matches!(err.class(), ErrorClass::Transient { .. }));
    assert!(server.seen().is_empty(), "no request goes out without a token");
}

#[tokio::test]
async fn prompt_content_filter_400_is_not_retried() {
    let server = FaultServer::start(Duration::ZERO, |c: &Call| {
        if c.prompt.ends_with(" 2") {
            Reply::Error {
                status: 400,
                code: Some("content_filter"),
                headers: vec![],
            }
        } else {
            Reply::Ok
        }
    })
    .await;
    let s = settings(&server, &[("AZURE_OPENAI_API_KEY", "k")]);
    let teacher: Arc<dyn Teacher> = Arc::new(AzureTeacher::new(&s).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.jsonl");
    Engine::new(teacher, GenerateOptions::new(4, &out))
        .run(common::prompts(4), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(server.attempts()["question number 2"], 1);
    let failures = std::fs::read_to_string(failures_path(&out)).unwrap();
    assert_eq!(failures.lines().count(), 1);
    assert!(failures.contains("content_filter"), "{failures}");
    assert_eq!(distill_data::read_file(&out).unwrap().len(), 3);
}
