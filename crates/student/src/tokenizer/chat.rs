//! Hugging Face chat templates, rendered with minijinja the way transformers renders them
//! (the environment is in `jinja.rs`).
//!
//! As in transformers' `apply_chat_template`, the context holds `messages`, `tools` and
//! `documents` (none here), `add_generation_prompt` and the named special tokens
//! (`bos_token`, `eos_token`, …).

use std::collections::BTreeMap;
use std::fmt;

use minijinja::Environment;
use minijinja::value::{Serde, Value};
use serde::{Deserialize, Serialize};

use super::{Error, Result, SpecialTokens, jinja};

/// The name transformers gives the template used when none is asked for.
pub const DEFAULT_TEMPLATE: &str = "default";

/// The ChatML template transformers used as its class default (`<|im_start|>role\n…<|im_end|>\n`).
///
/// distill uses it only when a model ships no template of its own (see
/// [`Tokenizer::render_chat`](super::Tokenizer::render_chat)); it is never saved with a model.
pub const CHATML_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// One chat message: a role (`system`, `user`, `assistant`, …) and its text.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// Who speaks.
    pub role: String,
    /// What is said.
    pub content: String,
}

impl Message {
    /// A message with any role.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
    /// A system message.
    pub fn system(content: impl Into<String>) -> Self {
        Self::new("system", content)
    }
    /// A user message.
    pub fn user(content: impl Into<String>) -> Self {
        Self::new("user", content)
    }
    /// An assistant message.
    pub fn assistant(content: impl Into<String>) -> Self {
        Self::new("assistant", content)
    }
}

/// A dataset's message, with its role spelled as chat templates expect (`system`, `user`, …).
impl From<&distill_data::Message> for Message {
    fn from(message: &distill_data::Message) -> Self {
        Self::new(message.role.as_str(), message.content.clone())
    }
}

/// A model's chat template(s), compiled once.
///
/// A model has either one template, or several named ones (`tokenizer_config.json` may hold a list
/// of `{name, template}`); [`render`](Self::render) uses the one named `default`, as transformers does.
#[derive(Clone)]
pub struct ChatTemplate {
    templates: Vec<(String, String)>,
    single: bool,
    special: SpecialTokens,
    env: Environment<'static>,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("names", &self.names().collect::<Vec<_>>())
            .field("special", &self.special)
            .finish()
    }
}

impl ChatTemplate {
    /// One template, used by default.
    pub fn new(source: impl Into<String>) -> Result<Self> {
        Self::build(vec![(DEFAULT_TEMPLATE.to_owned(), source.into())], true)
    }

    /// Several named templates; [`render`](Self::render) uses the one named `default`.
    pub fn named(templates: Vec<(String, String)>) -> Result<Self> {
        Self::build(templates, false)
    }

    /// The ChatML fallback ([`CHATML_TEMPLATE`]).
    pub fn chatml() -> Self {
        // The constant is known to compile (checked by a unit test).
        Self::new(CHATML_TEMPLATE).unwrap_or_else(|_| unreachable!("the ChatML template compiles"))
    }

    /// Sets the special tokens that templates see as `bos_token`, `eos_token`, `unk_token` and `pad_token`.
    pub fn with_special_tokens(mut self, special: SpecialTokens) -> Self {
        self.special = special;
        self
    }

    fn build(templates: Vec<(String, String)>, single: bool) -> Result<Self> {
        let mut env = jinja::environment().map_err(|source| Error::Template {
            name: DEFAULT_TEMPLATE.into(),
            source,
        })?;
        for (name, source) in &templates {
            env.add_template_owned(name.clone(), source.clone())
                .map_err(|source| Error::Template {
                    name: name.clone(),
                    source,
                })?;
        }
        Ok(Self {
            templates,
            single,
            special: SpecialTokens::default(),
            env,
        })
    }

    /// The names of the templates.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.templates.iter().map(|(name, _)| name.as_str())
    }

    /// The source of the template named `name`.
    pub fn source(&self, name: &str) -> Option<&str> {
        self.templates
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_str())
    }

    /// The special tokens the templates see.
    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    /// Renders `messages` with the default template. With `add_generation_prompt`, the text ends
    /// with the prompt for the assistant's reply (if the template supports it).
    ///
    /// Messages are anything that serializes to `{role, content, …}`, such as [`Message`].
    pub fn render<M: Serialize>(&self, messages: &[M], add_generation_prompt: bool) -> Result<String> {
        if self.source(DEFAULT_TEMPLATE).is_none() {
            return Err(Error::NoDefaultTemplate {
                names: self.names().map(str::to_owned).collect(),
            });
        }
        self.render_named(DEFAULT_TEMPLATE, messages, add_generation_prompt)
    }

    /// Renders `messages` with the template named `name`.
    pub fn render_named<M: Serialize>(
        &self,
        name: &str,
        messages: &[M],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template_error = |source| Error::Template {
            name: name.to_owned(),
            source,
        };
        let template = self.env.get_template(name).map_err(template_error)?;
        // Like transformers' `special_tokens_map`, tokens a model lacks are left undefined.
        let mut ctx: BTreeMap<String, Value> = self
            .special
            .iter()
            .map(|(name, token)| (name.to_owned(), Value::from(token)))
            .collect();
        ctx.insert("messages".into(), Value::from(Serde(messages)));
        ctx.insert("add_generation_prompt".into(), Value::from(add_generation_prompt));
        ctx.insert("tools".into(), Value::from(()));
        ctx.insert("documents".into(), Value::from(()));
        template.render(Value::from(ctx)).map_err(template_error)
    }

    /// The form `tokenizer_config.json` stores: a string, or a list of `{name, template}`.
    pub(super) fn to_config_value(&self) -> serde_json::Value {
        if self.single {
            serde_json::Value::String(self.templates[0].1.clone())
        } else {
            self.templates
                .iter()
                .map(|(name, template)| serde_json::json!({ "name": name, "template": template }))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render_str(source: &str, value: impl Serialize) -> String {
        let template = ChatTemplate::new(source).unwrap();
        template
            .env
            .get_template(DEFAULT_TEMPLATE)
            .unwrap()
            .render(Value::from(Serde(&value)))
            .unwrap()
    }

    #[test]
    fn chatml_compiles_and_renders() {
        let out = ChatTemplate::chatml()
            .render(&[Message::user("hi")], true)
            .unwrap();
        assert_eq!(out, "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
    }

    #[test]
    fn tojson_matches_json_dumps() {
        // Expected strings from Python 3.11 json.dumps with the same arguments. A struct keeps
        // its field order (serde_json's maps here are sorted), as Python dicts keep theirs.
        #[derive(Serialize)]
        struct Unsorted {
            b: serde_json::Value,
            a: &'static str,
            c: serde_json::Value,
        }
        let v = Unsorted {
            b: serde_json::json!([1, 2.5, null, true]),
            a: "é\"\n<tag>\u{1}",
            c: serde_json::json!({}),
        };
        assert_eq!(
            render_str("{{ v|tojson }}", std::collections::HashMap::from([("v", v)])),
            r#"{"b": [1, 2.5, null, true], "a": "é\"\n<tag>\u0001", "c": {}}"#
        );
        assert_eq!(
            render_str(
                "{{ v|tojson(indent=2) }}",
                serde_json::json!({ "v": {"a": [1, []]} })
            ),
            "{\n  \"a\": [\n    1,\n    []\n  ]\n}"
        );
        assert_eq!(
            render_str(
                "{{ v|tojson(ensure_ascii=true, sort_keys=true) }}",
                serde_json::json!({ "v": {"z": "é😀", "a": 1} })
            ),
            r#"{"a": 1, "z": "\u00e9\ud83d\ude00"}"#
        );
        assert_eq!(
            render_str(
                "{{ v|tojson(separators=[',', ':']) }}",
                serde_json::json!({ "v": {"a": [1, 2]} })
            ),
            r#"{"a":[1,2]}"#
        );
    }

    #[test]
    fn pycompat_methods_and_loop_controls() {
        let out = render_str(
            "{% for x in xs %}{% if x.startswith('#') %}{% continue %}{% endif %}{{ x.strip().upper() }};{% endfor %}",
            serde_json::json!({ "xs": ["  a ", "#skip", "b"] }),
        );
        assert_eq!(out, "A;B;");
    }

    #[test]
    fn raise_exception_is_an_error() {
        let template = ChatTemplate::new("{{ raise_exception('roles must alternate') }}").unwrap();
        let err = template.render(&[Message::user("x")], false).unwrap_err();
        assert!(matches!(err, Error::Template { .. }), "{err}");
        let cause = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            cause.is_some_and(|c| c.contains("roles must alternate")),
            "{err:?}"
        );
    }

    #[test]
    fn named_templates_need_a_default() {
        let named = ChatTemplate::named(vec![("tool_use".into(), "x".into())]).unwrap();
        assert!(matches!(
            named.render(&[Message::user("a")], false),
            Err(Error::NoDefaultTemplate { .. })
        ));
        assert_eq!(
            named
                .render_named("tool_use", &[Message::user("a")], false)
                .unwrap(),
            "x"
        );
    }

    #[test]
    fn syntax_errors_name_the_template() {
        let err = ChatTemplate::new("{% for %}").unwrap_err();
        assert!(
            matches!(err, Error::Template { ref name, .. } if name == DEFAULT_TEMPLATE),
            "{err}"
        );
    }
}
