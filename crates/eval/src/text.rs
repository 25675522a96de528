//! Python string semantics that the reference implementations rely on.
//!
//! sacrebleu and rouge-score run on Python `str`, so "whitespace" means
//! `str.isspace()` (which, unlike Rust's `char::is_whitespace`, includes the
//! information separators U+001C..U+001F) and "lowercase" means `str.lower()`
//! (full Unicode mappings, as Rust's `to_lowercase`).

/// Whether Python's `str.isspace()` is true for `c` (checked against CPython 3.11
/// over every code point by the parity fixtures).
#[inline]
pub fn is_python_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\u{1c}'..='\u{20}'
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Python's `str.split()` with no arguments: runs of whitespace separate tokens,
/// and there are no empty tokens.
pub fn python_split(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_python_space).filter(|t| !t.is_empty())
}

/// Calls `f` with each token of Python's `str.split()`, scanning bytes and
/// decoding only non-ASCII characters (the fast path of [`python_split`]).
#[inline]
pub fn for_each_python_token<'a>(s: &'a str, mut f: impl FnMut(&'a str)) {
    let bytes = s.as_bytes();
    let mut start = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let (space, width) = if b < 0x80 {
            (matches!(b, b'\t'..=b'\r' | 0x1c..=0x20), 1)
        } else if b >= 0xc0 {
            // `i` is a character boundary: decode this one character.
            let c = s[i..].chars().next().unwrap_or('\0');
            (is_python_space(c), c.len_utf8())
        } else {
            (false, 1)
        };
        if space {
            if let Some(st) = start.take() {
                f(&s[st..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
        i += width;
    }
    if let Some(st) = start {
        f(&s[st..]);
    }
}

/// Python's `str.rstrip()` with no arguments.
pub fn python_rstrip(s: &str) -> &str {
    s.trim_end_matches(is_python_space)
}

/// Python's `str.lower()`.
pub fn python_lower(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_matches_python_on_separators() {
        let s = "a\u{1c}b\u{a0}c\u{3000}d  \t e\u{200b}f";
        let tokens: Vec<&str> = python_split(s).collect();
        // U+200B (zero width space) is not whitespace in Python.
        assert_eq!(tokens, ["a", "b", "c", "d", "e\u{200b}f"]);
    }

    #[test]
    fn fast_split_agrees() {
        for s in [
            "",
            " ",
            "a",
            " a  b\u{3000}c\u{85}",
            "é\u{a0}ü x\u{1c}",
            "\u{2028}end",
        ] {
            let mut fast = Vec::new();
            for_each_python_token(s, |t| fast.push(t));
            assert_eq!(fast, python_split(s).collect::<Vec<_>>(), "{s:?}");
        }
    }

    #[test]
    fn rstrip_and_lower() {
        assert_eq!(python_rstrip("ab \u{85}\u{1f}"), "ab");
        assert_eq!(python_lower("ΟΔΟΣ İ"), "οδος i\u{307}");
    }
}
