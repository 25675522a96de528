//! Errors chain their causes instead of repeating them: joined with ": ", as the CLI prints
//! them, each cause appears exactly once.

use std::error::Error as _;
use std::sync::Arc;

use distill_teacher::{CancellationToken, Engine, Error, GenerateOptions, OpenAiSettings, OpenAiTeacher};

fn causes(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = Some(e);
    while let Some(cause) = next {
        out.push(cause.to_string());
        next = cause.source();
    }
    out
}

#[tokio::test]
async fn resuming_a_malformed_dataset_names_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.jsonl");
    std::fs::write(&output, "{\"format_version\": 1, \"id\": }\n").unwrap();
    let settings = OpenAiSettings {
        base_url: "http://127.0.0.1:9/v1".into(),
        api_key: None,
        organization: None,
        project: None,
    };
    let teacher = Arc::new(OpenAiTeacher::new(&settings, "m").unwrap());
    let mut options = GenerateOptions::new(1, &output);
    options.resume = true;
    let err = Engine::new(teacher, options)
        .run(Vec::new(), CancellationToken::new())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Data(_)), "{err:?}");
    assert!(err.source().is_some(), "the cause is chained");
    let causes = causes(&err);
    let line = causes.join(": ");
    assert_eq!(
        line,
        format!(
            "{}:1:29: cannot parse {{\"format_version\": 1, \"id\": }}: expected value",
            output.display()
        )
    );
    for cause in &causes {
        assert_eq!(line.matches(cause.as_str()).count(), 1, "{cause:?} in {line:?}");
    }
}
