//! Opt-in: the engine against a real OpenAI-compatible server, llama.cpp's server from
//! `llama-cpp-python[server]` serving SmolLM2-135M-Instruct. Run it with `cargo xtask test-llama`,
//! which starts the server and sets `DISTILL_LLAMA_URL` (e.g. `http://127.0.0.1:8089/v1`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use distill_data::prompts::LabPrompts;
use distill_data::{FinishReason, PromptSource, read_file};
use distill_teacher::{
    CancellationToken, Engine, GenerateOptions, GenerationParams, OpenAiSettings, OpenAiTeacher, StopReason,
    Teacher,
};

fn server_url() -> String {
    std::env::var("DISTILL_LLAMA_URL")
        .expect("set DISTILL_LLAMA_URL to a llama.cpp server's /v1 URL, or run `cargo xtask test-llama`")
}

/// The tokens spell the response. llama-cpp-python's server decodes each token on its own and
/// sends `bytes: null`, so a character split across tokens (`≈` is 3 bytes) comes back as
/// empty or partial token strings: for such responses only the ASCII characters can be
/// compared. With `bytes` (OpenAI sends them) the text is exact.
fn assert_spells(tokens: &[distill_data::TokenLogprob], text: &str) {
    let joined: String = tokens.iter().map(|t| t.token.as_str()).collect();
    if text.is_ascii() {
        assert_eq!(joined, text);
    } else {
        let ascii = |s: &str| s.chars().filter(char::is_ascii).collect::<String>();
        assert_eq!(ascii(&joined), ascii(text));
    }
}

fn teacher() -> Arc<dyn Teacher> {
    let settings = OpenAiSettings {
        base_url: server_url(),
        api_key: None,
        organization: None,
        project: None,
    };
    Arc::new(OpenAiTeacher::new(&settings, "SmolLM2-135M-Instruct").unwrap())
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: cargo xtask test-llama"]
async fn llama_server_generates_20_examples_with_consistent_logprobs() {
    let lab = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/prompts/lab.jsonl");
    let prompts = LabPrompts {
        path: lab,
        system: None,
    }
    .load()
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("llama.jsonl");
    let mut options = GenerateOptions::new(20, &out);
    options.concurrency = 2;
    options.request_timeout = Duration::from_secs(120);
    options.params = GenerationParams {
        temperature: Some(0.7),
        max_tokens: Some(48),
        seed: Some(7),
        n: 1,
        top_logprobs: 5,
    };
    let summary = Engine::new(teacher(), options)
        .run(prompts, CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(summary.stop, StopReason::Completed, "{summary:?}");
    assert_eq!(summary.progress.failed, 0);

    let examples = read_file(&out).unwrap();
    assert_eq!(examples.len(), 20);
    let (mut tokens_total, mut chosen_listed) = (0usize, 0usize);
    for e in &examples {
        let t = e.teacher.as_ref().expect("teacher info");
        assert_eq!(t.provider, "openai-compatible");
        assert!(
            matches!(t.finish_reason, Some(FinishReason::Stop | FinishReason::Length)),
            "{:?}",
            t.finish_reason
        );
        let usage = t.usage.expect("usage");
        let lp = e.logprobs.as_ref().expect("logprobs");
        assert!(!lp.is_empty());
        assert_eq!(
            usage.completion_tokens as usize,
            lp.len(),
            "one logprob entry per generated token"
        );
        assert_spells(lp, &e.response);
        for tok in lp {
            assert!(tok.logprob <= 0.0 && tok.logprob.is_finite(), "{tok:?}");
            assert!(
                !tok.top_logprobs.is_empty() && tok.top_logprobs.len() <= 5,
                "{tok:?}"
            );
            assert!(
                tok.top_logprobs.windows(2).all(|w| w[0].logprob >= w[1].logprob),
                "top_logprobs must be sorted, most likely first: {tok:?}"
            );
            assert!(tok.top_logprobs.iter().all(|a| a.logprob <= 0.0));
            tokens_total += 1;
            if let Some(same) = tok.top_logprobs.iter().find(|a| a.token == tok.token) {
                chosen_listed += 1;
                assert_eq!(
                    same.logprob, tok.logprob,
                    "the chosen token's entry must carry its logprob: {tok:?}"
                );
            }
        }
    }
    // Sampling at 0.7 (after llama.cpp's repeat penalty) mostly picks one of the five most likely
    // tokens: 90% of 3,798 in the acceptance run.
    assert!(
        chosen_listed * 4 >= tokens_total * 3,
        "{chosen_listed} of {tokens_total} chosen tokens listed"
    );
}

#[tokio::test]
#[ignore = "needs a llama.cpp server: cargo xtask test-llama"]
async fn llama_server_top_logprobs_are_cut_to_k() {
    // llama.cpp appends the sampled token to `top_logprobs` when it is not among the k most
    // likely (its repeat penalty makes that common even at temperature 0); the client keeps k.
    let params = GenerationParams {
        temperature: Some(0.0),
        max_tokens: Some(24),
        seed: None,
        n: 1,
        top_logprobs: 3,
    };
    let messages = [distill_data::Message::user("Name three primary colours.")];
    let c = teacher().complete(&messages, &params).await.unwrap();
    let choice = c.first().unwrap();
    let lp = choice.logprobs.as_ref().unwrap();
    assert_spells(lp, &choice.text);
    for t in lp {
        assert_eq!(t.top_logprobs.len(), 3, "{t:?}");
        assert!(
            t.top_logprobs.windows(2).all(|w| w[0].logprob >= w[1].logprob),
            "{t:?}"
        );
        if let Some(same) = t.top_logprobs.iter().find(|a| a.token == t.token) {
            assert_eq!(same.logprob, t.logprob);
        } else {
            assert!(
                t.logprob <= t.top_logprobs[2].logprob,
                "an unlisted token cannot beat the listed ones: {t:?}"
            );
        }
    }
    assert!(c.latency > Duration::ZERO);
}
