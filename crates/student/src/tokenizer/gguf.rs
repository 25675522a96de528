//! Building a byte-level BPE tokenizer from GGUF metadata.
//!
//! This mirrors transformers' GGUF converter (`integrations/gguf/gguf_tokenizer_mapping.py`,
//! transformers 5.x) for `tokenizer.ggml.model = gpt2`, so that ids match
//! `AutoTokenizer.from_pretrained(dir, gguf_file=…)`:
//! 1. Tokens written entirely in GPT-2's byte alphabet are kept; any other token is respelled
//!    byte by byte in that alphabet. A token's id is its position (a later duplicate wins).
//! 2. `tokenizer.ggml.merges` become BPE merges (`"a b"` → `(a, b)`).
//! 3. The pre-tokenizer is GPT-2's `ByteLevel`, unless `tokenizer.ggml.pre` names one of the
//!    split regexes transformers knows (llama3, qwen2, gpt-4o, …): then `Split(regex, isolated)`
//!    followed by a `ByteLevel` without its own regex.
//! 4. Added tokens, in transformers' order: `<|endoftext|>` as a special token (a side effect of
//!    building through `GPT2Tokenizer`, whose default special token it is; it takes a new id when
//!    the vocabulary lacks it); tokens typed CONTROL (3) as special tokens (unless spelled outside
//!    the byte alphabet: llama.cpp mislabels); USER_DEFINED (4) as plain added tokens; then the
//!    bos/eos/unk/pad tokens as special tokens.
//! 5. The post-processor adds bos/eos per `tokenizer.ggml.add_bos_token`/`add_eos_token`.
//!
//! llama.cpp's own pre-tokenizer for some `pre` values (`smollm`, `starcoder`, …) also isolates
//! each digit first; transformers does not. For vocabularies without multi-digit merges (SmolLM2)
//! both give the same ids; we follow transformers because saved checkpoints are checked there.
//!
//! Unlike transformers, a file without `tokenizer.ggml.merges` is refused (llama.cpp refuses it
//! too), and mismatched array lengths are errors rather than silently truncated.

use std::collections::HashMap;

use distill_gguf::{GgufFile, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use super::chat::ChatTemplate;
use super::{Error, Result, SpecialTokens, Tokenizer};

/// `GPT2Tokenizer`'s default unk, bos and eos token.
const GPT2_DEFAULT_SPECIAL: &str = "<|endoftext|>";

/// `llama_token_type` values that matter here.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

const LLAMA3_SPLIT: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const TEKKEN_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*",
    r"|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const GPT4O_SPLIT: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const QWEN2_SPLIT: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);
const QWEN35_SPLIT: &str = concat!(
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}",
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
);

/// transformers' `GGUF_PRE_TOKENIZER_SPLITS`: the `tokenizer.ggml.pre` values with their own regex.
fn split_regex(pre: &str) -> Option<&'static str> {
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0" | "lfm2"
        | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3_SPLIT,
        "tekken" => TEKKEN_SPLIT,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2_SPLIT,
        "qwen35" => QWEN35_SPLIT,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O_SPLIT,
        _ => return None,
    })
}

/// The `tokenizer.ggml.pre` value whose split regex is `pattern` (`gpt2`, GPT-2's own
/// byte-level split, when there is no pattern or it is not a known one). For GGUF export.
pub(crate) fn pre_for_split(pattern: Option<&str>) -> &'static str {
    let known = ["llama3", "tekken", "qwen2", "qwen35", "gpt-4o"];
    pattern
        .and_then(|p| known.into_iter().find(|&name| split_regex(name) == Some(p)))
        .unwrap_or("gpt-2")
}

/// GPT-2's reversible byte → printable character map (`bytes_to_unicode`).
pub(crate) fn byte_alphabet() -> [char; 256] {
    let mut map = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            u32::from(b)
        } else {
            extra += 1;
            255 + extra
        };
        // Every code is below 0x200, so it is a valid scalar value.
        map[usize::from(b)] = char::from_u32(code).unwrap_or('\0');
    }
    map
}

/// The metadata transformers reads, checked for type and consistency.
pub(super) struct GgufVocab<'a> {
    pub(super) tokens: Vec<&'a str>,
    pub(super) token_types: Option<Vec<i64>>,
    merges: Vec<&'a str>,
    pre: Option<&'a str>,
}

pub(super) fn from_gguf(gguf: &GgufFile) -> Result<Tokenizer> {
    let bad = |key: &str, reason: String| Error::GgufMetadata {
        path: gguf.path.clone(),
        key: key.to_owned(),
        reason,
    };

    let model = opt_str(gguf, "tokenizer.ggml.model")?
        .ok_or_else(|| bad("tokenizer.ggml.model", "missing".into()))?;
    let architecture = opt_str(gguf, "general.architecture")?.unwrap_or("");
    if model == "llama" && super::gguf_spm::GEMMA_ARCHITECTURES.contains(&architecture) {
        return super::gguf_spm::from_gguf(gguf, read_vocab(gguf, false)?);
    }
    if model != "gpt2" {
        return Err(Error::UnsupportedModel {
            path: gguf.path.clone(),
            model: model.to_owned(),
        });
    }
    let vocab = read_vocab(gguf, true)?;
    let alphabet = byte_alphabet();
    let in_alphabet = |token: &str| token.chars().all(|c| alphabet.contains(&c));

    // A token's id is its position; a later duplicate overwrites an earlier one, as in Python.
    let mut ids: HashMap<String, u32> = HashMap::with_capacity(vocab.tokens.len());
    for (id, token) in vocab.tokens.iter().enumerate() {
        let spelled = if in_alphabet(token) {
            (*token).to_owned()
        } else {
            token.bytes().map(|b| alphabet[usize::from(b)]).collect()
        };
        ids.insert(spelled, id as u32);
    }

    let merges = parse_merges(gguf, &vocab.merges, &ids)?;
    let bpe = BPE::builder()
        .vocab_and_merges(
            ids.iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect::<tokenizers::models::bpe::Vocab>(),
            merges,
        )
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .build()
        .map_err(Error::Tokenizers)?;

    let mut inner = tokenizers::Tokenizer::new(bpe);
    let pre_tokenizer: PreTokenizerWrapper = match vocab.pre.and_then(split_regex) {
        None => ByteLevel::new(false, true, true).into(),
        Some(regex) => {
            let split = Split::new(
                SplitPattern::Regex(regex.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(Error::Tokenizers)?;
            Sequence::new(vec![split.into(), ByteLevel::new(false, true, false).into()]).into()
        }
    };
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    // transformers builds the backend through `GPT2Tokenizer`, whose default unk/bos/eos token
    // `<|endoftext|>` gets added on the way, with a new id when the vocabulary lacks it.
    inner
        .add_tokens([AddedToken::from(GPT2_DEFAULT_SPECIAL, true).normalized(false)])
        .map_err(Error::Tokenizers)?;

    // llama.cpp mislabels some tokens spelled outside the byte alphabet as CONTROL.
    add_typed_tokens(&mut inner, &vocab, |t| in_alphabet(t), |t| ids.contains_key(t))?;

    finish(gguf, &vocab.tokens, inner, None, &[])
}

/// Adds the vocabulary's typed tokens, as transformers does: CONTROL (3) as special tokens
/// where `keep_control` holds, then USER_DEFINED (4) as plain ones where `keep_user` holds; all
/// matched before normalization.
pub(super) fn add_typed_tokens(
    inner: &mut tokenizers::Tokenizer,
    vocab: &GgufVocab<'_>,
    keep_control: impl Fn(&str) -> bool,
    keep_user: impl Fn(&str) -> bool,
) -> Result<()> {
    let Some(types) = &vocab.token_types else {
        return Ok(());
    };
    let typed = |kind: i64, special: bool, keep: &dyn Fn(&str) -> bool| -> Vec<AddedToken> {
        vocab
            .tokens
            .iter()
            .zip(types)
            .filter(|&(token, &t)| t == kind && keep(token))
            .map(|(token, _)| AddedToken::from((*token).to_owned(), special).normalized(false))
            .collect()
    };
    inner
        .add_special_tokens(typed(TOKEN_TYPE_CONTROL, true, &keep_control))
        .map_err(Error::Tokenizers)?;
    inner
        .add_tokens(typed(TOKEN_TYPE_USER_DEFINED, false, &keep_user))
        .map_err(Error::Tokenizers)?;
    Ok(())
}

/// What every GGUF tokenizer ends with: the named special tokens (added after the typed
/// ones, as transformers does), the post-processor, the end-of-sequence ids and the chat
/// template (the file's, else `fallback_template`); the tokens `end_of_turn` end generation too.
pub(super) fn finish(
    gguf: &GgufFile,
    tokens: &[&str],
    mut inner: tokenizers::Tokenizer,
    fallback_template: Option<&str>,
    end_of_turn: &[&str],
) -> Result<Tokenizer> {
    let bad = |key: &str, reason: String| Error::GgufMetadata {
        path: gguf.path.clone(),
        key: key.to_owned(),
        reason,
    };
    let token_at = |key: &str| -> Result<Option<String>> {
        let Some(value) = gguf.get(key) else {
            return Ok(None);
        };
        let id = value
            .as_u64()
            .ok_or_else(|| bad(key, format!("expected a token id, found {value:?}")))?;
        let token = usize::try_from(id).ok().and_then(|i| tokens.get(i));
        let token = token.ok_or_else(|| {
            bad(
                key,
                format!("id {id} is outside the vocabulary of {}", tokens.len()),
            )
        })?;
        Ok(Some((*token).to_owned()))
    };
    let special = SpecialTokens {
        bos: token_at("tokenizer.ggml.bos_token_id")?,
        eos: token_at("tokenizer.ggml.eos_token_id")?,
        unk: token_at("tokenizer.ggml.unknown_token_id")?,
        pad: token_at("tokenizer.ggml.padding_token_id")?,
    };
    // transformers adds the named special tokens after the typed ones.
    let named: Vec<AddedToken> = special
        .iter()
        .map(|(_, token)| AddedToken::from(token.to_owned(), true).normalized(false))
        .collect();
    inner.add_special_tokens(named).map_err(Error::Tokenizers)?;

    let add_bos = opt_bool(gguf, "tokenizer.ggml.add_bos_token")?.unwrap_or(false) && special.bos.is_some();
    let add_eos = opt_bool(gguf, "tokenizer.ggml.add_eos_token")?.unwrap_or(false) && special.eos.is_some();
    let processor = post_processor(&inner, &special, add_bos, add_eos)?;
    inner.with_post_processor(Some(processor));

    let mut eos_ids = Vec::new();
    for key in [
        "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.eot_token_id",
        "tokenizer.ggml.eom_token_id",
    ] {
        if let Some(token) = token_at(key)? {
            eos_ids.extend(inner.token_to_id(&token));
        }
    }
    eos_ids.extend(end_of_turn.iter().filter_map(|t| inner.token_to_id(t)));

    let chat_template = match opt_str(gguf, "tokenizer.chat_template")?.or(fallback_template) {
        Some(source) => Some(
            ChatTemplate::new(source)
                .map_err(|e| e.in_file(&gguf.path))?
                .with_special_tokens(special.clone()),
        ),
        None => None,
    };
    let model_max_length = match gguf.get("general.architecture").and_then(Value::as_str) {
        Some(arch) => gguf
            .get(&format!("{arch}.context_length"))
            .and_then(Value::as_u64),
        None => None,
    };
    Tokenizer::assemble(super::Parts {
        inner,
        special,
        add_bos,
        add_eos,
        eos_ids,
        chat_template,
        model_max_length,
        config_extra: serde_json::Map::new(),
    })
}

/// transformers' `update_post_processor`: `[bos] $A [eos]`, and for pairs `… [bos] $B [eos]`.
pub(super) fn post_processor(
    inner: &tokenizers::Tokenizer,
    special: &SpecialTokens,
    add_bos: bool,
    add_eos: bool,
) -> Result<TemplateProcessing> {
    let mut single = String::new();
    let mut pair_tail = String::new();
    let mut tokens = Vec::new();
    let mut with_id = |token: &str| -> Result<()> {
        let id = inner
            .token_to_id(token)
            .ok_or_else(|| Error::SpecialTokenNotInVocab(token.to_owned()))?;
        tokens.push((token.to_owned(), id));
        Ok(())
    };
    if let (true, Some(bos)) = (add_bos, &special.bos) {
        with_id(bos)?;
        single.push_str(&format!("{bos}:0 "));
        pair_tail.push_str(&format!(" {bos}:1"));
    }
    single.push_str("$A:0");
    pair_tail.push_str(" $B:1");
    if let (true, Some(eos)) = (add_eos, &special.eos) {
        with_id(eos)?;
        single.push_str(&format!(" {eos}:0"));
        pair_tail.push_str(&format!(" {eos}:1"));
    }
    let pair = format!("{single}{pair_tail}");
    TemplateProcessing::builder()
        .try_single(single.as_str())
        .and_then(|b| b.try_pair(pair.as_str()))
        .map_err(Error::PostProcessor)?
        .special_tokens(tokens)
        .build()
        .map_err(Error::PostProcessorBuild)
}

/// The vocabulary arrays; `tokenizer.ggml.merges` must be there when `with_merges`.
pub(super) fn read_vocab(gguf: &GgufFile, with_merges: bool) -> Result<GgufVocab<'_>> {
    let bad = |key: &str, reason: String| Error::GgufMetadata {
        path: gguf.path.clone(),
        key: key.to_owned(),
        reason,
    };
    let tokens = strings(gguf, "tokenizer.ggml.tokens")?
        .ok_or_else(|| bad("tokenizer.ggml.tokens", "missing".into()))?;
    if tokens.is_empty() || u32::try_from(tokens.len()).is_err() {
        return Err(bad(
            "tokenizer.ggml.tokens",
            format!("{} tokens is not a usable vocabulary", tokens.len()),
        ));
    }
    let token_types = match gguf.get("tokenizer.ggml.token_type") {
        None => None,
        Some(value) => {
            let key = "tokenizer.ggml.token_type";
            let items = value
                .as_array()
                .ok_or_else(|| bad(key, "expected an array".into()))?;
            if items.len() != tokens.len() {
                return Err(bad(
                    key,
                    format!("{} entries for {} tokens", items.len(), tokens.len()),
                ));
            }
            let types = items
                .iter()
                .map(|v| match v.as_f64() {
                    Some(x) if x.fract() == 0.0 => Ok(x as i64),
                    _ => Err(bad(key, format!("expected integers, found {v:?}"))),
                })
                .collect::<Result<Vec<i64>>>()?;
            Some(types)
        }
    };
    let merges = match strings(gguf, "tokenizer.ggml.merges")? {
        Some(merges) => merges,
        None if !with_merges => Vec::new(),
        None => {
            return Err(bad(
                "tokenizer.ggml.merges",
                "missing (a byte-level BPE vocabulary needs its merges)".into(),
            ));
        }
    };
    let pre = opt_str(gguf, "tokenizer.ggml.pre")?;
    Ok(GgufVocab {
        tokens,
        token_types,
        merges,
        pre,
    })
}

/// Splits `"a b"` merges and checks every piece, and every merged result, against the vocabulary.
///
/// `tokenizers`' own check indexes a buffer sized by the longest token before it looks up the
/// merged result, so a hostile merge whose result is missing could make it panic.
fn parse_merges(
    gguf: &GgufFile,
    merges: &[&str],
    ids: &HashMap<String, u32>,
) -> Result<Vec<(String, String)>> {
    let bad = |index: usize, reason: String| Error::GgufMetadata {
        path: gguf.path.clone(),
        key: "tokenizer.ggml.merges".into(),
        reason: format!("merge {index}: {reason}"),
    };
    merges
        .iter()
        .enumerate()
        .map(|(index, merge)| {
            let mut parts = merge.split(' ');
            let (Some(a), Some(b), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(bad(
                    index,
                    format!("{merge:?} is not two tokens separated by one space"),
                ));
            };
            for piece in [a, b, &format!("{a}{b}")] {
                if !ids.contains_key(piece) {
                    return Err(bad(index, format!("{piece:?} is not in the vocabulary")));
                }
            }
            Ok((a.to_owned(), b.to_owned()))
        })
        .collect()
}

pub(super) fn opt_str<'a>(gguf: &'a GgufFile, key: &str) -> Result<Option<&'a str>> {
    match gguf.get(key) {
        None => Ok(None),
        Some(value) => value.as_str().map(Some).ok_or_else(|| Error::GgufMetadata {
            path: gguf.path.clone(),
            key: key.to_owned(),
            reason: format!("expected a string, found {}", describe(value)),
        }),
    }
}

fn opt_bool(gguf: &GgufFile, key: &str) -> Result<Option<bool>> {
    match gguf.get(key) {
        None => Ok(None),
        Some(value) => value.as_bool().map(Some).ok_or_else(|| Error::GgufMetadata {
            path: gguf.path.clone(),
            key: key.to_owned(),
            reason: format!("expected a bool, found {}", describe(value)),
        }),
    }
}

fn strings<'a>(gguf: &'a GgufFile, key: &str) -> Result<Option<Vec<&'a str>>> {
    let Some(value) = gguf.get(key) else {
        return Ok(None);
    };
    let wrong = || Error::GgufMetadata {
        path: gguf.path.clone(),
        key: key.to_owned(),
        reason: format!("expected an array of strings, found {}", describe(value)),
    };
    let items = value.as_array().ok_or_else(wrong)?;
    items
        .iter()
        .map(|v| v.as_str().ok_or_else(wrong))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A short description of a value for error messages (never the whole of a large array).
fn describe(value: &Value) -> String {
    match value {
        Value::Array(items) => format!("an array of {} items", items.len()),
        Value::String(s) if s.len() > 40 => "a long string".into(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_matches_gpt2() {
        let map = byte_alphabet();
        assert_eq!(map[usize::from(b'!')], '!');
        assert_eq!(map[usize::from(b' ')], 'Ġ');
        assert_eq!(map[usize::from(b'\n')], 'Ċ');
        assert_eq!(map[0], 'Ā');
        assert_eq!(map[0xAD], 'Ń');
        let distinct: std::collections::HashSet<char> = map.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    #[test]
    fn every_split_regex_compiles() {
        for pre in ["llama3", "tekken", "qwen2", "qwen35", "gpt-4o"] {
            let regex = split_regex(pre).unwrap();
            Split::new(
                SplitPattern::Regex(regex.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .unwrap();
        }
        assert_eq!(split_regex("smollm"), None);
    }
}
