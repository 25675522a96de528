//! On-policy distillation and teachers with another vocabulary.
//!
//! GKD (Agarwal et al., 2024, "On-Policy Distillation of Language Models: Learning from
//! Self-Generated Mistakes"): in a share λ of the micro-batches the student answers the
//! prompts itself, sampling on the fast decoder, and learns the teacher's distributions on its
//! own answers, so that it is trained on the states it will meet when it generates. Those
//! batches have no hard labels: the answer is the student's own.
//!
//! A teacher model with the student's vocabulary scores such a batch online over the whole
//! vocabulary, as it scores dataset batches. A teacher with another vocabulary (Gemma teaching
//! a SmolLM2 student) cannot: it scores each answer as text, through its own chat template and
//! tokenizer, in one teacher-forced pass that keeps its top-k log-probabilities, and the
//! student aligns them with its own tokens on bytes ([`super::align`]), exactly as it does a
//! dataset from an API teacher. The dataset's answers are scored that way once, up front.

use std::collections::HashMap;
use std::path::Path;

use distill_data::prompts::SplitMix64;
use distill_data::{Example, Message};

use super::data::{Preparer, Sequence, SoftSource, TEACHER_VOCAB_HASH_KEY};
use super::error::{Error, Result};
use super::trainer::Trainer;
use crate::Pretrained;
use crate::generate::generate;
use crate::tokenizer::Message as ChatMessage;

/// How many alternatives a teacher with another vocabulary keeps at each position (the most
/// an OpenAI-compatible API gives).
pub const FOREIGN_TOP_K: usize = 20;

/// Replaces each example's logprobs with `teacher`'s scores of its answer (top
/// [`FOREIGN_TOP_K`]), and records the teacher's vocabulary, so the student aligns them.
pub(super) fn relabel(teacher: &Pretrained, examples: &mut [Example]) -> Result<()> {
    for example in examples {
        example.logprobs = Some(score(teacher, &example.messages, &example.response)?);
        example.metadata.insert(
            TEACHER_VOCAB_HASH_KEY.into(),
            teacher.tokenizer.vocab_hash().into(),
        );
    }
    Ok(())
}

/// [`relabel`] for a run's training and validation examples, kept in `cache` (JSONL): a run
/// that starts again, or resumes, reads the scores back instead of running the teacher over
/// the data again, and trains on exactly the same numbers. A cache made for other examples or
/// another teacher is replaced.
pub(super) fn relabel_cached(
    teacher: &Pretrained,
    train: &mut [Example],
    val: &mut [Example],
    cache: &Path,
) -> Result<()> {
    let hash = teacher.tokenizer.vocab_hash();
    let fits = |cached: &[Example]| {
        cached.len() == train.len() + val.len()
            && cached.iter().zip(train.iter().chain(val.iter())).all(|(c, e)| {
                c.id == e.id
                    && c.response == e.response
                    && c.logprobs.is_some()
                    && c.metadata.get(TEACHER_VOCAB_HASH_KEY).and_then(|v| v.as_str()) == Some(hash)
            })
    };
    if cache.exists()
        && let Ok(cached) = distill_data::read_file(cache)
        && fits(&cached)
    {
        tracing::info!(cache = %cache.display(), "reusing the teacher's scores of the answers");
        let mut cached = cached.into_iter();
        for example in train.iter_mut().chain(val.iter_mut()) {
            *example = cached.next().expect("as many as checked");
        }
        return Ok(());
    }
    tracing::info!(
        examples = train.len() + val.len(),
        "the teacher model has another vocabulary: scoring the answers with it"
    );
    relabel(teacher, train)?;
    relabel(teacher, val)?;
    let all = train.iter().chain(val.iter()).cloned().map(Ok);
    distill_data::ops::files::write_examples(cache, all, &Default::default())?;
    Ok(())
}

/// `teacher`'s log-probabilities of `answer` after `messages`, in its own tokens.
fn score(
    teacher: &Pretrained,
    messages: &[Message],
    answer: &str,
) -> Result<Vec<distill_data::TokenLogprob>> {
    let messages: Vec<ChatMessage> = messages.iter().map(ChatMessage::from).collect();
    let prompt = teacher.prompt_ids(&messages)?;
    let ids: Vec<i64> = (teacher
        .tokenizer
        .encode(answer, false)
        .map_err(crate::Error::from)?)
    .into_iter()
    .map(i64::from)
    .collect();
    Ok(teacher.score(&prompt, &ids, FOREIGN_TOP_K)?)
}

/// Whether micro-batch `micro` of step `step` is answered by the student (probability
/// `share`), drawn from the run's seed so that a resumed run draws the same.
pub(super) fn is_on_policy(seed: u64, step: u64, micro: usize, share: f64) -> bool {
    if share <= 0.0 {
        return false;
    }
    let mut rng = SplitMix64::new(
        seed ^ 0x6f6e_706f_6c69_6379 ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ micro as u64,
    );
    let draw = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    draw < share
}

impl Trainer {
    /// The training sequences `indices` with answers the student samples itself, trained on
    /// the teacher's view of them (soft labels only).
    pub(super) fn sample_answers(&self, indices: &[usize], sample_seed: u64) -> Result<Vec<Sequence>> {
        let prompts: Vec<Vec<i64>> = indices
            .iter()
            .map(|&i| self.train[i].input_ids[..=self.train[i].first_target].to_vec())
            .collect();
        let mut config = self
            .student
            .generation_config(self.config.on_policy_max_new_tokens);
        config.temperature = self.config.on_policy_temperature;
        // libtorch seeds are signed: keep 63 bits of a mixed seed, so that no two differ only
        // in the dropped bit.
        config.seed = (SplitMix64::new(sample_seed).next_u64() >> 1) as i64;
        let answers = generate(&self.student.model.model, &prompts, &config, &mut |_, _| {})?;
        let eos = config.stop_tokens.first().copied();
        let max_len = self.config.max_seq_len;
        let mut out = Vec::with_capacity(indices.len());
        let preparer = Preparer::new(&self.student.tokenizer, max_len, SoftSource::Dataset)?
            .with_spans(self.config.loss.kind.is_vocabulary_free());
        for ((&i, prompt), mut answer) in indices.iter().zip(&prompts).zip(answers) {
            let id = &self.train[i].id;
            let sequence = match &self.foreign_teacher {
                None => {
                    // A stopped answer learns to stop; a cut one ends on its last token.
                    if answer.len() < config.max_new_tokens {
                        answer.extend(eos);
                    }
                    Sequence::from_ids(id, prompt, &answer, max_len)
                }
                Some(teacher) => {
                    let ids: Vec<u32> = answer.iter().map(|&t| t as u32).collect();
                    let text = self
                        .student
                        .tokenizer
                        .decode(&ids, true)
                        .map_err(crate::Error::from)?;
                    let messages = self.prompts.get(id).ok_or_else(|| {
                        Error::Config(format!(
                            "example `{id}` has no prompt messages for the teacher to read"
                        ))
                    })?;
                    let mut example = Example::new(messages.clone(), text);
                    example.id.clone_from(id);
                    relabel(teacher, std::slice::from_mut(&mut example))?;
                    // One answer the two tokenizations cannot align must not end the run.
                    match preparer.sequence(&example, std::path::Path::new("on-policy samples")) {
                        Ok(sequence) => sequence,
                        Err(e) => {
                            tracing::warn!(id = %id, error = %e, "an on-policy answer could not be aligned; skipped");
                            None
                        }
                    }
                }
            };
            // With the student's vocabulary, an empty answer (it stopped at once) still learns
            // its stop from the teacher; a teacher with another scores answer tokens only.
            if let Some(sequence) = sequence {
                out.push(sequence);
            }
        }
        Ok(out)
    }
}

/// The prompt messages of each example, by id, for a teacher that reads them itself.
pub(super) fn prompts_by_id(examples: &[Example]) -> HashMap<String, Vec<Message>> {
    examples
        .iter()
        .map(|e| (e.id.clone(), e.messages.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_on_policy_share_is_drawn_per_micro_batch_and_repeatable() {
        let draws: Vec<bool> = (0..2000).map(|s| is_on_policy(7, s, 0, 0.3)).collect();
        let share = draws.iter().filter(|&&d| d).count() as f64 / draws.len() as f64;
        assert!((share - 0.3).abs() < 0.05, "{share}");
        assert_eq!(
            draws,
            (0..2000).map(|s| is_on_policy(7, s, 0, 0.3)).collect::<Vec<_>>()
        );
        assert!((0..100).all(|s| !is_on_policy(7, s, 0, 0.0)));
        assert!((0..100).all(|s| is_on_policy(7, s, 1, 1.0)));
    }
}
