//! rouge-score's default tokenizer (`rouge_score/tokenize.py`).
//!
//! Python lowercases the text, replaces every run of characters outside
//! `[a-z0-9]` with a space, splits, stems tokens longer than three characters and
//! keeps the non-empty `[a-z0-9]+` tokens. Only ASCII survives, so this works on
//! bytes: ASCII is lowercased directly, and a non-ASCII character contributes
//! whatever ASCII its lowercase form has (`İ` lowercases to `i` + U+0307, the
//! Kelvin sign to `k`).

use rustc_hash::FxHashMap;

use super::porter::PorterStemmer;

/// Tokenizes `text` as rouge-score's `DefaultTokenizer(use_stemmer).tokenize`.
pub fn tokenize(text: &str, use_stemmer: bool) -> Vec<String> {
    let mut tokenizer = Tokenizer::new(use_stemmer);
    let mut out = Vec::new();
    tokenizer.for_each_token(text, |t| out.push(String::from_utf8_lossy(t).into_owned()));
    out
}

/// The tokenizer with a reusable token buffer and a stem cache.
pub(crate) struct Tokenizer {
    stemmer: Option<PorterStemmer>,
    cache: FxHashMap<Box<[u8]>, Box<[u8]>>,
    token: Vec<u8>,
}

/// Bound on cached stems, so that scoring a huge corpus cannot grow without limit.
const MAX_CACHED_STEMS: usize = 1 << 20;

impl Tokenizer {
    pub(crate) fn new(use_stemmer: bool) -> Self {
        Tokenizer {
            stemmer: use_stemmer.then(PorterStemmer::new),
            cache: FxHashMap::default(),
            token: Vec::with_capacity(32),
        }
    }

    /// Calls `f` with each token, in order.
    pub(crate) fn for_each_token(&mut self, text: &str, mut f: impl FnMut(&[u8])) {
        self.token.clear();
        for c in text.chars() {
            if c.is_ascii() {
                let b = (c as u8).to_ascii_lowercase();
                if b.is_ascii_alphanumeric() {
                    self.token.push(b);
                } else {
                    self.flush(&mut f);
                }
            } else {
                for l in c.to_lowercase() {
                    if l.is_ascii_alphanumeric() {
                        self.token.push(l as u8);
                    } else {
                        self.flush(&mut f);
                    }
                }
            }
        }
        self.flush(&mut f);
    }

    fn flush(&mut self, f: &mut impl FnMut(&[u8])) {
        if self.token.is_empty() {
            return;
        }
        match &mut self.stemmer {
            Some(stemmer) if self.token.len() > 3 => {
                if let Some(stem) = self.cache.get(self.token.as_slice()) {
                    if !stem.is_empty() {
                        f(stem);
                    }
                } else {
                    let word: Box<[u8]> = self.token.as_slice().into();
                    stemmer.stem_ascii_in_place(&mut self.token);
                    if !self.token.is_empty() {
                        f(&self.token);
                    }
                    if self.cache.len() < MAX_CACHED_STEMS {
                        self.cache.insert(word, self.token.as_slice().into());
                    }
                }
            }
            _ => f(&self.token),
        }
        self.token.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_rouge_score() {
        assert_eq!(
            tokenize("Hello, World! It's 10%.", false),
            ["hello", "world", "it", "s", "10"]
        );
        assert_eq!(
            tokenize("café İstanbul \u{212a}elvin", false),
            ["caf", "i", "stanbul", "kelvin"]
        );
        assert_eq!(
            tokenize("The runners were running", true),
            ["the", "runner", "were", "run"]
        );
    }
}
