//! A teacher's answer as a dataset example, and what it cost.
//!
//! Live generation and batch mode record the same things: the first choice's text, a
//! [`TeacherInfo`] naming the model that answered, and the logprobs when they were asked for.
//! Live examples also keep the request's latency and Azure's content-filter annotations;
//! batch examples are marked `"batch": true` instead.

use distill_data::{Example, Prompt, TeacherInfo};

use crate::pricing::PriceTable;
use crate::teacher::{Completion, GenerationParams, TeacherId};

/// The example a live request made.
pub(crate) fn live_example(
    prompt: &Prompt,
    completion: &Completion,
    teacher: &TeacherId,
    params: &GenerationParams,
) -> Example {
    let latency_ms = Some(completion.latency.as_millis() as u64);
    let mut example = example(prompt, completion, teacher, params, latency_ms);
    let mut filters = serde_json::Map::new();
    if let Some(p) = &completion.prompt_filter_results {
        filters.insert("prompt".into(), p.clone());
    }
    if let Some(c) = completion.first().and_then(|c| c.content_filter_results.clone()) {
        filters.insert("completion".into(), c);
    }
    if !filters.is_empty() {
        example
            .metadata
            .insert("content_filter".into(), serde_json::Value::Object(filters));
    }
    example
}

/// The example a line of a batch's output made (a batch has no per-request latency).
pub(crate) fn batch_example(
    prompt: &Prompt,
    completion: &Completion,
    teacher: &TeacherId,
    params: &GenerationParams,
) -> Example {
    let mut example = example(prompt, completion, teacher, params, None);
    example
        .metadata
        .insert("batch".into(), serde_json::Value::Bool(true));
    example
}

fn example(
    prompt: &Prompt,
    completion: &Completion,
    teacher: &TeacherId,
    params: &GenerationParams,
    latency_ms: Option<u64>,
) -> Example {
    let choice = completion.first();
    let mut example = prompt
        .clone()
        .into_example(choice.map(|c| c.text.clone()).unwrap_or_default());
    example.teacher = Some(TeacherInfo {
        model: answering_model(completion, teacher).to_owned(),
        provider: teacher.provider.clone(),
        finish_reason: choice.and_then(|c| c.finish_reason.clone()),
        usage: completion.usage,
        latency_ms,
        created: completion.created,
    });
    if params.top_logprobs > 0 {
        example.logprobs = choice.and_then(|c| c.logprobs.clone());
    }
    example
}

/// The model the provider says answered, else the one the teacher asked for.
fn answering_model<'a>(completion: &'a Completion, teacher: &'a TeacherId) -> &'a str {
    if completion.model.is_empty() {
        &teacher.model
    } else {
        &completion.model
    }
}

/// The cost of the completion's usage at `factor` times list price: the answering model's
/// price, else the configured model's; `None` without usage or a price.
pub(crate) fn cost(
    prices: &PriceTable,
    completion: &Completion,
    teacher: &TeacherId,
    factor: f64,
) -> Option<f64> {
    let usage = completion.usage.as_ref()?;
    prices
        .cost(answering_model(completion, teacher), usage, factor)
        .or_else(|| prices.cost(&teacher.model, usage, factor))
}

/// What became of an example handed to the writer: `Ok(None)` when it was written,
/// `Ok(Some(reason))` when it breaks a rule of the format (say a non-finite logprob), so
/// that its prompt fails and the run goes on, and `Err` when the dataset cannot be written.
pub(crate) fn refusal(written: distill_data::Result<()>) -> crate::Result<Option<String>> {
    match written {
        Ok(()) => Ok(None),
        Err(distill_data::Error::InvalidExample { reason, .. }) => {
            Ok(Some(format!("invalid example: {reason}")))
        }
        Err(other) => Err(other.into()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use distill_data::{FinishReason, Usage};

    use super::*;
    use crate::pricing::Price;
    use crate::teacher::Choice;

    fn completion(model: &str) -> Completion {
        Completion {
            choices: vec![Choice {
                text: "an answer".into(),
                finish_reason: Some(FinishReason::Stop),
                logprobs: Some(vec![]),
                content_filter_results: Some(serde_json::json!({"hate": {"filtered": false}})),
            }],
            usage: Some(Usage {
                prompt_tokens: 1_000_000,
                completion_tokens: 0,
            }),
            latency: Duration::from_millis(42),
            model: model.into(),
            created: Some(7),
            prompt_filter_results: None,
        }
    }

    fn teacher() -> TeacherId {
        TeacherId {
            provider: "openai".into(),
            model: "asked".into(),
        }
    }

    #[test]
    fn live_and_batch_examples_differ_only_in_what_each_knows() {
        let prompt = Prompt::from_text(None, "q");
        let params = GenerationParams::default();
        let live = live_example(&prompt, &completion(""), &teacher(), &params);
        let t = live.teacher.as_ref().unwrap();
        assert_eq!((t.model.as_str(), t.latency_ms), ("asked", Some(42)));
        assert_eq!(live.response, "an answer");
        assert!(live.logprobs.is_none(), "logprobs are kept only when asked for");
        assert!(live.metadata.contains_key("content_filter"));
        let batch = batch_example(&prompt, &completion("answered"), &teacher(), &params);
        let t = batch.teacher.as_ref().unwrap();
        assert_eq!((t.model.as_str(), t.latency_ms), ("answered", None));
        assert_eq!(batch.metadata["batch"], true);
        assert!(!batch.metadata.contains_key("content_filter"));
    }

    #[test]
    fn cost_falls_back_to_the_configured_model() {
        let mut prices = PriceTable::empty();
        let price = Price {
            input_per_mtok: 2.0,
            output_per_mtok: 0.0,
        };
        prices.insert("asked", price);
        assert_eq!(cost(&prices, &completion("unknown"), &teacher(), 0.5), Some(1.0));
        prices.insert(
            "answered",
            Price {
                input_per_mtok: 4.0,
                ..price
            },
        );
        assert_eq!(cost(&prices, &completion("answered"), &teacher(), 1.0), Some(4.0));
        let mut no_usage = completion("answered");
        no_usage.usage = None;
        assert_eq!(cost(&prices, &no_usage, &teacher(), 1.0), None);
    }
}
