//! The house rule for errors, as a test helper (shared by the distill-gguf and distill-student
//! tests): a message leaves its source out, so each cause appears once in the joined chain.

/// The messages of `error` and its sources, joined with `: ` as `distill::error_line` joins
/// them, after asserting that each message appears in the line exactly once.
pub fn chain_line(error: &(dyn std::error::Error + 'static)) -> String {
    let mut messages = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        messages.push(e.to_string());
        next = e.source();
    }
    let line = messages.join(": ");
    for m in &messages {
        assert_eq!(
            line.matches(m.as_str()).count(),
            1,
            "`{m}` is not once in `{line}`"
        );
    }
    line
}
