//! Autoregressive generation with a KV cache: greedy, temperature, top-k and top-p sampling,
//! stop tokens, batches with left padding, and a streaming callback.

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::{CausalLm, ForwardInput, KvCache};

/// How to pick tokens and when to stop.
#[derive(Debug, Clone)]
pub struct GenerationConfig {
    /// Most tokens to add per sequence.
    pub max_new_tokens: usize,
    /// Sampling temperature; 0 means greedy.
    pub temperature: f64,
    /// Keep only the k most likely tokens (0 = off).
    pub top_k: i64,
    /// Keep the smallest set of tokens whose probability reaches p (1.0 = off).
    pub top_p: f64,
    /// Tokens that end a sequence (EOS and any others); they are not part of the output.
    pub stop_tokens: Vec<i64>,
    /// Padding id for left-padded batches.
    pub pad_token: i64,
    /// Seed for sampling.
    pub seed: i64,
    /// Decode each prompt exactly as it would be decoded alone, whatever shares its batch: on
    /// the CPU, prompts are prefilled one by one and a batch of one keeps the batched kernels,
    /// so a prompt's tokens do not depend on its batch-mates (a resumed generation repeats an
    /// uninterrupted one). Costs a few percent on batches and more on a lone sequence. Holds
    /// for greedy decoding on the CPU decoder (f32 weights); sampling draws from one generator
    /// for the whole batch, and libtorch's own path (other precisions, CUDA) makes no promise.
    pub batch_invariant: bool,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 128,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            stop_tokens: vec![],
            pad_token: 0,
            seed: 0,
            batch_invariant: false,
        }
    }
}

/// Generates a continuation of each prompt. `on_token(row, token)` is called for every new
/// token as soon as it is chosen. Returns the new tokens of each row, without stop tokens.
pub fn generate(
    model: &CausalLm,
    prompts: &[Vec<i64>],
    config: &GenerationConfig,
    on_token: &mut dyn FnMut(usize, i64),
) -> Result<Vec<Vec<i64>>> {
    let vocab = model.vocab_size();
    if prompts.is_empty() {
        return Ok(vec![]);
    }
    check_tokens(prompts.iter().flatten(), vocab)?;
    if prompts.iter().any(Vec::is_empty) {
        return Err(Error::Input("a prompt has no tokens".into()));
    }
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if let Some(positions) = model.max_positions().filter(|&p| width > p) {
        return Err(Error::Input(format!(
            "a prompt of {width} tokens is longer than the model's {positions} positions"
        )));
    }
    let _guard = tch::no_grad_guard();
    if config.temperature > 0.0 {
        tch::manual_seed(config.seed);
    }
    let device = model.device();
    let batch = prompts.len();
    let padded = batch > 1 && prompts.iter().any(|p| p.len() != width);

    let mut ids = Vec::with_capacity(batch * width);
    let mut mask = Vec::with_capacity(batch * width);
    for p in prompts {
        let pad = width - p.len();
        ids.extend(std::iter::repeat_n(config.pad_token, pad).chain(p.iter().copied()));
        mask.extend(std::iter::repeat_n(0i64, pad).chain(std::iter::repeat_n(1, p.len())));
    }
    let shape = [batch as i64, width as i64];
    let mut input = Tensor::from_slice(&ids).reshape(shape).to_device(device);
    let mut attention = padded.then(|| Tensor::from_slice(&mask).reshape(shape).to_device(device));
    let mut cache = KvCache::new(model.layer_count());
    let mut outputs = vec![Vec::new(); batch];
    let mut done = vec![false; batch];
    let mut decoder: Option<crate::model::CpuDecoder<'_>> = None;
    let mut last = Vec::new();
    let mut active: Vec<usize> = (0..batch).collect();
    let mut threads = None;

    for step in 0..new_token_limit(model, width, config.max_new_tokens) {
        let logits = match decoder.as_mut() {
            Some(decoder) => Tensor::from_slice(decoder.step(&last)).view([last.len() as i64, -1]),
            None if step == 0 && device == Device::Cpu && batch > 1 && config.batch_invariant => {
                let (logits, caches) = prefill_one_by_one(model, prompts, device);
                cache = KvCache::left_padded(caches);
                logits
            }
            None => {
                let forward = ForwardInput {
                    input_ids: &input,
                    attention_mask: attention.as_ref(),
                };
                model.forward_last(&forward, Some(&mut cache))
            }
        };
        let next = pick(&logits, config);
        // One token per row still decoding on the CPU decoder, else per row of the batch.
        let chosen = Vec::<i64>::try_from(&next)?;
        for (&row, &token) in active.iter().zip(&chosen) {
            if done[row] {
                continue;
            }
            if config.stop_tokens.contains(&token) {
                done[row] = true;
            } else {
                outputs[row].push(token);
                on_token(row, token);
            }
        }
        if done.iter().all(|&d| d) {
            break;
        }
        if step == 0 {
            // After the prefill, decoding continues on the model's own CPU decoder where it has
            // one (sized to libtorch's threads), else on libtorch. Libtorch's remaining ops get
            // one thread beside the decoder, and for a single sequence on libtorch too.
            let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
            decoder = model.cpu_decoder(&cache, &lens, config.max_new_tokens);
            if let Some(decoder) = decoder.as_mut() {
                decoder.set_batch_invariant(config.batch_invariant);
                // The decoder holds its own copy of the prompts' keys and values.
                cache = KvCache::new(model.layer_count());
            }
            if device == Device::Cpu && (decoder.is_some() || batch == 1) {
                threads = Some(SingleThreaded::enter());
            }
        }
        match decoder.as_mut() {
            Some(decoder) => {
                // Finished rows leave the decoder; libtorch keeps computing them.
                let keep: Vec<bool> = active.iter().map(|&row| !done[row]).collect();
                if keep.contains(&false) {
                    decoder.retain(&keep);
                }
                last = chosen
                    .iter()
                    .zip(&keep)
                    .filter(|(_, k)| **k)
                    .map(|(&t, _)| t)
                    .collect();
                active.retain(|&row| !done[row]);
            }
            None => {
                input = next.unsqueeze(1);
                attention = attention.map(|m| Tensor::cat(&[&m, &m.ones_like().narrow(1, 0, 1)], 1));
            }
        }
    }
    drop(threads);
    Ok(outputs)
}

/// An input error naming the first token outside `0..vocab`.
pub(crate) fn check_tokens<'a>(tokens: impl IntoIterator<Item = &'a i64>, vocab: i64) -> Result<()> {
    match tokens.into_iter().find(|&&t| t < 0 || t >= vocab) {
        Some(bad) => Err(Error::Input(format!(
            "token id {bad} is outside the vocabulary (0..{vocab})"
        ))),
        None => Ok(()),
    }
}

/// The prompts' prefills on the CPU, each alone (for [`GenerationConfig::batch_invariant`]):
/// the last-position logits `[batch, vocab]` and each prompt's cache. A padded batch's matrix
/// products may sum each row in an order that depends on the other rows and on the padding;
/// alone, a prompt's prefill is the same whichever prompts it is batched with. The cost is
/// small: prefill is a real matrix product even for one prompt.
fn prefill_one_by_one(model: &CausalLm, prompts: &[Vec<i64>], device: Device) -> (Tensor, Vec<KvCache>) {
    let mut caches = Vec::with_capacity(prompts.len());
    let logits: Vec<Tensor> = prompts
        .iter()
        .map(|prompt| {
            let ids = Tensor::from_slice(prompt).unsqueeze(0).to_device(device);
            let mut cache = KvCache::new(model.layer_count());
            let forward = ForwardInput {
                input_ids: &ids,
                attention_mask: None,
            };
            let last = model.forward_last(&forward, Some(&mut cache));
            caches.push(cache);
            last
        })
        .collect();
    (Tensor::cat(&logits, 0), caches)
}

/// How many tokens [`generate`] adds at most after a prompt of `prompt_len` tokens:
/// `max_new_tokens`, or fewer where the model's learned positions run out (the last token is
/// chosen from the last position and never fed back).
pub fn new_token_limit(model: &CausalLm, prompt_len: usize, max_new_tokens: usize) -> usize {
    match model.max_positions() {
        Some(positions) => max_new_tokens.min((positions + 1).saturating_sub(prompt_len)),
        None => max_new_tokens,
    }
}

/// Runs libtorch on one intra-op thread until dropped. Decoding one sequence is a chain of
/// small, memory-bound matrix-vector products: on libtorch, splitting each over OpenMP threads
/// costs more in barriers than it gains; beside the model's own decoder, libtorch's few
/// remaining ops per token (picking the token) would wake OpenMP threads that then spin on the
/// core the decoder's second thread needs (measured in docs/benchmarks.md). The prompt's
/// prefill, a real matrix product, keeps every thread.
struct SingleThreaded {
    previous: i32,
}

impl SingleThreaded {
    fn enter() -> Self {
        let previous = tch::get_num_threads();
        tch::set_num_threads(1);
        Self { previous }
    }
}

impl Drop for SingleThreaded {
    fn drop(&mut self) {
        tch::set_num_threads(self.previous);
    }
}

/// Picks the next token of each row from last-position logits `[batch, vocab]`.
fn pick(logits: &Tensor, config: &GenerationConfig) -> Tensor {
    if config.temperature <= 0.0 {
        return logits.argmax(-1, false);
    }
    let mut scores = logits.to_kind(Kind::Float) / config.temperature;
    if config.top_k > 0 && config.top_k < scores.size()[1] {
        let (top, _) = scores.topk(config.top_k, -1, true, true);
        let threshold = top.narrow(1, config.top_k - 1, 1);
        scores = scores.masked_fill(&scores.lt_tensor(&threshold), f64::NEG_INFINITY);
    }
    if config.top_p < 1.0 {
        let (sorted, order) = scores.sort(-1, true);
        let cumulative = sorted.softmax(-1, Kind::Float).cumsum(-1, Kind::Float);
        // Drop a token when the mass before it already reaches p; the first always stays.
        let before = &cumulative - sorted.softmax(-1, Kind::Float);
        let drop_sorted = before.ge(config.top_p);
        let drop = drop_sorted.scatter(1, &order, &drop_sorted);
        scores = scores.masked_fill(&drop, f64::NEG_INFINITY);
    }
    scores
        .softmax(-1, Kind::Float)
        .multinomial(1, false)
        .squeeze_dim(1)
}
