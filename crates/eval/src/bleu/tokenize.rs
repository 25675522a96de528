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
use crate::text::{is_python_space, python_split};

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
                python_split(&scratch.a).for_each(f);
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

#[inline]
fn is_ascii_digit(c: char) -> bool {
    c.is_ascii_digit()
}

#[inline]
fn is_period_or_comma(c: char) -> bool {
    c == '.' || c == ','
}

/// The first 13a rule's class `[\{-\~\[-\` -\&\(-\+\:-\@\/]`.
#[inline]
fn is_13a_symbol(c: char) -> bool {
    matches!(c, '{'..='~' | '['..='`' | ' '..='&' | '('..='+' | ':'..='@' | '/')
}

/// `Tokenizer13a.__call__` followed by `TokenizerRegexp.__call__`, leaving the
/// result (before the final whitespace normalisation) in `scratch.a`.
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

    // Rule 1, on f" {line} ": pad the ASCII symbols with spaces.
    let a = &mut scratch.a;
    a.clear();
    a.reserve(line.len() * 2 + 2);
    a.push(' ');
    for c in line.chars() {
        if is_13a_symbol(c) {
            a.push(' ');
            a.push(c);
            a.push(' ');
        } else {
            a.push(c);
        }
    }
    a.push(' ');
    let b = &mut scratch.b;
    // Rule 2: `([^0-9])([\.,])` -> `\1 \2 `.
    pair_pass(
        a,
        b,
        |c| !is_ascii_digit(c),
        is_period_or_comma,
        |o, c, d| {
            o.push(c);
            o.push(' ');
            o.push(d);
            o.push(' ');
        },
    );
    // Rule 3: `([\.,])([^0-9])` -> ` \1 \2`.
    pair_pass(
        b,
        a,
        is_period_or_comma,
        |c| !is_ascii_digit(c),
        |o, c, d| {
            o.push(' ');
            o.push(c);
            o.push(' ');
            o.push(d);
        },
    );
    // Rule 4: `([0-9])(-)` -> `\1 \2 `.
    pair_pass(
        a,
        b,
        is_ascii_digit,
        |c| c == '-',
        |o, c, d| {
            o.push(c);
            o.push(' ');
            o.push(d);
            o.push(' ');
        },
    );
    std::mem::swap(&mut scratch.a, &mut scratch.b);
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
