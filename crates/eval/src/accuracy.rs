//! Multiple-choice accuracy: the answer letter from free text, compared with the
//! answer key in an example's metadata (`answer_key`).
//!
//! [`extract_choice`] tries, in order:
//! 1. an explicit answer: the last "answer" followed by optional `is`, `:`,
//!    brackets or `*`, then a choice letter (`Answer: B`, `the answer is (b)`);
//! 2. a leading letter: the text (after quotes, `*` and brackets) starts with a
//!    choice letter not followed by another letter (`B`, `(B)`, `b) …`, `C. …`);
//! 3. a bracketed letter anywhere (`… so (C) fits`), the first one;
//! 4. a single distinct stand-alone capital choice letter in the text, where
//!    `A` followed by a lowercase word is taken as the article.

use distill_data::Example;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The metadata key holding an example's correct choice.
pub const ANSWER_KEY: &str = "answer_key";

/// The choice letters considered, uppercase (`"ABCD"` for four options).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choices {
    letters: Vec<char>,
}

impl Default for Choices {
    /// `A` to `J`.
    fn default() -> Self {
        Choices {
            letters: ('A'..='J').collect(),
        }
    }
}

impl Choices {
    /// Choices from ASCII letters such as `"ABCD"` (case-insensitive).
    pub fn new(letters: &str) -> Result<Self> {
        let letters: Vec<char> = letters.chars().map(|c| c.to_ascii_uppercase()).collect();
        if letters.is_empty() || !letters.iter().all(char::is_ascii_uppercase) {
            return Err(Error::InvalidConfig(format!(
                "choices must be ASCII letters, got {letters:?}"
            )));
        }
        Ok(Choices { letters })
    }

    fn contains(&self, c: char) -> bool {
        self.letters.contains(&c.to_ascii_uppercase())
    }
}

fn is_word_char(c: Option<char>) -> bool {
    c.is_some_and(char::is_alphanumeric)
}

/// The answer letter (uppercase) in `text`, if one can be found.
pub fn extract_choice(text: &str, choices: &Choices) -> Option<char> {
    let chars: Vec<char> = text.chars().collect();
    explicit_answer(&chars, choices)
        .or_else(|| leading_letter(&chars, choices))
        .or_else(|| bracketed_letter(&chars, choices))
        .or_else(|| lone_capital(&chars, choices))
}

fn letter_at(chars: &[char], i: usize, choices: &Choices) -> Option<char> {
    let c = *chars.get(i)?;
    let standalone = !is_word_char(i.checked_sub(1).and_then(|j| chars.get(j).copied()))
        && !chars.get(i + 1).is_some_and(|n| n.is_alphabetic());
    (c.is_ascii_alphabetic() && choices.contains(c) && standalone).then(|| c.to_ascii_uppercase())
}

fn explicit_answer(chars: &[char], choices: &Choices) -> Option<char> {
    let lower: Vec<char> = chars.iter().map(|c| c.to_ascii_lowercase()).collect();
    let word: Vec<char> = "answer".chars().collect();
    let mut found = None;
    for start in 0..lower.len().saturating_sub(word.len() - 1) {
        if lower[start..start + word.len()] != word[..] {
            continue;
        }
        let mut i = start + word.len();
        // Skip separators and an optional "is" between "answer" and the letter.
        loop {
            match lower.get(i) {
                Some(c)
                    if c.is_whitespace() || matches!(c, ':' | '(' | '[' | '*' | '"' | '\'' | '=' | '-') =>
                {
                    i += 1
                }
                Some('i') if lower.get(i + 1) == Some(&'s') && !is_word_char(lower.get(i + 2).copied()) => {
                    i += 2
                }
                _ => break,
            }
        }
        if let Some(c) = letter_at(chars, i, choices) {
            found = Some(c);
        }
    }
    found
}

fn leading_letter(chars: &[char], choices: &Choices) -> Option<char> {
    let i = chars
        .iter()
        .position(|c| !(c.is_whitespace() || matches!(c, '(' | '[' | '*' | '"' | '\'')))?;
    if is_article(chars, i) {
        return None;
    }
    letter_at(chars, i, choices)
}

/// Whether the capital at `i` reads as an English word rather than a choice:
/// `A` followed by a lowercase word that is not a verb commonly said of an option
/// ("A good one" but not "A is correct"), or the pronoun `I` ("I think", "I'm").
fn is_article(chars: &[char], i: usize) -> bool {
    if chars.get(i) == Some(&'I') {
        return chars.get(i + 1) == Some(&'\'')
            || (chars.get(i + 1) == Some(&' ') && chars.get(i + 2).is_some_and(|c| c.is_lowercase()));
    }
    if chars.get(i) != Some(&'A') || chars.get(i + 1) != Some(&' ') {
        return false;
    }
    let word: String = chars[i + 2..].iter().take_while(|c| c.is_alphabetic()).collect();
    const VERBS: [&str; 10] = [
        "is", "was", "seems", "looks", "fits", "appears", "would", "should", "must", "because",
    ];
    word.chars().next().is_some_and(char::is_lowercase) && !VERBS.contains(&word.as_str())
}

fn bracketed_letter(chars: &[char], choices: &Choices) -> Option<char> {
    (1..chars.len().saturating_sub(1)).find_map(|i| {
        let open = matches!(chars[i - 1], '(' | '[');
        let close = matches!(chars[i + 1], ')' | ']');
        (open && close && choices.contains(chars[i]) && chars[i].is_ascii_alphabetic())
            .then(|| chars[i].to_ascii_uppercase())
    })
}

fn lone_capital(chars: &[char], choices: &Choices) -> Option<char> {
    let mut found: Option<char> = None;
    for i in 0..chars.len() {
        let c = chars[i];
        if !c.is_ascii_uppercase() || letter_at(chars, i, choices).is_none() {
            continue;
        }
        if is_article(chars, i) {
            continue;
        }
        match found {
            None => found = Some(c),
            Some(f) if f == c => {}
            Some(_) => return None,
        }
    }
    found
}

/// The correct choice of `example`: its `answer_key` metadata (`"B"`, `"b"`,
/// `"(B)"`), if present and a valid choice.
pub fn answer_key(example: &Example, choices: &Choices) -> Option<char> {
    let key = example.metadata.get(ANSWER_KEY)?.as_str()?;
    let chars: Vec<char> = key.chars().collect();
    leading_letter(&chars, choices)
}

/// Accuracy over a set of multiple-choice examples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AccuracyReport {
    /// Examples answered correctly.
    pub correct: usize,
    /// Examples with an answer key.
    pub total: usize,
    /// Outputs in which no answer letter was found (counted as wrong).
    pub unanswered: usize,
    /// Examples skipped because they have no valid `answer_key`.
    pub skipped: usize,
    /// `correct / total` (0 when `total` is 0).
    pub accuracy: f64,
}

/// Scores `outputs[i]` against the answer key of `examples[i]`.
pub fn multiple_choice_accuracy<S: AsRef<str>>(
    examples: &[Example],
    outputs: &[S],
    choices: &Choices,
) -> Result<AccuracyReport> {
    if examples.len() != outputs.len() {
        return Err(Error::LengthMismatch {
            what: "outputs (one per example)",
            expected: examples.len(),
            actual: outputs.len(),
        });
    }
    let mut r = AccuracyReport {
        correct: 0,
        total: 0,
        unanswered: 0,
        skipped: 0,
        accuracy: 0.0,
    };
    for (example, output) in examples.iter().zip(outputs) {
        let Some(key) = answer_key(example, choices) else {
            r.skipped += 1;
            continue;
        };
        r.total += 1;
        match extract_choice(output.as_ref(), choices) {
            Some(c) if c == key => r.correct += 1,
            Some(_) => {}
            None => r.unanswered += 1,
        }
    }
    r.accuracy = if r.total == 0 {
        0.0
    } else {
        r.correct as f64 / r.total as f64
    };
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_common_forms() {
        let c = Choices::default();
        for (text, want) in [
            ("B", Some('B')),
            ("(B)", Some('B')),
            ("Answer: B", Some('B')),
            ("b) because the sum is even", Some('B')),
            ("C. Paris is the capital", Some('C')),
            ("**D**", Some('D')),
            ("The answer is (c).", Some('C')),
            ("I considered A but the correct answer is: D", Some('D')),
            ("Final answer - b", Some('B')),
            ("A good choice here is C", Some('C')),
            ("A is correct", Some('A')),
            ("so (C) fits best", Some('C')),
            ("I think B is right", Some('B')),
            ("I'm fairly sure: (I)", Some('I')),
            ("Both B and C could work", None),
            ("No idea.", None),
            ("Because", None),
            ("", None),
            ("Z", None),
        ] {
            assert_eq!(extract_choice(text, &c), want, "{text:?}");
        }
        let abcd = Choices::new("abcd").unwrap();
        assert_eq!(extract_choice("E", &abcd), None);
        assert!(Choices::new("1").is_err());
    }

    #[test]
    fn accuracy_against_answer_keys() {
        let mut examples = Vec::new();
        for key in [Some("B"), Some("(c)"), Some("A"), None] {
            let mut e = Example::new(Vec::new(), "");
            if let Some(k) = key {
                e.metadata.insert(ANSWER_KEY.into(), k.into());
            }
            examples.push(e);
        }
        let outputs = ["Answer: B", "D", "hmm", "A"];
        let r = multiple_choice_accuracy(&examples, &outputs, &Choices::default()).unwrap();
        assert_eq!((r.correct, r.total, r.unanswered, r.skipped), (1, 3, 1, 1));
        assert!((r.accuracy - 1.0 / 3.0).abs() < 1e-12);
        assert!(multiple_choice_accuracy(&examples, &outputs[..2], &Choices::default()).is_err());
    }
}
