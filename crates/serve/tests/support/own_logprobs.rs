//! The model's own log-probabilities of its greedy answer, from one teacher-forced libtorch
//! forward: what the server's reported log-probabilities are checked against. Shared by
//! distill-serve's tests and the facade's `tests/serve.rs`.

use distill_student::tch::{Kind, Tensor};
use distill_student::tokenizer::Message;
use distill_student::{ForwardInput, KvCache, Pretrained, generate};

/// One answer token: its text, its log-probability, and the five most likely at its position.
pub struct OwnLogprob {
    pub token: String,
    pub logprob: f32,
    pub top5: Vec<f32>,
}

/// Per token of the greedy answer to `messages` (at most `max_tokens`, without the
/// end-of-sequence token), the model's own log-probabilities.
pub fn own_logprobs(model: &Pretrained, messages: &[Message], max_tokens: usize) -> Vec<OwnLogprob> {
    let text = model.tokenizer.render_chat(messages, true).unwrap();
    let ids: Vec<i64> = model
        .tokenizer
        .encode(&text, false)
        .unwrap()
        .into_iter()
        .map(i64::from)
        .collect();
    let config = model.generation_config(max_tokens);
    let answer = generate(
        &model.model.model,
        std::slice::from_ref(&ids),
        &config,
        &mut |_, _| {},
    )
    .unwrap()
    .remove(0);
    let all: Vec<i64> = ids.iter().chain(&answer).copied().collect();
    let _guard = distill_student::tch::no_grad_guard();
    let input = ForwardInput {
        input_ids: &Tensor::from_slice(&all[..all.len() - 1]).unsqueeze(0),
        attention_mask: None,
    };
    let mut cache = KvCache::new(model.model.model.layer_count());
    let logprobs = model
        .model
        .model
        .forward(&input, Some(&mut cache))
        .log_softmax(-1, Kind::Float)
        .squeeze_dim(0);
    answer
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let row = logprobs.get((ids.len() - 1 + i) as i64);
            let (top, _) = row.topk(5, -1, true, true);
            OwnLogprob {
                token: model.tokenizer.decode(&[t as u32], false).unwrap(),
                logprob: row.double_value(&[t]) as f32,
                top5: Vec::<f32>::try_from(top).unwrap(),
            }
        })
        .collect()
}
