//! Chat fine-tuning files for OpenAI and Azure OpenAI: export and validation.
//!
//! [`validate_finetune_file`] checks a file against the documented requirements of the two
//! services (as of 2026-11):
//!
//! - **Both.** JSON Lines, UTF-8, one JSON object per line with a `messages` array; each message
//!   has a known `role` and string `content`; each example has at least one assistant message;
//!   `weight`, where present, is 0 or 1 and only on assistant messages; at least
//!   [`MIN_EXAMPLES`] examples; under [`MAX_FILE_BYTES`].
//! - **Azure OpenAI** documents that files "must be encoded in UTF-8 and include a byte-order
//!   mark (BOM)", so a missing BOM is an error for [`FinetuneTarget::Azure`].
//! - **OpenAI** documents no BOM; a BOM is reported as a warning for
//!   [`FinetuneTarget::OpenAi`], since a line-by-line JSON parser sees it as a stray character.
//!
//! Token limits per example depend on the base model, so they are not checked here; use
//! [`crate::ops::filter`] with the model's tokenizer.

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::encoding::Encoding;
use crate::error::{Error, Result};
use crate::lines::LineReader;
use crate::ops::files::{ConvertReport, WriteOptions, convert};
use crate::reader::ReaderOptions;
use crate::writer::DEFAULT_MAX_LINE_BYTES;

/// Fine-tuning jobs on both services need at least this many training examples.
pub const MIN_EXAMPLES: u64 = 10;

/// Both services limit a fine-tuning file to 512 MB.
pub const MAX_FILE_BYTES: u64 = 512 * 1024 * 1024;

/// How many problems of each severity a report keeps (it counts them all).
const MAX_KEPT: usize = 100;

/// Which service the file is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinetuneTarget {
    /// OpenAI's fine-tuning API: no BOM.
    OpenAi,
    /// Azure OpenAI fine-tuning: UTF-8 with a BOM, as its documentation requires.
    Azure,
}

impl FinetuneTarget {
    /// Whether files for this target start with a BOM.
    pub fn wants_bom(self) -> bool {
        self == FinetuneTarget::Azure
    }
}

/// One finding of [`validate_finetune_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The 1-based line, or `None` for whole-file problems.
    pub line: Option<u64>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(l) => write!(f, "line {l}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

/// The outcome of [`validate_finetune_file`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinetuneReport {
    /// The file checked.
    pub path: PathBuf,
    /// The target checked against.
    pub target: FinetuneTarget,
    /// Examples (non-empty lines) found.
    pub examples: u64,
    /// Errors found (the service would reject the file); the first 100 are kept.
    pub errors: Vec<Problem>,
    /// All errors, including those not kept.
    pub error_count: u64,
    /// Warnings (likely mistakes the service may accept); the first 100 are kept.
    pub warnings: Vec<Problem>,
}

impl FinetuneReport {
    /// True when there are no errors.
    pub fn is_valid(&self) -> bool {
        self.error_count == 0
    }

    fn error(&mut self, line: Option<u64>, message: impl Into<String>) {
        self.error_count += 1;
        if self.errors.len() < MAX_KEPT {
            self.errors.push(Problem {
                line,
                message: message.into(),
            });
        }
    }

    fn warn(&mut self, line: Option<u64>, message: impl Into<String>) {
        if self.warnings.len() < MAX_KEPT {
            self.warnings.push(Problem {
                line,
                message: message.into(),
            });
        }
    }
}

impl fmt::Display for FinetuneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.is_valid() { "valid" } else { "INVALID" };
        write!(
            f,
            "{}: {verdict} for {:?} fine-tuning ({} examples, {} errors, {} warnings)",
            self.path.display(),
            self.target,
            self.examples,
            self.error_count,
            self.warnings.len()
        )?;
        for p in &self.errors {
            write!(f, "\n  error: {p}")?;
        }
        for p in &self.warnings {
            write!(f, "\n  warning: {p}")?;
        }
        Ok(())
    }
}

/// Checks a chat fine-tuning file against the rules in the [module docs](self). I/O errors
/// are returned as `Err`; everything about the content is in the report.
pub fn validate_finetune_file(path: impl AsRef<Path>, target: FinetuneTarget) -> Result<FinetuneReport> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut rep = FinetuneReport {
        path: path.to_path_buf(),
        target,
        examples: 0,
        errors: Vec::new(),
        error_count: 0,
        warnings: Vec::new(),
    };
    if size > MAX_FILE_BYTES {
        rep.error(
            None,
            format!("the file is {size} bytes; the limit is {MAX_FILE_BYTES} (512 MB)"),
        );
    }
    let mut lines = LineReader::new(BufReader::new(file), DEFAULT_MAX_LINE_BYTES);
    let mut buf = Vec::new();
    let mut crlf = false;
    while let Some(info) = lines.next_line(&mut buf).map_err(|e| Error::io(path, e))? {
        let n = Some(info.number);
        let mut line = &buf[..];
        if info.number == 1 {
            match (line.strip_prefix(b"\xEF\xBB\xBF"), target) {
                (Some(rest), FinetuneTarget::OpenAi) => {
                    rep.warn(
                        None,
                        "the file starts with a byte-order mark, which OpenAI does not document",
                    );
                    line = rest;
                }
                (Some(rest), FinetuneTarget::Azure) => line = rest,
                (None, FinetuneTarget::Azure) => rep.error(
                    None,
                    "Azure OpenAI requires UTF-8 with a byte-order mark (BOM); the file has none",
                ),
                (None, FinetuneTarget::OpenAi) => {}
            }
        }
        if info.too_long {
            rep.error(n, format!("line longer than {DEFAULT_MAX_LINE_BYTES} bytes"));
            continue;
        }
        crlf |= info.crlf;
        if line.iter().all(u8::is_ascii_whitespace) {
            // A blank line is not a JSON object, and JSONL parsers reject it.
            rep.error(n, "empty line");
            continue;
        }
        rep.examples += 1;
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(e) => {
                rep.error(n, format!("invalid UTF-8 at byte {}", e.valid_up_to() + 1));
                continue;
            }
        };
        match serde_json::from_str::<Value>(text) {
            Ok(v) => check_example(&v, info.number, &mut rep),
            Err(e) => rep.error(n, format!("not valid JSON: {e}")),
        }
    }
    if crlf {
        rep.warn(None, "some lines end with CRLF; use LF line endings");
    }
    if rep.examples < MIN_EXAMPLES {
        rep.error(
            None,
            format!(
                "{} examples; fine-tuning needs at least {MIN_EXAMPLES}",
                rep.examples
            ),
        );
    }
    Ok(rep)
}

const ROLES: [&str; 5] = ["system", "user", "assistant", "tool", "function"];
const MESSAGE_KEYS: [&str; 8] = [
    "role",
    "content",
    "name",
    "weight",
    "function_call",
    "tool_calls",
    "tool_call_id",
    "refusal",
];

fn check_example(v: &Value, line: u64, rep: &mut FinetuneReport) {
    let n = Some(line);
    let Some(obj) = v.as_object() else {
        return rep.error(n, "a line must be a JSON object");
    };
    let Some(messages) = obj.get("messages") else {
        return rep.error(n, "missing \"messages\"");
    };
    let Some(messages) = messages.as_array() else {
        return rep.error(n, "\"messages\" must be an array");
    };
    for key in obj.keys() {
        if !["messages", "tools", "functions", "parallel_tool_calls"].contains(&key.as_str()) {
            rep.warn(n, format!("unknown top-level key {key:?}"));
        }
    }
    let mut assistants = 0;
    for (i, m) in messages.iter().enumerate() {
        let Some(m) = m.as_object() else {
            rep.error(n, format!("message {i} is not an object"));
            continue;
        };
        let role = m.get("role").and_then(Value::as_str);
        match role {
            None => rep.error(n, format!("message {i} has no string \"role\"")),
            Some(r) if !ROLES.contains(&r) => rep.error(n, format!("message {i} has unknown role {r:?}")),
            Some(_) => {}
        }
        let is_assistant = role == Some("assistant");
        assistants += usize::from(is_assistant);
        let has_call = m.contains_key("function_call") || m.contains_key("tool_calls");
        match m.get("content") {
            Some(Value::String(s)) => {
                if s.is_empty() && is_assistant && !has_call {
                    rep.error(n, format!("message {i}: the assistant's content is empty"));
                }
            }
            Some(Value::Null) | None if is_assistant && has_call => {}
            Some(Value::Array(_)) if role == Some("user") => {} // multimodal content parts
            _ => rep.error(n, format!("message {i} needs string \"content\"")),
        }
        if let Some(w) = m.get("weight") {
            if !is_assistant {
                rep.error(
                    n,
                    format!("message {i}: \"weight\" is only allowed on assistant messages"),
                );
            } else if !matches!(w.as_f64(), Some(x) if x == 0.0 || x == 1.0) {
                rep.error(n, format!("message {i}: \"weight\" must be 0 or 1"));
            }
        }
        for key in m.keys() {
            if !MESSAGE_KEYS.contains(&key.as_str()) {
                rep.error(n, format!("message {i} has unknown key {key:?}"));
            }
        }
    }
    if assistants == 0 {
        rep.error(n, "no assistant message");
    }
}

/// Writes `input` (any encoding) as a chat fine-tuning file for `target`, then validates it.
/// System prompts are kept; ids, logprobs and metadata are dropped, as the services accept
/// only the messages.
pub fn export_finetune(
    input: impl AsRef<Path>,
    output: impl AsRef<Path>,
    target: FinetuneTarget,
    reader: ReaderOptions,
) -> Result<(ConvertReport, FinetuneReport)> {
    let write = WriteOptions {
        encoding: Encoding::Chat,
        bom: target.wants_bom(),
        ..WriteOptions::default()
    };
    let converted = convert(input, output.as_ref(), reader, &write)?;
    let report = validate_finetune_file(output, target)?;
    Ok((converted, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"assistant","content":"a"}]}"#;

    fn check(text: &[u8], target: FinetuneTarget) -> FinetuneReport {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("ft.jsonl");
        std::fs::write(&p, text).unwrap();
        validate_finetune_file(&p, target).unwrap()
    }

    fn good_file(n: usize) -> String {
        (0..n).map(|_| format!("{GOOD}\n")).collect()
    }

    #[test]
    fn ten_good_lines_pass_openai() {
        let r = check(good_file(10).as_bytes(), FinetuneTarget::OpenAi);
        assert!(r.is_valid(), "{r}");
        assert_eq!(r.examples, 10);
        assert!(r.warnings.is_empty());
    }

    #[test]
    fn nine_lines_are_too_few() {
        let r = check(good_file(9).as_bytes(), FinetuneTarget::OpenAi);
        assert!(!r.is_valid());
        assert!(r.to_string().contains("at least 10"), "{r}");
    }

    #[test]
    fn bom_rules_per_target() {
        let with = format!("\u{feff}{}", good_file(10));
        assert!(check(with.as_bytes(), FinetuneTarget::Azure).is_valid());
        let r = check(with.as_bytes(), FinetuneTarget::OpenAi);
        assert!(r.is_valid() && r.warnings.len() == 1, "{r}");
        let r = check(good_file(10).as_bytes(), FinetuneTarget::Azure);
        assert!(!r.is_valid());
        assert!(r.errors[0].message.contains("byte-order mark"), "{r}");
    }

    #[test]
    fn content_rules() {
        let bad = [
            (r#"{"messages":[{"role":"user","content":"q"}]}"#, "no assistant"),
            (
                r#"{"messages":[{"role":"bot","content":"q"},{"role":"assistant","content":"a"}]}"#,
                "unknown role",
            ),
            (
                r#"{"messages":[{"role":"user","content":1},{"role":"assistant","content":"a"}]}"#,
                "string \"content\"",
            ),
            (
                r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":""}]}"#,
                "empty",
            ),
            (
                r#"{"messages":[{"role":"user","content":"q","weight":1},{"role":"assistant","content":"a"}]}"#,
                "only allowed",
            ),
            (
                r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","weight":2}]}"#,
                "0 or 1",
            ),
            (
                r#"{"messages":[{"role":"user","content":"q","x":1},{"role":"assistant","content":"a"}]}"#,
                "unknown key",
            ),
            (r#"{"messages":{}}"#, "must be an array"),
            (r#"{"prompt":"q","completion":"a"}"#, "missing \"messages\""),
            (r#"[1]"#, "JSON object"),
            (r#"{"messages":["#, "not valid JSON"),
            ("", "empty line"),
        ];
        for (line, want) in bad {
            let text = format!("{}{line}\n", good_file(10));
            let r = check(text.as_bytes(), FinetuneTarget::OpenAi);
            assert!(!r.is_valid(), "{line}");
            assert!(
                r.errors
                    .iter()
                    .any(|p| p.line == Some(11) && p.message.contains(want)),
                "{want}: {r}"
            );
        }
        let r = check(
            &[good_file(10).as_bytes(), b"{\"messages\":\"\xff\"}\n"].concat(),
            FinetuneTarget::OpenAi,
        );
        assert!(r.errors[0].message.contains("invalid UTF-8"), "{r}");
    }

    #[test]
    fn weight_zero_and_crlf() {
        let w0 = r#"{"messages":[{"role":"user","content":"q"},{"role":"assistant","content":"a","weight":0},{"role":"user","content":"q2"},{"role":"assistant","content":"b"}]}"#;
        let text = format!("{}{w0}\r\n", good_file(10));
        let r = check(text.as_bytes(), FinetuneTarget::OpenAi);
        assert!(r.is_valid(), "{r}");
        assert!(r.warnings.iter().any(|w| w.message.contains("CRLF")));
    }
}
