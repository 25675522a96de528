//! Removing duplicate prompts, exactly or after normalisation.
//!
//! Duplicates are judged on the prompt messages (roles and contents), because the prompt is
//! what identifies an example: two answers to one prompt are one example too many. The first
//! copy is kept. Memory is 16 bytes per distinct prompt.

use std::collections::HashSet;

use sha2::{Digest, Sha256};

use crate::example::Example;

/// How prompts are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DedupMode {
    /// Byte-for-byte equal messages.
    #[default]
    Exact,
    /// Equal after [`normalize`]: case-folded, whitespace runs collapsed, trimmed.
    Normalized,
}

/// Lowercases, collapses every run of Unicode whitespace to one space, and trims. "What is
/// Rust?" and " what  is\nrust? " normalise to the same text.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.extend(word.chars().flat_map(char::to_lowercase));
    }
    out
}

/// A streaming de-duplicator: [`Deduper::keep`] says whether an example is the first of its
/// kind.
#[derive(Debug, Default)]
pub struct Deduper {
    mode: DedupMode,
    seen: HashSet<u128>,
    dropped: u64,
}

impl Deduper {
    /// A de-duplicator comparing prompts by `mode`.
    pub fn new(mode: DedupMode) -> Self {
        Deduper {
            mode,
            seen: HashSet::new(),
            dropped: 0,
        }
    }

    /// True the first time a prompt is seen, false for later copies.
    pub fn keep(&mut self, example: &Example) -> bool {
        let fresh = self.seen.insert(self.key(example));
        if !fresh {
            self.dropped += 1;
        }
        fresh
    }

    /// How many examples [`Self::keep`] has rejected.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn key(&self, example: &Example) -> u128 {
        let mut h = Sha256::new();
        for m in &example.messages {
            let content = match self.mode {
                DedupMode::Exact => std::borrow::Cow::Borrowed(m.content.as_str()),
                DedupMode::Normalized => std::borrow::Cow::Owned(normalize(&m.content)),
            };
            h.update(m.role.as_str().as_bytes());
            h.update([0u8]);
            h.update((content.len() as u64).to_le_bytes());
            h.update(content.as_bytes());
        }
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        u128::from_le_bytes(b)
    }
}

/// Keeps the first example of each prompt, in order.
pub fn dedup(examples: Vec<Example>, mode: DedupMode) -> (Vec<Example>, u64) {
    let mut d = Deduper::new(mode);
    let kept: Vec<Example> = examples.into_iter().filter(|e| d.keep(e)).collect();
    (kept, d.dropped())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::Message;

    fn ex(system: &str, user: &str, response: &str) -> Example {
        Example::new(vec![Message::system(system), Message::user(user)], response)
    }

    #[test]
    fn normalize_folds_case_and_space() {
        assert_eq!(normalize("  What IS\n\tRust? "), "what is rust?");
        assert_eq!(normalize("ÀB\u{3000}c"), "àb c");
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn exact_and_normalized_modes() {
        let items = vec![
            ex("s", "What is Rust?", "a1"),
            ex("s", "What is Rust?", "a2"),
            ex("s", "what is  rust?", "a3"),
            ex("S", "what is rust?", "a4"),
            ex("s2", "What is Rust?", "a5"),
        ];
        let (kept, dropped) = dedup(items.clone(), DedupMode::Exact);
        assert_eq!(dropped, 1);
        assert_eq!(
            kept.iter().map(|e| e.response.as_str()).collect::<Vec<_>>(),
            ["a1", "a3", "a4", "a5"]
        );
        let (kept, dropped) = dedup(items, DedupMode::Normalized);
        assert_eq!(dropped, 3);
        assert_eq!(
            kept.iter().map(|e| e.response.as_str()).collect::<Vec<_>>(),
            ["a1", "a5"]
        );
    }

    #[test]
    fn message_boundaries_matter() {
        let a = Example::new(vec![Message::user("ab"), Message::user("c")], "x");
        let b = Example::new(vec![Message::user("a"), Message::user("bc")], "x");
        let (kept, _) = dedup(vec![a, b], DedupMode::Exact);
        assert_eq!(kept.len(), 2);
    }
}
