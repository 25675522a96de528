//! Continuous batching: a sequence joins a running batch as soon as its prompt is prefilled,
//! and leaves it the step it finishes, while every step decodes all the sequences together.
//!
//! This is what a server needs: requests arrive while others decode. [`generate`] takes a
//! fixed set of prompts; a [`BatchDecoder`] takes them one at a time. Each prompt is prefilled
//! alone on libtorch (a real matrix product), and its cache is handed to the model's CPU
//! decoder, which keeps one cache per sequence without padding, so adding or dropping one
//! touches no other. Where the model has no CPU decoder (CUDA, a 16-bit GPT-2), each sequence
//! keeps a libtorch cache and a step runs them one after another: correct, not batched.
//!
//! [`generate`]: crate::generate()

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::generate::check_tokens;
use crate::model::{CausalLm, CpuDecoder, ForwardInput, KvCache, retain_rows};

/// Sequences decoding together, which can join and leave between steps.
pub struct BatchDecoder<'m> {
    model: &'m CausalLm,
    lanes: Lanes<'m>,
    /// The libtorch path's logits, `[sequences, vocab]`.
    logits: Vec<f32>,
    batch_invariant: bool,
}

impl std::fmt::Debug for BatchDecoder<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchDecoder")
            .field("sequences", &self.len())
            .field("batched", &self.is_batched())
            .finish_non_exhaustive()
    }
}

enum Lanes<'m> {
    /// No sequence yet, or none left: the next one decides.
    Empty,
    /// The model's CPU decoder: one step reads each weight once for every sequence.
    Cpu(Box<CpuDecoder<'m>>),
    /// A libtorch cache per sequence, stepped one after another.
    Torch(Vec<KvCache>),
}

impl<'m> BatchDecoder<'m> {
    /// An empty batch over `model`.
    pub fn new(model: &'m CausalLm) -> Self {
        Self {
            model,
            lanes: Lanes::Empty,
            logits: Vec::new(),
            batch_invariant: false,
        }
    }

    /// Decode each sequence exactly as it would be decoded alone, whatever shares its steps
    /// (see [`GenerationConfig::batch_invariant`]): a few percent slower on batches, more on a
    /// lone sequence.
    ///
    /// [`GenerationConfig::batch_invariant`]: crate::GenerationConfig::batch_invariant
    pub fn set_batch_invariant(&mut self, on: bool) {
        self.batch_invariant = on;
        if let Lanes::Cpu(decoder) = &mut self.lanes {
            decoder.set_batch_invariant(on);
        }
    }

    /// How many sequences are decoding.
    pub fn len(&self) -> usize {
        match &self.lanes {
            Lanes::Empty => 0,
            Lanes::Cpu(decoder) => decoder.count(),
            Lanes::Torch(caches) => caches.len(),
        }
    }

    /// Whether no sequence is decoding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether steps decode the sequences together (the CPU decoder) rather than one by one.
    pub fn is_batched(&self) -> bool {
        matches!(self.lanes, Lanes::Cpu(_))
    }

    /// The most positions a sequence may reach, where the model has learned positions.
    pub fn max_positions(&self) -> Option<usize> {
        self.model.max_positions()
    }

    /// Prefills `prompt` alone and adds it after the others, with room for `new_tokens` more
    /// tokens; returns the logits that follow the prompt (`vocab` floats).
    pub fn admit(&mut self, prompt: &[i64], new_tokens: usize) -> Result<Vec<f32>> {
        if prompt.is_empty() {
            return Err(Error::Input("a prompt has no tokens".into()));
        }
        check_tokens(prompt, self.model.vocab_size())?;
        if let Some(positions) = self.model.max_positions()
            && prompt.len() + new_tokens > positions + 1
        {
            return Err(Error::Input(format!(
                "{} prompt tokens and {new_tokens} new ones exceed the model's {positions} positions",
                prompt.len()
            )));
        }
        let mut cache = KvCache::new(self.model.layer_count());
        let logits = forward_last(self.model, prompt, &mut cache)?;
        match &mut self.lanes {
            Lanes::Empty => {
                self.lanes = match self.model.cpu_decoder(&cache, &[prompt.len()], new_tokens) {
                    Some(mut decoder) => {
                        decoder.set_batch_invariant(self.batch_invariant);
                        Lanes::Cpu(Box::new(decoder))
                    }
                    None => Lanes::Torch(vec![cache]),
                };
            }
            Lanes::Cpu(decoder) => {
                if !decoder.admit(&cache, prompt.len(), new_tokens) {
                    return Err(Error::Input(
                        "the prefilled cache does not fit the decoder".into(),
                    ));
                }
            }
            Lanes::Torch(caches) => caches.push(cache),
        }
        Ok(logits)
    }

    /// Appends `tokens[i]` to sequence `i` and returns the logits that follow each,
    /// `[sequences, vocab]` row after row.
    pub fn step(&mut self, tokens: &[i64]) -> Result<&[f32]> {
        if tokens.len() != self.len() {
            return Err(Error::Input(format!(
                "{} tokens for {} sequences",
                tokens.len(),
                self.len()
            )));
        }
        check_tokens(tokens, self.model.vocab_size())?;
        match &mut self.lanes {
            Lanes::Empty => Ok(&[]),
            Lanes::Cpu(decoder) => Ok(decoder.step(tokens)),
            Lanes::Torch(caches) => {
                self.logits.clear();
                for (cache, &token) in caches.iter_mut().zip(tokens) {
                    self.logits.extend(forward_last(self.model, &[token], cache)?);
                }
                Ok(&self.logits)
            }
        }
    }

    /// Keeps the sequences whose `keep` entry is true, in order; the others leave the batch.
    pub fn retain(&mut self, keep: &[bool]) {
        match &mut self.lanes {
            Lanes::Empty => {}
            Lanes::Cpu(decoder) => decoder.retain(keep),
            Lanes::Torch(caches) => retain_rows(caches, keep),
        }
        // An empty CPU decoder no longer knows its rows' widths: the next sequence makes a new one.
        if self.is_empty() && matches!(self.lanes, Lanes::Cpu(_)) {
            self.lanes = Lanes::Empty;
        }
    }
}

/// `ids` of one sequence through libtorch after what `cache` holds (which takes them in):
/// the logits that follow the last, as f32 on the CPU.
fn forward_last(model: &CausalLm, ids: &[i64], cache: &mut KvCache) -> Result<Vec<f32>> {
    let _guard = tch::no_grad_guard();
    let ids = Tensor::from_slice(ids).unsqueeze(0).to_device(model.device());
    let input = ForwardInput {
        input_ids: &ids,
        attention_mask: None,
    };
    let logits = model.forward_last(&input, Some(cache));
    Ok(Vec::<f32>::try_from(
        logits.to_kind(Kind::Float).to_device(Device::Cpu).flatten(0, -1),
    )?)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::checkpoint::LoadedModel;
    use crate::model::Precision;

    fn fixture(name: &str, precision: Precision) -> LoadedModel {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/model")
            .join(name);
        let mut model = LoadedModel::load(&dir, Device::Cpu).unwrap();
        model.prepare_for_generation(precision);
        model
    }

    /// Each sequence's greedy tokens, decoding `prompts` joined one step apart, against each
    /// decoded alone: joining and leaving must not change what a sequence decodes.
    fn staggered(
        model: &CausalLm,
        prompts: &[Vec<i64>],
        steps: usize,
        early: Option<usize>,
    ) -> Vec<Vec<i64>> {
        let argmax = |row: &[f32]| {
            row.iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |best, (i, &v)| if v > best.1 { (i, v) } else { best },
                )
                .0 as i64
        };
        let mut batch = BatchDecoder::new(model);
        batch.set_batch_invariant(true);
        let mut outputs: Vec<Vec<i64>> = vec![Vec::new(); prompts.len()];
        let mut members: Vec<usize> = Vec::new();
        let mut next = 0;
        while next < prompts.len() || !members.is_empty() {
            if next < prompts.len() {
                let logits = batch.admit(&prompts[next], steps).unwrap();
                outputs[next].push(argmax(&logits));
                members.push(next);
                next += 1;
            }
            let tokens: Vec<i64> = members.iter().map(|&m| *outputs[m].last().unwrap()).collect();
            let vocab = model.vocab_size() as usize;
            let logits = batch.step(&tokens).unwrap().to_vec();
            for (i, &m) in members.iter().enumerate() {
                outputs[m].push(argmax(&logits[i * vocab..(i + 1) * vocab]));
            }
            // A sequence leaves once it has `steps` tokens, the `early` one after two.
            let keep: Vec<bool> = members
                .iter()
                .map(|&m| outputs[m].len() < if Some(m) == early { 2 } else { steps })
                .collect();
            batch.retain(&keep);
            let mut flags = keep.iter();
            members.retain(|_| *flags.next().unwrap());
        }
        outputs
    }

    #[test]
    fn sequences_that_join_and_leave_decode_as_they_would_alone() {
        let prompts = vec![vec![5, 17, 42], vec![3, 9, 11, 2, 7], vec![70], vec![8, 8]];
        for (name, precision, batched) in [
            ("tiny_llama_gqa", Precision::F32, true),
            ("tiny_gpt2", Precision::F32, true),
            ("tiny_llama_gqa", Precision::Bf16, true),
            ("tiny_gpt2", Precision::Bf16, false),
        ] {
            let model = fixture(name, precision);
            let together = staggered(&model.model, &prompts, 6, Some(1));
            for (i, prompt) in prompts.iter().enumerate() {
                let alone = staggered(&model.model, std::slice::from_ref(prompt), 6, None);
                let n = together[i].len();
                assert_eq!(together[i], alone[0][..n], "{name} {precision:?}: prompt {i}");
            }
            let mut batch = BatchDecoder::new(&model.model);
            batch.admit(&prompts[0], 4).unwrap();
            assert_eq!(batch.is_batched(), batched, "{name} {precision:?}");
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        let model = fixture("tiny_llama_gqa", Precision::F32);
        let mut batch = BatchDecoder::new(&model.model);
        assert!(batch.admit(&[], 4).is_err());
        assert!(batch.admit(&[1_000_000], 4).is_err());
        assert!(
            batch.step(&[1]).is_err(),
            "a token for a sequence that is not there"
        );
        batch.admit(&[1, 2], 4).unwrap();
        assert!(batch.step(&[-1]).is_err());
        assert!(batch.step(&[1, 2]).is_err());
        assert_eq!(batch.step(&[3]).unwrap().len(), model.model.vocab_size() as usize);
        batch.retain(&[false]);
        assert!(batch.is_empty());
        batch.admit(&[4], 4).unwrap();
        assert_eq!(batch.len(), 1);
    }
}
