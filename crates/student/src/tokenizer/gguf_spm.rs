//! Building a Gemma tokenizer (`tokenizer.ggml.model = llama`, SentencePiece-style) from GGUF
//! metadata.
//!
//! This mirrors transformers' GGUF converter for the Gemma architectures (`gemma_tokenizer` in
//! `integrations/gguf/gguf_tokenizer_mapping.py`, transformers 5.x), so that ids match
//! `AutoTokenizer.from_pretrained(dir, gguf_file=…)`:
//! 1. A token made only of whitespace and holding a space is respelled as that many `▁`.
//! 2. BPE merges are rebuilt from the vocabulary: every split of a token into two tokens is a
//!    merge, ranked by the merged token's position in the file (earlier first), then by the
//!    longer left part (transformers' `generate_merges` with scores `-position`).
//! 3. The model is BPE with byte fallback (`<0xNN>` tokens) and `<unk>`; spaces become `▁`
//!    before it (no dummy prefix); decoding reverses both.
//! 4. Added tokens: CONTROL (3) as special, USER_DEFINED (4) as plain (those still spelled as
//!    in the vocabulary after step 1), all matched before normalization.
//!
//! llama.cpp tokenizes the same file by SentencePiece's score-ordered merging, which gives the
//! same ids except for runs of more than 31 spaces (where it takes the longest space token
//! first). We follow transformers because saved checkpoints are checked there.

use std::collections::HashMap;

use distill_gguf::GgufFile;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{DecoderWrapper, SplitDelimiterBehavior};

use super::gguf::{GgufVocab, add_typed_tokens, finish};
use super::{Error, Result, Tokenizer};

/// `general.architecture` values whose `llama`-model vocabularies are built here.
pub(super) const GEMMA_ARCHITECTURES: [&str; 3] = ["gemma", "gemma2", "gemma3"];

/// SentencePiece's visible space.
const SPACE: &str = "\u{2581}";

/// Gemma's turn format (as in the instruction-tuned Gemma 3 models), for a file without its own
/// template: a base model's vocabulary lacks ChatML's markers but has these turn tokens. A
/// system message opens the first user turn, as in Gemma's own template.
pub const GEMMA_TEMPLATE: &str = "{{ bos_token }}\
{%- if messages and messages[0]['role'] == 'system' -%}\
{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\
{%- set loop_messages = messages[1:] -%}\
{%- else -%}\
{%- set first_user_prefix = '' -%}\
{%- set loop_messages = messages -%}\
{%- endif -%}\
{%- for message in loop_messages -%}\
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}\
{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') + (message['content'] | trim) + '<end_of_turn>\n' }}\
{%- endfor -%}\
{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}";

/// The tokenizer of a Gemma GGUF, from its vocabulary arrays.
pub(super) fn from_gguf(gguf: &GgufFile, vocab: GgufVocab<'_>) -> Result<Tokenizer> {
    let respelled: Vec<String> = vocab.tokens.iter().map(|t| respell(t)).collect();
    // A token's id is its position; a later duplicate overwrites an earlier one, as in Python.
    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(respelled.len());
    for (id, token) in respelled.iter().enumerate() {
        ids.insert(token, id as u32);
    }
    let unk = "<unk>";
    if !ids.contains_key(unk) {
        return Err(Error::SpecialTokenNotInVocab(unk.into()));
    }
    let merges = merges_by_position(&respelled, &ids);
    let bpe = BPE::builder()
        .vocab_and_merges(
            ids.iter()
                .map(|(k, v)| ((*k).to_owned(), *v))
                .collect::<tokenizers::models::bpe::Vocab>(),
            merges,
        )
        .unk_token(unk.into())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(Error::Tokenizers)?;

    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner
        .with_normalizer(Some(Replace::new(" ", SPACE).map_err(Error::Tokenizers)?))
        .map_err(Error::Tokenizers)?;
    let split = Split::new(
        SplitPattern::String(" ".into()),
        SplitDelimiterBehavior::MergedWithPrevious,
        false,
    )
    .map_err(Error::Tokenizers)?;
    inner.with_pre_tokenizer(Some(split));
    let decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPACE, " ").map_err(Error::Tokenizers)?.into(),
        ByteFallback::default().into(),
        Fuse::default().into(),
    ];
    inner.with_decoder(Some(DecoderSequence::new(decoders)));

    add_typed_tokens(&mut inner, &vocab, |_| true, |t| ids.contains_key(t))?;
    finish(
        gguf,
        &vocab.tokens,
        inner,
        Some(GEMMA_TEMPLATE),
        &["<end_of_turn>"],
    )
}

/// A whitespace-only token holding a space, as that many `▁` (transformers' respelling).
fn respell(token: &str) -> String {
    if token.contains(' ') && token.chars().all(char::is_whitespace) {
        SPACE.repeat(token.chars().count())
    } else {
        token.to_owned()
    }
}

/// Every split of a token into two tokens, ranked by the token's position (earlier first), then
/// by the longer left part: transformers' `generate_merges` with `-position` as the score.
fn merges_by_position(tokens: &[String], ids: &HashMap<&str, u32>) -> Vec<(String, String)> {
    let mut merges = Vec::new();
    for (position, token) in tokens.iter().enumerate() {
        // A duplicate's merges are ranked once, at the position its id (the last) names.
        if ids.get(token.as_str()) != Some(&(position as u32)) {
            continue;
        }
        let cuts: Vec<usize> = token.char_indices().map(|(i, _)| i).skip(1).collect();
        for &cut in cuts.iter().rev() {
            let (left, right) = token.split_at(cut);
            if ids.contains_key(left) && ids.contains_key(right) {
                merges.push((left.to_owned(), right.to_owned()));
            }
        }
    }
    merges
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_runs_are_respelled_and_others_kept() {
        assert_eq!(respell("   "), "▁▁▁");
        assert_eq!(respell(" \t"), "▁▁");
        assert_eq!(respell("\n\n"), "\n\n");
        assert_eq!(respell(" a"), " a");
        assert_eq!(respell("▁the"), "▁the");
    }

    #[test]
    fn merges_follow_the_merged_tokens_positions_then_longer_left_parts() {
        let tokens: Vec<String> = ["a", "b", "c", "ab", "abc", "bc", "c"].map(String::from).to_vec();
        let mut ids = HashMap::new();
        for (i, t) in tokens.iter().enumerate() {
            ids.insert(t.as_str(), i as u32);
        }
        let merges = merges_by_position(&tokens, &ids);
        let pairs: Vec<(&str, &str)> = merges.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        // "abc" splits as ab|c before a|bc; the duplicate "c" (position 6) adds no merges.
        assert_eq!(pairs, [("a", "b"), ("ab", "c"), ("a", "bc"), ("b", "c")]);
    }
}
