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
    fn rstrip_and_lower() {
        assert_eq!(python_rstrip("ab \u{85}\u{1f}"), "ab");
        assert_eq!(python_lower("ΟΔΟΣ İ"), "οδος i\u{307}");
    }
}
