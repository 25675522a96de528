//! The hand-written 13a tokenizer against sacrebleu's own regular expressions
//! (run by the `regex` crate, whose leftmost-first, non-overlapping replacement
//! is Python's `re.sub` for these patterns) on random strings.

use distill_eval::bleu::BleuTokenizer;
use proptest::prelude::*;
use regex::Regex;

static RULES: std::sync::LazyLock<Vec<(Regex, &str)>> = std::sync::LazyLock::new(|| {
    [
        (r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", " $1 "),
        (r"([^0-9])([\.,])", "$1 $2 "),
        (r"([\.,])([^0-9])", " $1 $2"),
        (r"([0-9])(-)", "$1 $2 "),
    ]
    .into_iter()
    .map(|(p, r)| (Regex::new(p).unwrap(), r))
    .collect()
});

/// sacrebleu's `Tokenizer13a` + `TokenizerRegexp`, pattern for pattern.
fn oracle_13a(line: &str) -> String {
    let mut line = line
        .replace("<skipped>", "")
        .replace("-\n", "")
        .replace('\n', " ");
    if line.contains('&') {
        line = line
            .replace("&quot;", "\"")
            .replace("&amp;", "&")
            .replace("&lt;", "<")
            .replace("&gt;", ">");
    }
    let mut line = format!(" {line} ");
    for (pattern, replacement) in RULES.iter() {
        line = pattern.replace_all(&line, *replacement).into_owned();
    }
    distill_eval::text::python_split(&line)
        .collect::<Vec<_>>()
        .join(" ")
}

fn tricky_string() -> impl Strategy<Value = String> {
    let pieces = prop::sample::select(vec![
        "a",
        "Z",
        "0",
        "9",
        ".",
        ",",
        "-",
        " ",
        "  ",
        "\n",
        "-\n",
        "&",
        "&amp;",
        "&lt;",
        "&quot;",
        "<skipped>",
        "$",
        "%",
        "'",
        "é",
        "中",
        "👍",
        "\u{a0}",
        "\u{1c}",
        "\t",
        "(",
        ")",
        "/",
        "~",
        "`",
        "1,000.50",
        "3-4",
    ]);
    prop::collection::vec(pieces, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn thirteen_a_equals_the_regex_rules(line in tricky_string()) {
        prop_assert_eq!(BleuTokenizer::Tok13a.tokenize(&line), oracle_13a(&line));
    }
}
