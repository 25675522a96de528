//! The bytes a token stands for, whatever alphabet its vocabulary writes them in: what aligning
//! two tokenizers on the same text needs.
//!
//! - Byte-level BPE (GPT-2, Llama 3, SmolLM2) writes every byte as one printable character
//!   (GPT-2's `bytes_to_unicode`).
//! - SentencePiece-style vocabularies (Gemma, Llama 2) write text as text with spaces as `▁`,
//!   and bytes with no token of their own as `<0xNN>` (byte fallback).

use std::sync::OnceLock;

use super::gguf::byte_alphabet;

/// SentencePiece's visible space.
const SPACE: char = '\u{2581}';

/// How a vocabulary spells bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spelling {
    /// GPT-2's byte alphabet.
    ByteLevel,
    /// Text with `▁` for spaces, and `<0xNN>` byte tokens.
    SentencePiece,
    /// Neither: tokens' bytes are not known.
    Unknown,
}

impl Spelling {
    /// The spelling a tokenizer's decoder undoes: a `ByteLevel` decoder means byte-level BPE, a
    /// `ByteFallback` one SentencePiece-style pieces.
    pub(super) fn of(inner: &tokenizers::Tokenizer) -> Self {
        let Some(decoder) = inner.get_decoder() else {
            return Spelling::Unknown;
        };
        let described = serde_json::to_string(decoder).unwrap_or_default();
        if described.contains(r#""type":"ByteLevel""#) {
            Spelling::ByteLevel
        } else if described.contains(r#""type":"ByteFallback""#) {
            Spelling::SentencePiece
        } else {
            Spelling::Unknown
        }
    }

    /// The bytes `token` (as the vocabulary spells it) stands for.
    pub(super) fn bytes(self, token: &str) -> Option<Vec<u8>> {
        match self {
            Spelling::ByteLevel => {
                let table = byte_table();
                token
                    .chars()
                    .map(|c| table.iter().position(|&t| t == c).map(|b| b as u8))
                    .collect()
            }
            Spelling::SentencePiece => Some(match byte_token(token) {
                Some(byte) => vec![byte],
                None => token.replace(SPACE, " ").into_bytes(),
            }),
            Spelling::Unknown => None,
        }
    }

    /// How the vocabulary would spell `bytes` as one token: candidates to look up, best first.
    pub(super) fn spellings(self, bytes: &[u8]) -> Vec<String> {
        match self {
            Spelling::ByteLevel => {
                let table = byte_table();
                vec![bytes.iter().map(|&b| table[usize::from(b)]).collect()]
            }
            Spelling::SentencePiece => {
                let mut out = Vec::with_capacity(2);
                // Text that reads like a byte token ("<0x41>") is not that byte.
                if let Ok(text) = std::str::from_utf8(bytes)
                    && byte_token(text).is_none()
                {
                    out.push(text.replace(' ', &SPACE.to_string()));
                }
                if let [byte] = bytes {
                    out.push(format!("<0x{byte:02X}>"));
                }
                out
            }
            Spelling::Unknown => Vec::new(),
        }
    }
}

/// GPT-2's byte alphabet, built once.
fn byte_table() -> &'static [char; 256] {
    static TABLE: OnceLock<[char; 256]> = OnceLock::new();
    TABLE.get_or_init(byte_alphabet)
}

/// The byte of a `<0xNN>` token.
fn byte_token(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2)
        .then(|| u8::from_str_radix(hex, 16).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_tokens_spell_their_bytes_both_ways() {
        let s = Spelling::ByteLevel;
        assert_eq!(s.bytes("Ġthe").unwrap(), b" the");
        assert_eq!(s.bytes("Ċ").unwrap(), b"\n");
        assert_eq!(s.spellings(b" the"), ["Ġthe"]);
        // "é" is two bytes, each a character of the alphabet.
        assert_eq!(s.bytes(&s.spellings("é".as_bytes())[0]).unwrap(), "é".as_bytes());
    }

    #[test]
    fn sentencepiece_pieces_spell_spaces_and_fallback_bytes() {
        let s = Spelling::SentencePiece;
        assert_eq!(s.bytes("▁the").unwrap(), b" the");
        assert_eq!(s.bytes("é").unwrap(), "é".as_bytes());
        assert_eq!(s.bytes("<0xC2>").unwrap(), [0xC2]);
        assert_eq!(s.spellings(b" the"), ["▁the"]);
        assert_eq!(s.spellings(&[0xC2]), ["<0xC2>"]);
        assert_eq!(s.spellings(b"a"), ["a", "<0x61>"]);
        assert!(
            s.spellings(b"<0x41>").is_empty(),
            "six bytes of text, not the byte 0x41"
        );
    }
}
