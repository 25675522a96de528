//! The file formats that prompts are read from.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Prompt, PromptSource};
use crate::error::{Error, Location, Result, excerpt};
use crate::example::{Message, Metadata};
use crate::lines::LineReader;

/// Longest prompt line accepted: prompts are short, so 1 MiB is generous and bounds memory.
const MAX_PROMPT_LINE: usize = 1 << 20;

/// The lab prompt set: JSONL lines `{"prompt": "...", "category": "..."}` (category optional,
/// kept in metadata as `category`), e.g. `datasets/prompts/lab.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabPrompts {
    /// The JSONL file.
    pub path: PathBuf,
    /// A system message to put before each prompt.
    pub system: Option<String>,
}

/// Plain text, one prompt per line; blank lines are skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextLines {
    /// The text file.
    pub path: PathBuf,
    /// A system message to put before each prompt.
    pub system: Option<String>,
}

/// JSONL whose lines are objects with the prompt in a named string field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonlField {
    /// The JSONL file.
    pub path: PathBuf,
    /// The field that holds the prompt.
    pub field: String,
    /// A system message to put before each prompt.
    pub system: Option<String>,
}

/// A CSV file with a header row; the prompt is in the named column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvColumn {
    /// The CSV file.
    pub path: PathBuf,
    /// The header of the prompt column.
    pub column: String,
    /// A system message to put before each prompt.
    pub system: Option<String>,
}

/// The system prompt of [`MultipleChoiceTemplate::default`].
pub const DEFAULT_MC_SYSTEM_PROMPT: &str = "You answer multiple-choice questions. Reply with only the \
     letter of the correct choice, with no explanation.";

/// How a multiple-choice row becomes a prompt.
///
/// `user` may contain `{question}`, `{choices}` (one `X. text` line per choice) and `{labels}`
/// (e.g. `A, B, C, D or E`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipleChoiceTemplate {
    /// The system message.
    pub system: String,
    /// The user message template.
    pub user: String,
}

impl Default for MultipleChoiceTemplate {
    fn default() -> Self {
        MultipleChoiceTemplate {
            system: DEFAULT_MC_SYSTEM_PROMPT.to_owned(),
            user: "{question}\n\n{choices}\n\nAnswer with one letter ({labels}).".to_owned(),
        }
    }
}

/// Multiple-choice rows in CommonsenseQA shape, one JSON object per line:
/// `{"id", "question", "choices": {"label": [...], "text": [...]}, "answerKey"}` (the Hugging
/// Face layout). `choices` may also be a list of `{"label", "text"}` objects.
///
/// Each prompt's metadata holds `task: "multiple_choice"`, `answer_key` (when the row has one),
/// `choice_labels`, and `source_id` (the row's `id`), so that accuracy can be scored with
/// [`extract_choice`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipleChoice {
    /// The JSONL file.
    pub path: PathBuf,
    /// How rows are formatted.
    pub template: MultipleChoiceTemplate,
}

impl PromptSource for LabPrompts {
    fn describe(&self) -> String {
        format!("lab prompts {}", self.path.display())
    }

    fn load(&self) -> Result<Vec<Prompt>> {
        #[derive(Deserialize)]
        struct Row {
            prompt: String,
            #[serde(default)]
            category: Option<String>,
        }
        read_json_lines(&self.path, |at, line| {
            let row: Row = parse(at, line)?;
            let mut p = Prompt::from_text(self.system.as_deref(), row.prompt);
            if let Some(c) = row.category {
                p.metadata.insert("category".into(), c.into());
            }
            Ok(Some(p))
        })
    }
}

impl PromptSource for TextLines {
    fn describe(&self) -> String {
        format!("text prompts {}", self.path.display())
    }

    fn load(&self) -> Result<Vec<Prompt>> {
        each_line(&self.path, |at, line| {
            let text = std::str::from_utf8(line).map_err(|source| Error::InvalidUtf8 {
                at: Location {
                    column: Some(source.valid_up_to() as u64 + 1),
                    ..at.clone()
                },
                source,
            })?;
            let text = text.trim();
            Ok((!text.is_empty()).then(|| Prompt::from_text(self.system.as_deref(), text)))
        })
    }
}

impl PromptSource for JsonlField {
    fn describe(&self) -> String {
        format!("field {:?} of {}", self.field, self.path.display())
    }

    fn load(&self) -> Result<Vec<Prompt>> {
        read_json_lines(&self.path, |at, line| {
            let mut row: serde_json::Map<String, serde_json::Value> = parse(at, line)?;
            match row.remove(&self.field) {
                Some(serde_json::Value::String(s)) => Ok(Some(Prompt::from_text(self.system.as_deref(), s))),
                Some(other) => Err(Error::Invalid {
                    at: at.clone(),
                    reason: format!("field {:?} is {}, not a string", self.field, json_kind(&other)),
                }),
                None => Err(Error::Missing {
                    at: at.clone(),
                    what: format!("field {:?}", self.field),
                }),
            }
        })
    }
}

impl PromptSource for CsvColumn {
    fn describe(&self) -> String {
        format!("column {:?} of {}", self.column, self.path.display())
    }

    fn load(&self) -> Result<Vec<Prompt>> {
        let csv_err = |source| Error::Csv {
            path: self.path.clone(),
            source,
        };
        let mut rdr = csv::ReaderBuilder::new()
            .flexible(false)
            .from_path(&self.path)
            .map_err(csv_err)?;
        let headers = rdr.headers().map_err(csv_err)?;
        // A BOM before the first header is common in spreadsheet exports.
        let col = headers
            .iter()
            .position(|h| h.trim_start_matches('\u{feff}') == self.column)
            .ok_or_else(|| Error::Missing {
                at: Location {
                    path: self.path.clone(),
                    line: 1,
                    column: None,
                },
                what: format!(
                    "column {:?} (headers: {:?})",
                    self.column,
                    headers.iter().collect::<Vec<_>>()
                ),
            })?;
        let mut out = Vec::new();
        for rec in rdr.records() {
            let rec = rec.map_err(csv_err)?;
            let text = rec.get(col).unwrap_or_default().trim();
            if !text.is_empty() {
                out.push(Prompt::from_text(self.system.as_deref(), text));
            }
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Choices {
    Columns { label: Vec<String>, text: Vec<String> },
    Rows(Vec<Choice>),
}

#[derive(Deserialize)]
struct Choice {
    label: String,
    text: String,
}

impl PromptSource for MultipleChoice {
    fn describe(&self) -> String {
        format!("multiple-choice rows {}", self.path.display())
    }

    fn load(&self) -> Result<Vec<Prompt>> {
        #[derive(Deserialize)]
        struct Row {
            #[serde(default)]
            id: Option<String>,
            question: String,
            choices: Choices,
            #[serde(default, rename = "answerKey")]
            answer_key: Option<String>,
        }
        read_json_lines(&self.path, |at, line| {
            let row: Row = parse(at, line)?;
            let invalid = |reason: String| Error::Invalid {
                at: at.clone(),
                reason,
            };
            let (labels, texts) = match row.choices {
                Choices::Columns { label, text } => (label, text),
                Choices::Rows(rows) => rows.into_iter().map(|c| (c.label, c.text)).unzip(),
            };
            if labels.is_empty() || labels.len() != texts.len() {
                return Err(invalid(format!(
                    "choices have {} labels and {} texts",
                    labels.len(),
                    texts.len()
                )));
            }
            let answer = row.answer_key.filter(|k| !k.is_empty());
            if let Some(k) = &answer
                && !labels.contains(k)
            {
                return Err(invalid(format!(
                    "answerKey {k:?} is not one of the labels {labels:?}"
                )));
            }
            let choices: Vec<String> = labels
                .iter()
                .zip(&texts)
                .map(|(l, t)| format!("{l}. {t}"))
                .collect();
            let user = self
                .template
                .user
                .replace("{question}", row.question.trim())
                .replace("{choices}", &choices.join("\n"))
                .replace("{labels}", &or_list(&labels));
            let mut metadata = Metadata::new();
            metadata.insert("task".into(), "multiple_choice".into());
            if let Some(k) = answer {
                metadata.insert("answer_key".into(), k.into());
            }
            metadata.insert("choice_labels".into(), labels.into());
            if let Some(id) = row.id {
                metadata.insert("source_id".into(), id.into());
            }
            let mut p = Prompt::new(vec![
                Message::system(self.template.system.clone()),
                Message::user(user),
            ]);
            p.metadata = metadata;
            Ok(Some(p))
        })
    }
}

/// `A, B, C or D`.
fn or_list(labels: &[String]) -> String {
    match labels {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

/// The choice label a response gives, for scoring multiple-choice accuracy.
///
/// Rules, in order: the whole response (trimmed of spaces and of `()[].:*"'`) is a label;
/// the response starts with a label followed by `.`, `)`, `:` or `,`; or it contains
/// `answer is X` / `answer: X` (any case). Otherwise `None`: a response such as "A dog" is
/// ambiguous and does not count as the answer `A`.
pub fn extract_choice<'a>(response: &str, labels: &'a [String]) -> Option<&'a str> {
    let strip: &[char] = &[
        '(', ')', '[', ']', '.', ':', '*', '"', '\'', ' ', '\n', '\t', '\r',
    ];
    let core = response.trim_matches(strip);
    if let Some(l) = labels.iter().find(|l| l.as_str() == core) {
        return Some(l);
    }
    let start = response.trim_start().trim_start_matches(['(', '[', '*']);
    for l in labels {
        if let Some(rest) = start.strip_prefix(l.as_str())
            && rest.starts_with(['.', ')', ':', ',', ']'])
        {
            return Some(l);
        }
    }
    for key in ["answer is", "answer:"] {
        // The keys are ASCII, so a byte-wise case-insensitive match starts on a char boundary.
        let hay = response.as_bytes();
        let found = (0..hay.len().saturating_sub(key.len() - 1))
            .find(|&i| hay[i..i + key.len()].eq_ignore_ascii_case(key.as_bytes()));
        if let Some(i) = found {
            let tail = response[i + key.len()..].trim_start_matches(strip);
            for l in labels {
                if let Some(rest) = tail.strip_prefix(l.as_str())
                    && !rest.starts_with(|c: char| c.is_alphanumeric())
                {
                    return Some(l);
                }
            }
        }
    }
    None
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

fn parse<'a, T: Deserialize<'a>>(at: &Location, line: &'a [u8]) -> Result<T> {
    serde_json::from_slice(line).map_err(|source| Error::Json {
        at: Location {
            column: Some(source.column() as u64),
            ..at.clone()
        },
        excerpt: excerpt(line),
        source: source.into(),
    })
}

/// Calls `f` for each non-blank line of a JSONL file.
fn read_json_lines(
    path: &Path,
    mut f: impl FnMut(&Location, &[u8]) -> Result<Option<Prompt>>,
) -> Result<Vec<Prompt>> {
    each_line(path, |at, line| {
        if line.iter().all(u8::is_ascii_whitespace) {
            Ok(None)
        } else {
            f(at, line)
        }
    })
}

/// Calls `f` for each line of a file (BOM stripped, length capped), collecting the prompts.
fn each_line(
    path: &Path,
    mut f: impl FnMut(&Location, &[u8]) -> Result<Option<Prompt>>,
) -> Result<Vec<Prompt>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut lines = LineReader::new(BufReader::new(file), MAX_PROMPT_LINE);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    while let Some(info) = lines.next_line(&mut buf).map_err(|e| Error::io(path, e))? {
        let at = Location {
            path: path.to_path_buf(),
            line: info.number,
            column: None,
        };
        if info.too_long {
            return Err(Error::LineTooLong {
                at,
                limit: MAX_PROMPT_LINE,
            });
        }
        let line = if info.number == 1 {
            buf.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&buf)
        } else {
            &buf
        };
        if let Some(p) = f(&at, line)? {
            out.push(p);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::example::Role;

    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn lab_prompts_keep_category() {
        let d = tempfile::tempdir().unwrap();
        let path = file(
            &d,
            "lab.jsonl",
            "{\"prompt\":\"What is 2+2?\",\"category\":\"math\"}\n\n{\"prompt\":\"Hi\"}\n",
        );
        let src = LabPrompts {
            path,
            system: Some("Be brief.".into()),
        };
        let ps = src.load().unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(
            ps[0].messages,
            vec![Message::system("Be brief."), Message::user("What is 2+2?")]
        );
        assert_eq!(ps[0].metadata["category"], "math");
        assert!(ps[1].metadata.is_empty());
    }

    #[test]
    fn lab_prompts_errors_name_the_line() {
        let d = tempfile::tempdir().unwrap();
        let path = file(&d, "lab.jsonl", "{\"prompt\":\"a\"}\n{\"prompt\":3}\n");
        let e = LabPrompts { path, system: None }.load().unwrap_err();
        assert_eq!(e.location().unwrap().line, 2, "{e}");
        assert!(e.to_string().contains("lab.jsonl:2"), "{e}");
    }

    #[test]
    fn text_lines_skip_blanks_and_bom() {
        let d = tempfile::tempdir().unwrap();
        let path = file(&d, "p.txt", "\u{feff}first\r\n\n  second  \n");
        let ps = TextLines {
            path: path.clone(),
            system: None,
        }
        .load()
        .unwrap();
        let texts: Vec<&str> = ps.iter().map(|p| p.messages[0].content.as_str()).collect();
        assert_eq!(texts, vec!["first", "second"]);
        std::fs::write(&path, b"ok\nbad \xff\n").unwrap();
        let e = TextLines { path, system: None }.load().unwrap_err();
        assert!(
            matches!(e, Error::InvalidUtf8 { ref at, .. } if at.line == 2 && at.column == Some(5)),
            "{e}"
        );
    }

    #[test]
    fn jsonl_field_reads_named_field() {
        let d = tempfile::tempdir().unwrap();
        let path = file(&d, "p.jsonl", "{\"q\":\"one\",\"x\":1}\n{\"q\":\"two\"}\n");
        let src = JsonlField {
            path: path.clone(),
            field: "q".into(),
            system: None,
        };
        assert_eq!(src.load().unwrap().len(), 2);
        std::fs::write(&path, "{\"q\":\"one\"}\n{\"x\":1}\n").unwrap();
        let e = src.load().unwrap_err();
        assert!(matches!(e, Error::Missing { ref at, .. } if at.line == 2), "{e}");
        std::fs::write(&path, "{\"q\":[1]}\n").unwrap();
        assert!(src.load().unwrap_err().to_string().contains("an array"));
    }

    #[test]
    fn csv_column_reads_quoted_cells() {
        let d = tempfile::tempdir().unwrap();
        let path = file(
            &d,
            "p.csv",
            "id,prompt\n1,\"Hello, world\"\n2,\"multi\nline\"\n3,\n",
        );
        let src = CsvColumn {
            path: path.clone(),
            column: "prompt".into(),
            system: None,
        };
        let ps = src.load().unwrap();
        let texts: Vec<&str> = ps.iter().map(|p| p.messages[0].content.as_str()).collect();
        assert_eq!(texts, vec!["Hello, world", "multi\nline"]);
        let e = CsvColumn {
            column: "nope".into(),
            ..src.clone()
        }
        .load()
        .unwrap_err();
        assert!(e.to_string().contains("missing column \"nope\""), "{e}");
        std::fs::write(&path, "id,prompt\n1,a,extra\n").unwrap();
        assert!(matches!(src.load().unwrap_err(), Error::Csv { .. }));
    }

    #[test]
    fn multiple_choice_rows_become_letter_prompts() {
        let d = tempfile::tempdir().unwrap();
        let path = file(
            &d,
            "mc.jsonl",
            concat!(
                r#"{"id":"q1","question":"Where do fish live?","question_concept":"fish","choices":{"label":["A","B","C"],"text":["water","sky","desert"]},"answerKey":"A"}"#,
                "\n",
                r#"{"id":"q2","question":"Pick B","choices":[{"label":"A","text":"x"},{"label":"B","text":"y"}],"answerKey":""}"#,
                "\n"
            ),
        );
        let src = MultipleChoice {
            path: path.clone(),
            template: MultipleChoiceTemplate::default(),
        };
        let ps = src.load().unwrap();
        assert_eq!(ps.len(), 2);
        assert_eq!(ps[0].messages[0].role, Role::System);
        assert_eq!(
            ps[0].messages[1].content,
            "Where do fish live?\n\nA. water\nB. sky\nC. desert\n\nAnswer with one letter (A, B or C)."
        );
        assert_eq!(ps[0].metadata["answer_key"], "A");
        assert_eq!(ps[0].metadata["source_id"], "q1");
        assert_eq!(
            ps[0].metadata["choice_labels"],
            serde_json::json!(["A", "B", "C"])
        );
        assert!(!ps[1].metadata.contains_key("answer_key"));

        std::fs::write(
            &path,
            r#"{"question":"q","choices":{"label":["A"],"text":["x"]},"answerKey":"Z"}"#,
        )
        .unwrap();
        let e = src.load().unwrap_err();
        assert!(e.to_string().contains("answerKey \"Z\""), "{e}");
        std::fs::write(
            &path,
            r#"{"question":"q","choices":{"label":["A","B"],"text":["x"]}}"#,
        )
        .unwrap();
        assert!(
            src.load()
                .unwrap_err()
                .to_string()
                .contains("2 labels and 1 texts")
        );
    }

    #[test]
    fn extract_choice_rules() {
        let labels: Vec<String> = ["A", "B", "C", "D", "E"].iter().map(|s| s.to_string()).collect();
        let get = |r: &str| extract_choice(r, &labels);
        assert_eq!(get("B"), Some("B"));
        assert_eq!(get(" (C). "), Some("C"));
        assert_eq!(get("**D**"), Some("D"));
        assert_eq!(get("E. because fish swim"), Some("E"));
        assert_eq!(get("I think the answer is C, since"), Some("C"));
        assert_eq!(get("Answer: (B)"), Some("B"));
        assert_eq!(get("A dog would"), None);
        assert_eq!(get("The answer is Bob"), None);
        assert_eq!(get(""), None);
        // Text whose lowercase form has another length before the key does not break the search.
        assert_eq!(get("İİ ANSWER IS A"), Some("A"));
        assert_eq!(get("answer"), None);
    }
}
