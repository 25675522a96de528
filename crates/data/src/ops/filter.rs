//! Dropping examples that would teach the student the wrong thing.

use std::fmt;

use crate::example::{Example, FinishReason};

/// A function that counts the tokens of a text. Pass a real tokenizer's count, or
/// [`count_chars`] / [`count_words`] when none is at hand.
pub type TokenCounter<'a> = &'a dyn Fn(&str) -> usize;

/// Counts Unicode scalar values.
pub fn count_chars(text: &str) -> usize {
    text.chars().count()
}

/// Counts whitespace-separated words.
pub fn count_words(text: &str) -> usize {
    text.split_whitespace().count()
}

/// What to drop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterConfig {
    /// Drop examples whose response is empty or only whitespace.
    pub drop_empty: bool,
    /// Drop examples that stopped for one of these reasons. The default drops `length` (a
    /// cut-off answer) and `content_filter` (a removed answer).
    pub drop_finish_reasons: Vec<FinishReason>,
    /// Drop examples whose prompt plus response is longer than this many tokens.
    pub max_tokens: Option<usize>,
}

impl Default for FilterConfig {
    fn default() -> Self {
        FilterConfig {
            drop_empty: true,
            drop_finish_reasons: vec![FinishReason::Length, FinishReason::ContentFilter],
            max_tokens: None,
        }
    }
}

/// Why an example was dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The response is empty.
    EmptyResponse,
    /// The teacher stopped for this reason.
    FinishReason(FinishReason),
    /// The example has this many tokens, over the limit.
    TooLong(usize),
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DropReason::EmptyResponse => f.write_str("empty response"),
            DropReason::FinishReason(r) => write!(f, "finish_reason {r}"),
            DropReason::TooLong(n) => write!(f, "too long ({n} tokens)"),
        }
    }
}

/// A filter: a [`FilterConfig`] plus the token counter used for `max_tokens`.
pub struct Filter<'a> {
    config: FilterConfig,
    tokens: TokenCounter<'a>,
}

impl<'a> Filter<'a> {
    /// A filter that measures length with `tokens`.
    pub fn new(config: FilterConfig, tokens: TokenCounter<'a>) -> Self {
        Filter { config, tokens }
    }

    /// `None` to keep the example, or why it should be dropped (the first rule that fires).
    pub fn check(&self, example: &Example) -> Option<DropReason> {
        if self.config.drop_empty && example.response.trim().is_empty() {
            return Some(DropReason::EmptyResponse);
        }
        if let Some(r) = example.finish_reason()
            && self.config.drop_finish_reasons.contains(r)
        {
            return Some(DropReason::FinishReason(r.clone()));
        }
        if let Some(max) = self.config.max_tokens {
            let n: usize = example
                .messages
                .iter()
                .map(|m| (self.tokens)(&m.content))
                .sum::<usize>()
                + (self.tokens)(&example.response);
            if n > max {
                return Some(DropReason::TooLong(n));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::{Message, TeacherInfo};

    fn ex(response: &str, finish: Option<FinishReason>) -> Example {
        let mut e = Example::new(vec![Message::user("one two three")], response);
        e.teacher = finish.map(|r| TeacherInfo {
            finish_reason: Some(r),
            ..TeacherInfo::default()
        });
        e
    }

    #[test]
    fn default_rules() {
        let f = Filter::new(FilterConfig::default(), &count_words);
        assert_eq!(f.check(&ex("fine", Some(FinishReason::Stop))), None);
        assert_eq!(f.check(&ex("fine", None)), None);
        assert_eq!(f.check(&ex(" \n", None)), Some(DropReason::EmptyResponse));
        assert_eq!(
            f.check(&ex("cut", Some(FinishReason::Length))),
            Some(DropReason::FinishReason(FinishReason::Length))
        );
        assert_eq!(
            f.check(&ex("x", Some(FinishReason::ContentFilter))),
            Some(DropReason::FinishReason(FinishReason::ContentFilter))
        );
    }

    #[test]
    fn length_uses_the_counter() {
        let cfg = FilterConfig {
            max_tokens: Some(4),
            ..FilterConfig::default()
        };
        let f = Filter::new(cfg.clone(), &count_words);
        assert_eq!(f.check(&ex("four", None)), None);
        assert_eq!(f.check(&ex("four five", None)), Some(DropReason::TooLong(5)));
        let f = Filter::new(cfg, &count_chars);
        assert_eq!(f.check(&ex("a", None)), Some(DropReason::TooLong(14)));
    }
}
