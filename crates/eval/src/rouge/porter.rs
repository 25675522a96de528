//! The Porter stemmer exactly as NLTK's `PorterStemmer()` runs it (its default
//! `NLTK_EXTENSIONS` mode), which is the stemmer rouge-score uses.
//!
//! A port of `nltk/stem/porter.py` (NLTK 3.10), rule list for rule list. It is
//! neither Porter2 (Snowball) nor Martin Porter's reference C version: NLTK adds
//! irregular forms, `-ies`/`-ied` special cases, its own `y -> i` condition,
//! `alli`, `fulli` and `logi` rules and a two-letter `*o` case. The fixtures check
//! it on more than 5,000 words against NLTK itself.
//!
//! The algorithm is written once over a slice of "letters" so that the ASCII path
//! used by ROUGE (bytes) and the general path (chars) share it.

/// A letter of a word: a byte for ASCII words, a `char` otherwise.
trait Letter: Copy + Eq {
    fn is(self, ascii: u8) -> bool;
}

impl Letter for u8 {
    #[inline]
    fn is(self, ascii: u8) -> bool {
        self == ascii
    }
}

impl Letter for char {
    #[inline]
    fn is(self, ascii: u8) -> bool {
        self == ascii as char
    }
}

#[inline]
fn is_vowel<T: Letter>(c: T) -> bool {
    c.is(b'a') || c.is(b'e') || c.is(b'i') || c.is(b'o') || c.is(b'u')
}

/// `_is_consonant`: a `y` is a consonant when the letter before it is not one.
fn is_consonant<T: Letter>(w: &[T], mut i: usize) -> bool {
    if is_vowel(w[i]) {
        return false;
    }
    if w[i].is(b'y') {
        let mut negate = false;
        while i > 0 && w[i].is(b'y') {
            negate = !negate;
            i -= 1;
        }
        // NLTK: `(word[i] not in vowels) != negate`.
        return is_vowel(w[i]) == negate;
    }
    true
}

/// `_measure`: the number of vowel-consonant transitions (m in `[C](VC)^m[V]`).
fn measure<T: Letter>(stem: &[T]) -> usize {
    let mut m = 0;
    let mut prev_consonant = true;
    let mut prev_vowel = false;
    for (i, &c) in stem.iter().enumerate() {
        let consonant = if is_vowel(c) {
            false
        } else if c.is(b'y') {
            i == 0 || !prev_consonant
        } else {
            true
        };
        if prev_vowel && consonant {
            m += 1;
        }
        prev_vowel = !consonant;
        prev_consonant = consonant;
    }
    m
}

/// `_contains_vowel`.
fn contains_vowel<T: Letter>(stem: &[T]) -> bool {
    let mut prev_consonant = true;
    for (i, &c) in stem.iter().enumerate() {
        let consonant = if is_vowel(c) {
            false
        } else if c.is(b'y') {
            i == 0 || !prev_consonant
        } else {
            true
        };
        if !consonant {
            return true;
        }
        prev_consonant = consonant;
    }
    false
}

/// `_ends_double_consonant` (condition *d).
fn ends_double_consonant<T: Letter>(w: &[T]) -> bool {
    let n = w.len();
    n >= 2 && w[n - 1] == w[n - 2] && is_consonant(w, n - 1)
}

/// `_ends_cvc` (condition *o), with NLTK's two-letter case.
fn ends_cvc<T: Letter>(w: &[T]) -> bool {
    let n = w.len();
    (n >= 3
        && is_consonant(w, n - 3)
        && !is_consonant(w, n - 2)
        && is_consonant(w, n - 1)
        && !(w[n - 1].is(b'w') || w[n - 1].is(b'x') || w[n - 1].is(b'y')))
        || (n == 2 && !is_consonant(w, 0) && is_consonant(w, 1))
}

fn ends_with<T: Letter>(w: &[T], suffix: &[u8]) -> bool {
    w.len() >= suffix.len()
        && w[w.len() - suffix.len()..]
            .iter()
            .zip(suffix)
            .all(|(&c, &s)| c.is(s))
}

fn equals<T: Letter>(w: &[T], s: &[u8]) -> bool {
    w.len() == s.len() && w.iter().zip(s).all(|(&c, &b)| c.is(b))
}

/// Replaces the last `strip` letters of `w` with `with`.
fn replace_tail<T: Letter + From<u8>>(w: &mut Vec<T>, strip: usize, with: &[u8]) {
    w.truncate(w.len() - strip);
    w.extend(with.iter().map(|&b| T::from(b)));
}

/// A condition on the stem left once a rule's suffix is removed.
type Condition<'a, T> = &'a dyn Fn(&[T]) -> bool;

/// `_apply_rule_list` for plain suffix rules: the first rule whose suffix matches
/// decides; if its condition fails the word is left as it is.
fn apply_rules<T: Letter + From<u8>>(w: &mut Vec<T>, rules: &[(&[u8], &[u8], Condition<'_, T>)]) {
    for &(suffix, replacement, condition) in rules {
        if ends_with(w, suffix) {
            if condition(&w[..w.len() - suffix.len()]) {
                replace_tail(w, suffix.len(), replacement);
            }
            return;
        }
    }
}

fn positive_measure<T: Letter>(stem: &[T]) -> bool {
    measure(stem) > 0
}

fn measure_gt_1<T: Letter>(stem: &[T]) -> bool {
    measure(stem) > 1
}

fn always<T>(_: &[T]) -> bool {
    true
}

fn step1a<T: Letter + From<u8>>(w: &mut Vec<T>) {
    if ends_with(w, b"ies") && w.len() == 4 {
        replace_tail(w, 3, b"ie");
        return;
    }
    apply_rules(
        w,
        &[
            (b"sses", b"ss", &always),
            (b"ies", b"i", &always),
            (b"ss", b"ss", &always),
            (b"s", b"", &always),
        ],
    );
}

fn step1b<T: Letter + From<u8>>(w: &mut Vec<T>) {
    if ends_with(w, b"ied") {
        let with: &[u8] = if w.len() == 4 { b"ie" } else { b"i" };
        replace_tail(w, 3, with);
        return;
    }
    if ends_with(w, b"eed") {
        if measure(&w[..w.len() - 3]) > 0 {
            replace_tail(w, 3, b"ee");
        }
        return;
    }
    let mut removed = None;
    for suffix in [&b"ed"[..], b"ing"] {
        if ends_with(w, suffix) {
            if contains_vowel(&w[..w.len() - suffix.len()]) {
                removed = Some(suffix.len());
            }
            break;
        }
    }
    let Some(strip) = removed else { return };
    w.truncate(w.len() - strip);
    // The rule list on the intermediate stem.
    for (suffix, with) in [(&b"at"[..], &b"ate"[..]), (b"bl", b"ble"), (b"iz", b"ize")] {
        if ends_with(w, suffix) {
            replace_tail(w, suffix.len(), with);
            return;
        }
    }
    if ends_double_consonant(w) {
        let last = w[w.len() - 1];
        if !(last.is(b'l') || last.is(b's') || last.is(b'z')) {
            w.pop();
        }
        return;
    }
    if measure(w) == 1 && ends_cvc(w) {
        w.push(T::from(b'e'));
    }
}

fn step1c<T: Letter + From<u8>>(w: &mut Vec<T>) {
    let condition = |stem: &[T]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(w, &[(b"y", b"i", &condition)]);
}

fn step2<T: Letter + From<u8>>(w: &mut Vec<T>) {
    if ends_with(w, b"alli") && positive_measure(&w[..w.len() - 4]) {
        replace_tail(w, 4, b"al");
        step2(w);
        return;
    }
    // `logi -> log` tests the measure of the word less "gi", keeping the "l".
    let without_gi = w.len().saturating_sub(3);
    let logi_ok = positive_measure(&w[..without_gi]);
    let logi = move |_: &[T]| logi_ok;
    let pm: Condition<'_, T> = &positive_measure;
    apply_rules(
        w,
        &[
            (b"ational", b"ate", pm),
            (b"tional", b"tion", pm),
            (b"enci", b"ence", pm),
            (b"anci", b"ance", pm),
            (b"izer", b"ize", pm),
            (b"bli", b"ble", pm),
            (b"alli", b"al", pm),
            (b"entli", b"ent", pm),
            (b"eli", b"e", pm),
            (b"ousli", b"ous", pm),
            (b"ization", b"ize", pm),
            (b"ation", b"ate", pm),
            (b"ator", b"ate", pm),
            (b"alism", b"al", pm),
            (b"iveness", b"ive", pm),
            (b"fulness", b"ful", pm),
            (b"ousness", b"ous", pm),
            (b"aliti", b"al", pm),
            (b"iviti", b"ive", pm),
            (b"biliti", b"ble", pm),
            (b"fulli", b"ful", pm),
            (b"logi", b"log", &logi),
        ],
    );
}

fn step3<T: Letter + From<u8>>(w: &mut Vec<T>) {
    let pm: Condition<'_, T> = &positive_measure;
    apply_rules(
        w,
        &[
            (b"icate", b"ic", pm),
            (b"ative", b"", pm),
            (b"alize", b"al", pm),
            (b"iciti", b"ic", pm),
            (b"ical", b"ic", pm),
            (b"ful", b"", pm),
            (b"ness", b"", pm),
        ],
    );
}

fn step4<T: Letter + From<u8>>(w: &mut Vec<T>) {
    let gt1: Condition<'_, T> = &measure_gt_1;
    let ion = |stem: &[T]| measure(stem) > 1 && stem.last().is_some_and(|&c| c.is(b's') || c.is(b't'));
    apply_rules(
        w,
        &[
            (b"al", b"", gt1),
            (b"ance", b"", gt1),
            (b"ence", b"", gt1),
            (b"er", b"", gt1),
            (b"ic", b"", gt1),
            (b"able", b"", gt1),
            (b"ible", b"", gt1),
            (b"ant", b"", gt1),
            (b"ement", b"", gt1),
            (b"ment", b"", gt1),
            (b"ent", b"", gt1),
            (b"ion", b"", &ion),
            (b"ou", b"", gt1),
            (b"ism", b"", gt1),
            (b"ate", b"", gt1),
            (b"iti", b"", gt1),
            (b"ous", b"", gt1),
            (b"ive", b"", gt1),
            (b"ize", b"", gt1),
        ],
    );
}

fn step5a<T: Letter>(w: &mut Vec<T>) {
    if ends_with(w, b"e") {
        let stem = &w[..w.len() - 1];
        let m = measure(stem);
        if m > 1 || (m == 1 && !ends_cvc(stem)) {
            w.pop();
        }
    }
}

fn step5b<T: Letter>(w: &mut Vec<T>) {
    if ends_with(w, b"ll") && measure(&w[..w.len() - 1]) > 1 {
        w.pop();
    }
}

/// NLTK's table of irregular forms (`self.pool`).
const IRREGULAR: &[(&[u8], &[u8])] = &[
    (b"sky", b"sky"),
    (b"skies", b"sky"),
    (b"dying", b"die"),
    (b"lying", b"lie"),
    (b"tying", b"tie"),
    (b"news", b"news"),
    (b"innings", b"inning"),
    (b"inning", b"inning"),
    (b"outings", b"outing"),
    (b"outing", b"outing"),
    (b"cannings", b"canning"),
    (b"canning", b"canning"),
    (b"howe", b"howe"),
    (b"proceed", b"proceed"),
    (b"exceed", b"exceed"),
    (b"succeed", b"succeed"),
];

/// `PorterStemmer.stem` after lowercasing; `original_len` is `len(word)` of the
/// word as given.
fn stem_letters<T: Letter + From<u8>>(w: &mut Vec<T>, original_len: usize) {
    if let Some(&(_, to)) = IRREGULAR.iter().find(|(from, _)| equals(w, from)) {
        w.clear();
        w.extend(to.iter().map(|&b| T::from(b)));
        return;
    }
    if original_len <= 2 {
        return;
    }
    step1a(w);
    step1b(w);
    step1c(w);
    step2(w);
    step3(w);
    step4(w);
    step5a(w);
    step5b(w);
}

/// A Porter stemmer with a reusable buffer.
#[derive(Debug, Default, Clone)]
pub struct PorterStemmer {
    bytes: Vec<u8>,
    chars: Vec<char>,
}

impl PorterStemmer {
    /// A stemmer.
    pub fn new() -> Self {
        PorterStemmer::default()
    }

    /// The stem NLTK's `PorterStemmer().stem(word)` returns (the word is
    /// lowercased first, as NLTK does).
    pub fn stem(&mut self, word: &str) -> String {
        if word.is_ascii() {
            self.bytes.clear();
            self.bytes.extend(word.bytes().map(|b| b.to_ascii_lowercase()));
            stem_letters(&mut self.bytes, word.len());
            // Only ASCII letters were added, so the bytes stay UTF-8.
            String::from_utf8_lossy(&self.bytes).into_owned()
        } else {
            self.chars.clear();
            self.chars.extend(crate::text::python_lower(word).chars());
            stem_letters(&mut self.chars, word.chars().count());
            self.chars.iter().collect()
        }
    }

    /// Stems an ASCII lowercase word in place (the ROUGE tokenizer's tokens).
    pub(crate) fn stem_ascii_in_place(&mut self, word: &mut Vec<u8>) {
        let len = word.len();
        stem_letters(word, len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paper_examples_and_nltk_extensions() {
        let mut s = PorterStemmer::new();
        for (word, stem) in [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("agreed", "agre"),
            ("hopping", "hop"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalizations", "gener"),
            ("dying", "die"),
            ("spied", "spi"),
            ("enjoy", "enjoy"),
            ("yyyy", "yyyi"),
            ("Running", "run"),
        ] {
            assert_eq!(s.stem(word), stem, "{word}");
        }
    }
}
