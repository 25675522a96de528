//! sacrebleu's tokenizers: `13a` (the default, mteval-v13a), `intl` (mteval-v14
//! international), `char` and `none`.
//!
//! Each one is a port of the regular-expression substitutions in
//! `sacrebleu/tokenizers/tokenizer_*.py`. The substitutions have fixed-length
//! two-character patterns, so Python's left-to-right, non-overlapping `re.sub`
//! becomes one scan per rule that either consumes a matching pair or copies one
//! character.

use serde::{Deserialize, Serialize};

use super::intl_tables::{NUMBER, PUNCTUATION, SYMBOL};
use crate::text::{for_each_python_token, is_python_space, python_split};

/// A sacrebleu tokenizer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BleuTokenizer {
    /// No tokenization: split on whitespace only (`none`).
    #[serde(rename = "none")]
    None,
    /// mteval-v13a, the WMT standard and sacrebleu's default (`13a`).
    #[default]
    #[serde(rename = "13a")]
    Tok13a,
    /// mteval-v14 international: splits Unicode punctuation and symbols (`intl`).
    #[serde(rename = "intl")]
    Intl,
    /// Every character is a token (`char`).
    #[serde(rename = "char")]
    Char,
}

impl BleuTokenizer {
    /// The name sacrebleu uses in its signature and on its command line.
    pub fn signature(self) -> &'static str {
        match self {
            BleuTokenizer::None => "none",
            BleuTokenizer::Tok13a => "13a",
            BleuTokenizer::Intl => "intl",
            BleuTokenizer::Char => "char",
        }
    }

    /// Parses a sacrebleu tokenizer name (`13a`, `intl`, `char`, `none`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "none" => Some(BleuTokenizer::None),
            "13a" => Some(BleuTokenizer::Tok13a),
            "intl" => Some(BleuTokenizer::Intl),
            "char" => Some(BleuTokenizer::Char),
            _ => None,
        }
    }

    /// The string sacrebleu's tokenizer object returns for `line` (tokens joined
    /// by single spaces; `none` returns the line unchanged, `char` puts a space
    /// between every two characters).
    pub fn tokenize(self, line: &str) -> String {
        match self {
            BleuTokenizer::None => line.to_owned(),
            BleuTokenizer::Char => {
                let mut out = String::with_capacity(line.len() * 2);
                for (i, c) in line.chars().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push(c);
                }
                out
            }
            BleuTokenizer::Tok13a | BleuTokenizer::Intl => {
                let mut scratch = Scratch::default();
                let mut out = String::new();
                self.for_each_token(line, &mut scratch, |t| {
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(t);
                });
                out
            }
        }
    }

    /// Calls `f` with each token that sacrebleu's `line.split()` would see after
    /// tokenization, in order. `scratch` holds reusable buffers.
    pub(crate) fn for_each_token(self, line: &str, scratch: &mut Scratch, mut f: impl FnMut(&str)) {
        match self {
            BleuTokenizer::None => python_split(line).for_each(f),
            BleuTokenizer::Char => {
                let mut buf = [0u8; 4];
                for c in line.chars().filter(|&c| !is_python_space(c)) {
                    f(c.encode_utf8(&mut buf));
                }
            }
            BleuTokenizer::Tok13a => {
                tokenize_13a(line, scratch);
                // Only ASCII spaces were inserted, at character boundaries, so the
                // bytes are UTF-8; the lossy path is never taken.
                match std::str::from_utf8(&scratch.bytes_b) {
                    Ok(s) => for_each_python_token(s, f),
                    Err(_) => for_each_python_token(&String::from_utf8_lossy(&scratch.bytes_b), f),
                }
            }
            BleuTokenizer::Intl => {
                tokenize_intl(line, scratch);
                python_split(&scratch.a).for_each(f);
            }
        }
    }
}

/// Reusable buffers for the tokenizers; the result of a tokenization is in `a`.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    a: String,
    b: String,
    bytes_a: Vec<u8>,
    bytes_b: Vec<u8>,
}

/// One `re.sub` of a fixed two-character pattern `(first)(second)` over `input`.
#[inline]
fn pair_pass(
    input: &str,
    out: &mut String,
    first: impl Fn(char) -> bool,
    second: impl Fn(char) -> bool,
    emit: impl Fn(&mut String, char, char),
) {
    out.clear();
    let mut chars = input.chars().peekable();
    while let Some(c) = chars.next() {
        if first(c)
            && let Some(&d) = chars.peek()
            && second(d)
        {
            emit(out, c, d);
            chars.next();
            continue;
        }
        out.push(c);
    }
}

/// The first 13a rule's class `[\{-\~\[-\` -\&\(-\+\:-\@\/]`, as a byte table.
const IS_13A_SYMBOL: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 128 {
        let c = b as u8;
        t[b] = matches!(c, b'{'..=b'~' | b'['..=b'`' | b' '..=b'&' | b'('..=b'+' | b':'..=b'@' | b'/');
        b += 1;
    }
    t
};

#[inline]
fn is_period_or_comma_byte(b: u8) -> bool {
    b == b'.' || b == b','
}

/// `Tokenizer13a.__call__` followed by `TokenizerRegexp.__call__`, leaving the
/// result (before the final whitespace normalisation) in `scratch.bytes_b`.
///
/// Every pattern of 13a is ASCII, so the passes run on UTF-8 bytes: a pair
/// `(non-digit)(.)` can only start at the last byte of a multi-byte character,
/// and `(.)(non-digit)` consumes the first byte of one and copies the rest, which
/// yields the same string as matching whole characters.
fn tokenize_13a(line: &str, scratch: &mut Scratch) {
    // Language-independent part, in sacrebleu's order.
    let mut owned;
    let mut line = line;
    if line.contains("<skipped>") {
        owned = line.replace("<skipped>", "");
        line = &owned;
    }
    if line.contains('\n') {
        owned = line.replace("-\n", "").replace('\n', " ");
        line = &owned;
    }
    if line.contains('&') {
        owned = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
        line = &owned;
    }

    let (a, b) = (&mut scratch.bytes_a, &mut scratch.bytes_b);
    // Rule 1, on f" {line} ": pad the ASCII symbols with spaces. A space stays a
    // single space: later rules see a space on either side of a padded space
    // either way, and a space can neither start rule 3's pairs nor end rule 2's,
    // so the number of spaces in a run changes nothing but the final splitting.
    a.clear();
    a.reserve(line.len() * 2 + 2);
    a.push(b' ');
    let bytes = line.as_bytes();
    let mut run = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if IS_13A_SYMBOL[usize::from(c)] {
            a.extend_from_slice(&bytes[run..i]);
            if c == b' ' {
                a.push(b' ');
            } else {
                a.extend_from_slice(&[b' ', c, b' ']);
            }
            run = i + 1;
        }
    }
    a.extend_from_slice(&bytes[run..]);
    a.push(b' ');
    // Rule 2: `([^0-9])([\.,])` -> `\1 \2 `.
    pass_on_second(a, b, is_period_or_comma_byte, |c| !c.is_ascii_digit());
    // Rule 3: `([\.,])([^0-9])` -> ` \1 \2`.
    pass_on_first(b, a, is_period_or_comma_byte, |d| !d.is_ascii_digit());
    // Rule 4: `([0-9])(-)` -> `\1 \2 `.
    pass_on_second(a, b, |d| d == b'-', |c| c.is_ascii_digit());
}

/// `re.sub("(first)(second)", r"\1 \2 ")` where `second` is a set of rare bytes:
/// jump from one `second` byte to the next and test the byte before it. After a
/// match the scan resumes behind it, as Python's does.
#[inline]
fn pass_on_second(input: &[u8], out: &mut Vec<u8>, second: impl Fn(u8) -> bool, first: impl Fn(u8) -> bool) {
    out.clear();
    out.reserve(input.len() + input.len() / 2);
    let mut i = 0;
    while i < input.len() {
        let Some(off) = input
            .get(i + 1..)
            .and_then(|rest| rest.iter().position(|&d| second(d)))
        else {
            out.extend_from_slice(&input[i..]);
            return;
        };
        let j = i + 1 + off;
        out.extend_from_slice(&input[i..j - 1]);
        let c = input[j - 1];
        if first(c) {
            out.extend_from_slice(&[c, b' ', input[j], b' ']);
            i = j + 1;
        } else {
            out.push(c);
            i = j;
        }
    }
}

/// `re.sub("(first)(second)", r" \1 \2")` where `first` is a set of rare bytes.
#[inline]
fn pass_on_first(input: &[u8], out: &mut Vec<u8>, first: impl Fn(u8) -> bool, second: impl Fn(u8) -> bool) {
    out.clear();
    out.reserve(input.len() + input.len() / 2);
    let mut i = 0;
    while i < input.len() {
        let Some(off) = input[i..].iter().position(|&c| first(c)) else {
            out.extend_from_slice(&input[i..]);
            return;
        };
        let j = i + off;
        out.extend_from_slice(&input[i..j]);
        match input.get(j + 1) {
            Some(&d) if second(d) => {
                out.extend_from_slice(&[b' ', input[j], b' ', d]);
                i = j + 2;
            }
            _ => {
                out.push(input[j]);
                i = j + 1;
            }
        }
    }
}

fn in_table(table: &[(u32, u32)], c: char) -> bool {
    let c = c as u32;
    table
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

/// `\p{N}` as the Python `regex` module sees it.
fn is_number(c: char) -> bool {
    in_table(NUMBER, c)
}

/// `\p{P}` as the Python `regex` module sees it.
fn is_punctuation(c: char) -> bool {
    in_table(PUNCTUATION, c)
}

/// `\p{S}` as the Python `regex` module sees it.
fn is_symbol(c: char) -> bool {
    in_table(SYMBOL, c)
}

/// `TokenizerV14International.__call__`, leaving the result (before the final
/// whitespace normalisation) in `scratch.a`.
fn tokenize_intl(line: &str, scratch: &mut Scratch) {
    // `(\P{N})(\p{P})` -> `\1 \2 `.
    pair_pass(
        line,
        &mut scratch.b,
        |c| !is_number(c),
        is_punctuation,
        |o, c, d| {
            o.push(c);
            o.push(' ');
            o.push(d);
            o.push(' ');
        },
    );
    // `(\p{P})(\P{N})` -> ` \1 \2`.
    pair_pass(
        &scratch.b,
        &mut scratch.a,
        is_punctuation,
        |c| !is_number(c),
        |o, c, d| {
            o.push(' ');
            o.push(c);
            o.push(' ');
            o.push(d);
        },
    );
    // `(\p{S})` -> ` \1 `.
    let (a, b) = (&mut scratch.a, &mut scratch.b);
    b.clear();
    for c in a.chars() {
        if is_symbol(c) {
            b.push(' ');
            b.push(c);
            b.push(' ');
        } else {
            b.push(c);
        }
    }
    std::mem::swap(&mut scratch.a, &mut scratch.b);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirteen_a_examples() {
        let t = BleuTokenizer::Tok13a;
        assert_eq!(t.tokenize("Hello, world!"), "Hello , world !");
        assert_eq!(
            t.tokenize("It costs $1,000.50 (10%)."),
            "It costs $ 1,000.50 ( 10 % ) ."
        );
        assert_eq!(t.tokenize("pages 3-4, well-known"), "pages 3 - 4 , well-known");
        assert_eq!(t.tokenize("a &amp;lt; b"), "a < b");
        assert_eq!(t.tokenize("co-\noperate <skipped>now"), "cooperate now");
    }

    #[test]
    fn intl_examples() {
        let t = BleuTokenizer::Intl;
        assert_eq!(
            t.tokenize("«Bonjour», dit-il… 1,000.50€"),
            "« Bonjour » , dit - il … 1,000.50 €"
        );
    }

    #[test]
    fn char_and_none() {
        assert_eq!(BleuTokenizer::Char.tokenize("ab c"), "a b   c");
        assert_eq!(BleuTokenizer::None.tokenize(" a  b "), " a  b ");
    }
}
