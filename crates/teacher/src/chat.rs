//! Chat completion requests and responses, in async-openai's types.

use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage, ChatCompletionRequestSystemMessage,
    ChatCompletionRequestUserMessage, ChatCompletionTokenLogprob, CreateChatCompletionRequest,
    CreateChatCompletionResponse, FinishReason as OaFinishReason,
};
use distill_data::{FinishReason, Message, Role, TokenLogprob, TopLogprob, Usage};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::teacher::{Choice, Completion, GenerationParams};

/// Which request field carries the completion budget.
///
/// OpenAI deprecated `max_tokens` in favour of `max_completion_tokens` (and reasoning models
/// reject the old name), but OpenAI-compatible servers and older Azure api-versions only know
/// `max_tokens`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    /// `max_tokens`.
    MaxTokens,
    /// `max_completion_tokens`.
    MaxCompletionTokens,
}

/// The request body for `messages` and `params`.
pub(crate) fn build_request(
    model: &str,
    messages: &[Message],
    params: &GenerationParams,
    field: MaxTokensField,
) -> CreateChatCompletionRequest {
    let messages = messages
        .iter()
        .map(|m| match m.role {
            Role::System => ChatCompletionRequestMessage::System(ChatCompletionRequestSystemMessage {
                content: m.content.clone().into(),
                name: None,
            }),
            Role::User => ChatCompletionRequestMessage::User(ChatCompletionRequestUserMessage {
                content: m.content.clone().into(),
                name: None,
            }),
            Role::Assistant => {
                ChatCompletionRequestMessage::Assistant(ChatCompletionRequestAssistantMessage {
                    content: Some(m.content.clone().into()),
                    ..Default::default()
                })
            }
        })
        .collect();
    let logprobs = params.top_logprobs > 0;
    #[allow(deprecated)] // `max_tokens`: see `MaxTokensField`.
    CreateChatCompletionRequest {
        model: model.to_owned(),
        messages,
        temperature: params.temperature,
        seed: params.seed,
        n: (params.n != 1).then_some(params.n),
        logprobs: logprobs.then_some(true),
        top_logprobs: logprobs.then_some(params.top_logprobs),
        max_tokens: params.max_tokens.filter(|_| field == MaxTokensField::MaxTokens),
        max_completion_tokens: params
            .max_tokens
            .filter(|_| field == MaxTokensField::MaxCompletionTokens),
        ..Default::default()
    }
}

/// Azure OpenAI's content-filter annotations, which async-openai's response type drops.
#[derive(Debug, Default, Deserialize)]
struct AzureFilters {
    #[serde(default)]
    prompt_filter_results: Option<serde_json::Value>,
    #[serde(default)]
    choices: Vec<AzureChoiceFilters>,
}

#[derive(Debug, Default, Deserialize)]
struct AzureChoiceFilters {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    content_filter_results: Option<serde_json::Value>,
}

/// Parses a chat completion body. `latency` is filled in by the caller.
///
/// `top_logprobs` is normalised to mean "the `top_k` most likely alternatives, most likely
/// first": sorted by logprob (stable), then cut to `top_k`. OpenAI's lists already are;
/// llama.cpp's server appends the sampled token when it is not among the k most likely, and
/// loses the order when several candidates decode to the same text (partial UTF-8 bytes).
pub(crate) fn parse_response(
    url: &str,
    body: &[u8],
    top_k: u8,
    keep: impl Fn(&[u8]) -> String,
) -> Result<Completion> {
    let response: CreateChatCompletionResponse =
        serde_json::from_slice(body).map_err(|source| Error::Decode {
            url: url.to_owned(),
            body: keep(body),
            source,
        })?;
    if response.choices.is_empty() {
        return Err(Error::Protocol {
            url: url.to_owned(),
            problem: "the response has no choices".into(),
        });
    }
    // Cannot fail where the typed parse succeeded, except on exotic duplicate keys: keep going.
    let filters: AzureFilters = serde_json::from_slice(body).unwrap_or_default();
    let filter_for = |index: u32, position: usize| {
        filters
            .choices
            .iter()
            .find(|c| c.index == Some(index))
            .or_else(|| filters.choices.get(position))
            .and_then(|c| c.content_filter_results.clone())
            .filter(|v| !v.is_null())
    };
    let choices = response
        .choices
        .into_iter()
        .enumerate()
        .map(|(position, c)| Choice {
            text: c.message.content.unwrap_or_default(),
            finish_reason: c.finish_reason.map(finish_reason),
            logprobs: c
                .logprobs
                .and_then(|l| l.content)
                .map(|tokens| tokens.into_iter().map(|t| token(t, usize::from(top_k))).collect()),
            content_filter_results: filter_for(c.index, position),
        })
        .collect();
    Ok(Completion {
        choices,
        usage: response.usage.map(|u| Usage {
            prompt_tokens: u64::from(u.prompt_tokens),
            completion_tokens: u64::from(u.completion_tokens),
        }),
        latency: std::time::Duration::ZERO,
        model: response.model,
        created: Some(i64::from(response.created)),
        prompt_filter_results: filters.prompt_filter_results.filter(|v| !v.is_null()),
    })
}

fn finish_reason(r: OaFinishReason) -> FinishReason {
    match r {
        OaFinishReason::Stop => FinishReason::Stop,
        OaFinishReason::Length => FinishReason::Length,
        OaFinishReason::ContentFilter => FinishReason::ContentFilter,
        OaFinishReason::ToolCalls => FinishReason::ToolCalls,
        OaFinishReason::FunctionCall => FinishReason::Other("function_call".into()),
    }
}

fn token(t: ChatCompletionTokenLogprob, top_k: usize) -> TokenLogprob {
    let mut alternatives = t.top_logprobs;
    alternatives.sort_by(|a, b| b.logprob.total_cmp(&a.logprob));
    alternatives.truncate(top_k);
    TokenLogprob {
        token: t.token,
        bytes: t.bytes,
        logprob: f64::from(t.logprob),
        top_logprobs: alternatives
            .into_iter()
            .map(|a| TopLogprob {
                token: a.token,
                bytes: a.bytes,
                logprob: f64::from(a.logprob),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_shape() {
        let msgs = [Message::system("be brief"), Message::user("hi")];
        let p = GenerationParams {
            top_logprobs: 5,
            max_tokens: Some(64),
            seed: Some(3),
            ..Default::default()
        };
        let r = build_request("gpt-4o", &msgs, &p, MaxTokensField::MaxTokens);
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["model"], "gpt-4o");
        assert_eq!(v["messages"][0]["role"], "system");
        assert_eq!(v["messages"][1]["content"], "hi");
        assert_eq!(v["logprobs"], true);
        assert_eq!(v["top_logprobs"], 5);
        assert_eq!(v["max_tokens"], 64);
        assert_eq!(v["seed"], 3);
        assert!(v.get("max_completion_tokens").is_none());
        assert!(v.get("n").is_none());
        let p = GenerationParams { top_logprobs: 0, ..p };
        let v =
            serde_json::to_value(build_request("m", &msgs, &p, MaxTokensField::MaxCompletionTokens)).unwrap();
        assert!(
            v.get("logprobs").is_none() && v.get("top_logprobs").is_none() && v.get("max_tokens").is_none()
        );
        assert_eq!(v["max_completion_tokens"], 64);
    }

    #[test]
    fn parses_logprobs_and_azure_filters() {
        let body = br#"{
          "id": "c1", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o",
          "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}}],
          "choices": [{
            "index": 0, "finish_reason": "content_filter",
            "message": {"role": "assistant", "content": "Hel"},
            "logprobs": {"content": [{"token": "Hel", "logprob": -0.25, "bytes": [72,101,108],
                          "top_logprobs": [{"token": "Hel", "logprob": -0.25, "bytes": [72,101,108]}]}]},
            "content_filter_results": {"violence": {"filtered": true, "severity": "medium"}}
          }],
          "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}
        }"#;
        let c = parse_response("u", body, 1, |b| String::from_utf8_lossy(b).into_owned()).unwrap();
        let ch = c.first().unwrap();
        assert_eq!(ch.text, "Hel");
        assert_eq!(ch.finish_reason, Some(FinishReason::ContentFilter));
        assert_eq!(ch.logprobs.as_ref().unwrap()[0].logprob, -0.25);
        assert_eq!(
            ch.content_filter_results.as_ref().unwrap()["violence"]["filtered"],
            true
        );
        assert!(c.prompt_filter_results.is_some());
        assert_eq!(
            c.usage,
            Some(Usage {
                prompt_tokens: 9,
                completion_tokens: 1
            })
        );
    }

    #[test]
    fn top_logprobs_are_sorted_then_cut_to_k() {
        // llama.cpp: unsorted (two candidates decode to " "), plus the sampled token appended.
        let body = br#"{"id":"c","object":"chat.completion","created":1,"model":"m",
          "choices":[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":" approximately"},
            "logprobs":{"content":[{"token":" approximately","logprob":-1.5,"bytes":null,"top_logprobs":[
              {"token":" ","logprob":-4.3,"bytes":null},{"token":" approximately","logprob":-1.5,"bytes":null},
              {"token":" a","logprob":-3.9,"bytes":null},{"token":" only","logprob":-5.1,"bytes":null}]}]}}]}"#;
        let c = parse_response("u", body, 2, |b| String::from_utf8_lossy(b).into_owned()).unwrap();
        let top = &c.first().unwrap().logprobs.as_ref().unwrap()[0].top_logprobs;
        let got: Vec<(&str, f64)> = top.iter().map(|a| (a.token.as_str(), a.logprob)).collect();
        assert_eq!(got, [(" approximately", -1.5), (" a", -3.9000000953674316)]);
    }

    #[test]
    fn malformed_body_keeps_evidence() {
        let err = parse_response("u", b"{\"id\": truncated", 0, |b| {
            String::from_utf8_lossy(b).into_owned()
        })
        .unwrap_err();
        match err {
            Error::Decode { body, .. } => assert!(body.contains("truncated")),
            other => panic!("unexpected {other:?}"),
        }
        let empty = br#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[]}"#;
        assert!(matches!(
            parse_response("u", empty, 0, |_| String::new()),
            Err(Error::Protocol { .. })
        ));
    }
}
