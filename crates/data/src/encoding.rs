//! The three JSONL encodings of an [`Example`], their detection, and line-level codecs.
//!
//! | encoding | one line | keeps |
//! |---|---|---|
//! | [`Encoding::Lab`] | `{"prompt": …, "response": …}` | the user prompt and the response |
//! | [`Encoding::Chat`] | `{"messages": [system?, user, assistant]}` | all messages |
//! | [`Encoding::Full`] | `{"format_version": 1, "id": …, …}` | everything |
//!
//! Detection looks at the keys of a line: `format_version` means full, otherwise `messages`
//! means chat, otherwise `prompt` and `response` mean lab.

use std::fmt;

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};

use crate::example::{Example, Message, Role};

/// A JSONL encoding of examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// The lab manual's `{"prompt": …, "response": …}` pairs.
    Lab,
    /// OpenAI / Azure OpenAI chat fine-tuning lines, `{"messages": [...]}`, whose last message
    /// is the assistant's response.
    Chat,
    /// The full format: a superset with id, teacher metadata, logprobs, split and metadata.
    Full,
}

impl Encoding {
    /// A short name: `lab`, `chat` or `full`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Lab => "lab",
            Encoding::Chat => "chat",
            Encoding::Full => "full",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let long = match self {
            Encoding::Lab => "lab prompt/response",
            Encoding::Chat => "chat fine-tuning",
            Encoding::Full => "full distill",
        };
        f.write_str(long)
    }
}

/// Options for [`encode_line`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EncodeOptions {
    /// The lab encoding has no system prompt. When false (the default), writing an example
    /// with a system message as lab is an error; when true, system messages are dropped.
    pub drop_system_prompt: bool,
}

/// Why a line could not be decoded, before a location is attached.
#[derive(Debug)]
pub(crate) enum DecodeError {
    Json(serde_json::Error),
    Unknown(&'static str),
    Invalid(String),
    Mixed(Encoding),
}

#[derive(Deserialize)]
struct Probe {
    format_version: Option<IgnoredAny>,
    messages: Option<IgnoredAny>,
    prompt: Option<IgnoredAny>,
    response: Option<IgnoredAny>,
}

/// Works out which encoding a line uses, looking only at its top-level keys.
pub(crate) fn detect(line: &str) -> Result<Encoding, DecodeError> {
    let first = line.bytes().find(|b| !b.is_ascii_whitespace());
    if first != Some(b'{') {
        // Let serde_json describe what is there instead (it gives a precise column).
        return match serde_json::from_str::<IgnoredAny>(line) {
            Err(e) => Err(DecodeError::Json(e)),
            Ok(_) => Err(DecodeError::Unknown("not a JSON object")),
        };
    }
    let p: Probe = serde_json::from_str(line).map_err(DecodeError::Json)?;
    match p {
        Probe {
            format_version: Some(_),
            ..
        } => Ok(Encoding::Full),
        Probe {
            messages: Some(_), ..
        } => Ok(Encoding::Chat),
        Probe {
            prompt: Some(_),
            response: Some(_),
            ..
        } => Ok(Encoding::Lab),
        Probe {
            prompt: Some(_),
            response: None,
            ..
        } => Err(DecodeError::Unknown("it has \"prompt\" but no \"response\"")),
        _ => Err(DecodeError::Unknown(
            "no \"format_version\", \"messages\" or \"prompt\"/\"response\" key",
        )),
    }
}

#[derive(Serialize, Deserialize)]
struct LabLine<S> {
    prompt: S,
    response: S,
}

#[derive(Serialize, Deserialize)]
struct ChatLine<M> {
    messages: M,
}

/// Decodes a line known (or expected) to be in `encoding`. If it fails and the line is in
/// another encoding, says so instead of reporting a confusing type error.
pub(crate) fn decode(line: &str, encoding: Encoding) -> Result<Example, DecodeError> {
    match decode_as(line, encoding) {
        Ok(e) => Ok(e),
        Err(err) => match detect(line) {
            Ok(other) if other != encoding => Err(DecodeError::Mixed(other)),
            _ => Err(err),
        },
    }
}

fn decode_as(line: &str, encoding: Encoding) -> Result<Example, DecodeError> {
    match encoding {
        Encoding::Full => serde_json::from_str::<Example>(line).map_err(DecodeError::Json),
        Encoding::Lab => {
            let l: LabLine<String> = serde_json::from_str(line).map_err(DecodeError::Json)?;
            Ok(Example::new(vec![Message::user(l.prompt)], l.response))
        }
        Encoding::Chat => {
            let l: ChatLine<Vec<Message>> = serde_json::from_str(line).map_err(DecodeError::Json)?;
            let mut messages = l.messages;
            let response = match messages.pop() {
                Some(m) if m.role == Role::Assistant => m.content,
                Some(m) => {
                    return Err(DecodeError::Invalid(format!(
                        "the last message is {}, but a chat example must end with the assistant's \
                         response",
                        m.role
                    )));
                }
                None => return Err(DecodeError::Invalid("\"messages\" is empty".into())),
            };
            match messages.last() {
                Some(m) if m.role == Role::User => {}
                _ => {
                    return Err(DecodeError::Invalid(
                        "the assistant's response must follow a user message".into(),
                    ));
                }
            }
            Ok(Example::new(messages, response))
        }
    }
}

/// Appends one line (with its `\n`) encoding `example` as `encoding` to `out`.
///
/// Fails with [`crate::Error::NotRepresentable`] when the encoding cannot hold the prompt (the
/// lab encoding holds exactly one user message), and with [`crate::Error::InvalidExample`]
/// when the example breaks a rule of the format.
pub fn encode_line(
    example: &Example,
    encoding: Encoding,
    options: EncodeOptions,
    out: &mut Vec<u8>,
) -> crate::Result<()> {
    example.check().map_err(|reason| crate::Error::InvalidExample {
        id: example.id.clone(),
        reason,
    })?;
    let not = |reason| crate::Error::NotRepresentable {
        id: example.id.clone(),
        encoding,
        reason,
    };
    // Writing into a Vec cannot fail for these types, which hold only strings and numbers
    // checked to be finite; map it anyway rather than unwrap.
    let json = |source| crate::Error::Serialize {
        id: example.id.clone(),
        source,
    };
    match encoding {
        Encoding::Full => serde_json::to_writer(&mut *out, example).map_err(json)?,
        Encoding::Lab => {
            let mut users = example.messages.iter().filter(|m| m.role == Role::User);
            let prompt = users.next().map(|m| m.content.as_str()).unwrap_or_default();
            if users.next().is_some() || example.messages.iter().any(|m| m.role == Role::Assistant) {
                return Err(not("the lab encoding holds a single user turn"));
            }
            if !options.drop_system_prompt && example.messages.iter().any(|m| m.role == Role::System) {
                return Err(not(
                    "the lab encoding has no system prompt (set drop_system_prompt)",
                ));
            }
            serde_json::to_writer(
                &mut *out,
                &LabLine {
                    prompt,
                    response: example.response.as_str(),
                },
            )
            .map_err(json)?;
        }
        Encoding::Chat => {
            #[derive(Serialize)]
            struct MsgRef<'a> {
                role: Role,
                content: &'a str,
            }
            let msgs: Vec<MsgRef<'_>> = example
                .messages
                .iter()
                .map(|m| MsgRef {
                    role: m.role,
                    content: &m.content,
                })
                .chain([MsgRef {
                    role: Role::Assistant,
                    content: &example.response,
                }])
                .collect();
            serde_json::to_writer(&mut *out, &ChatLine { messages: msgs }).map_err(json)?;
        }
    }
    out.push(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_encoding() {
        assert_eq!(detect(r#"{"prompt":"a","response":"b"}"#).unwrap(), Encoding::Lab);
        assert_eq!(detect(r#"{"messages":[]}"#).unwrap(), Encoding::Chat);
        assert_eq!(
            detect(r#"{"format_version":1,"messages":[]}"#).unwrap(),
            Encoding::Full
        );
        assert!(matches!(
            detect(r#"{"prompt":"a"}"#),
            Err(DecodeError::Unknown(_))
        ));
        assert!(matches!(
            detect("[1,2]"),
            Err(DecodeError::Unknown("not a JSON object"))
        ));
        assert!(matches!(detect("{\"a\":"), Err(DecodeError::Json(_))));
    }

    #[test]
    fn chat_needs_assistant_after_user() {
        let bad = r#"{"messages":[{"role":"user","content":"q"}]}"#;
        assert!(matches!(
            decode(bad, Encoding::Chat),
            Err(DecodeError::Invalid(_))
        ));
        let bad = r#"{"messages":[{"role":"system","content":"s"},{"role":"assistant","content":"a"}]}"#;
        assert!(matches!(
            decode(bad, Encoding::Chat),
            Err(DecodeError::Invalid(_))
        ));
        let ok = r#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"q"},{"role":"assistant","content":"a","weight":1}]}"#;
        let e = decode(ok, Encoding::Chat).unwrap();
        assert_eq!(e.response, "a");
        assert_eq!(e.messages, vec![Message::system("s"), Message::user("q")]);
        assert_eq!(e.id, Example::id_for(&e.messages));
    }

    #[test]
    fn decode_reports_mixed_encodings() {
        let lab = r#"{"prompt":"a","response":"b"}"#;
        assert!(matches!(
            decode(lab, Encoding::Full),
            Err(DecodeError::Mixed(Encoding::Lab))
        ));
    }

    #[test]
    fn lab_refuses_system_prompt_unless_asked() {
        let e = Example::new(vec![Message::system("s"), Message::user("q")], "a");
        let mut out = Vec::new();
        let err = encode_line(&e, Encoding::Lab, EncodeOptions::default(), &mut out).unwrap_err();
        assert!(matches!(err, crate::Error::NotRepresentable { .. }));
        encode_line(
            &e,
            Encoding::Lab,
            EncodeOptions {
                drop_system_prompt: true,
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(out, b"{\"prompt\":\"q\",\"response\":\"a\"}\n");
    }

    #[test]
    fn chat_line_ends_with_assistant() {
        let e = Example::new(vec![Message::system("s"), Message::user("q")], "a");
        let mut out = Vec::new();
        encode_line(&e, Encoding::Chat, EncodeOptions::default(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"messages\":[{\"role\":\"system\",\"content\":\"s\"},{\"role\":\"user\",\"content\":\"q\"},\
             {\"role\":\"assistant\",\"content\":\"a\"}]}\n"
        );
    }
}
