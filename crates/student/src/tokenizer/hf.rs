//! Hugging Face tokenizer directories: loading and saving.
//!
//! Loading follows transformers 5's `from_pretrained` for a directory with a `tokenizer.json`:
//! the backend comes from `tokenizer.json` as is (its post-processor decides bos/eos; the
//! config's `add_bos_token`/`add_eos_token` are dropped), special tokens come from
//! `tokenizer_config.json` (or the legacy `special_tokens_map.json`), and template files
//! (`chat_template.jinja`, `additional_chat_templates/*.jinja`) replace the config's `chat_template`.
//!
//! Saving writes the template both into `tokenizer_config.json` (what transformers 4 reads) and
//! into `chat_template.jinja` (what transformers 5 reads first), so either version sees the same one.

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::chat::{ChatTemplate, DEFAULT_TEMPLATE};
use super::{Error, Parts, Result, SpecialTokens, Tokenizer};

const TOKENIZER_FILE: &str = "tokenizer.json";
const CONFIG_FILE: &str = "tokenizer_config.json";
const SPECIAL_TOKENS_MAP_FILE: &str = "special_tokens_map.json";
const GENERATION_CONFIG_FILE: &str = "generation_config.json";
const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
const CHAT_TEMPLATE_DIR: &str = "additional_chat_templates";

/// `tokenizer_config.json` keys this module reads and rewrites; any other key is kept as found.
const MANAGED_KEYS: [&str; 8] = [
    "bos_token",
    "eos_token",
    "unk_token",
    "pad_token",
    "add_bos_token",
    "add_eos_token",
    "chat_template",
    "model_max_length",
];

/// transformers writes `int(1e30)` for "no limit"; anything this large means the same.
const UNLIMITED_LENGTH: f64 = 1e18;

pub(super) fn from_hf_dir(dir: &Path) -> Result<Tokenizer> {
    let tokenizer_path = dir.join(TOKENIZER_FILE);
    let mut inner =
        tokenizers::Tokenizer::from_file(&tokenizer_path).map_err(|source| Error::TokenizerFile {
            path: tokenizer_path.clone(),
            source,
        })?;
    // transformers only truncates or pads when a call asks for it.
    inner
        .with_truncation(None)
        .map_err(|source| Error::TokenizerFile {
            path: tokenizer_path.clone(),
            source,
        })?;
    inner.with_padding(None);

    let config_path = dir.join(CONFIG_FILE);
    let mut config = read_object(&config_path)?.unwrap_or_default();
    let legacy_path = dir.join(SPECIAL_TOKENS_MAP_FILE);
    let legacy = read_object(&legacy_path)?.unwrap_or_default();

    let token = |name: &str| -> Result<Option<String>> {
        match config.get(name) {
            Some(value) => token_text(&config_path, name, value),
            None => legacy
                .get(name)
                .map_or(Ok(None), |value| token_text(&legacy_path, name, value)),
        }
    };
    let special = SpecialTokens {
        bos: token("bos_token")?,
        eos: token("eos_token")?,
        unk: token("unk_token")?,
        pad: token("pad_token")?,
    };
    let flag = |key: &str| -> Result<bool> {
        match config.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(config_error(
                &config_path,
                key,
                format!("expected a bool, found {other}"),
            )),
        }
    };
    let (add_bos, add_eos) = (flag("add_bos_token")?, flag("add_eos_token")?);
    let model_max_length = match config.get("model_max_length") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (_, Some(v)) if v >= UNLIMITED_LENGTH => None,
            (Some(v), _) => Some(v),
            _ => {
                return Err(config_error(
                    &config_path,
                    "model_max_length",
                    format!("{n} is not a length"),
                ));
            }
        },
        Some(other) => {
            return Err(config_error(
                &config_path,
                "model_max_length",
                format!("expected a number, found {other}"),
            ));
        }
    };

    let template = match read_template_files(dir)? {
        Some(template) => Some(template),
        None => match config.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(value) => {
                Some(template_from_config(&config_path, value).map_err(|e| e.in_file(&config_path))?)
            }
        },
    };
    let chat_template = template.map(|t| t.with_special_tokens(special.clone()));

    let mut eos_ids: Vec<u32> = special
        .eos
        .as_deref()
        .and_then(|t| inner.token_to_id(t))
        .into_iter()
        .collect();
    eos_ids.extend(generation_eos_ids(dir)?);

    config.retain(|key, _| !MANAGED_KEYS.contains(&key.as_str()));
    Tokenizer::assemble(Parts {
        inner,
        special,
        add_bos,
        add_eos,
        eos_ids,
        chat_template,
        model_max_length,
        config_extra: config,
    })
}

pub(super) fn save_hf(tokenizer: &Tokenizer, dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;

    let json = tokenizer.inner.to_string(true).map_err(Error::Tokenizers)?;
    write_atomic(&dir.join(TOKENIZER_FILE), json.as_bytes())?;

    let mut config = tokenizer.config_extra.clone();
    // transformers 4 and 5 both load `PreTrainedTokenizerFast` straight from tokenizer.json.
    config
        .entry("tokenizer_class")
        .or_insert_with(|| "PreTrainedTokenizerFast".into());
    config
        .entry("clean_up_tokenization_spaces")
        .or_insert(Value::Bool(false));
    config.insert("add_bos_token".into(), tokenizer.add_bos.into());
    config.insert("add_eos_token".into(), tokenizer.add_eos.into());
    for (name, token) in tokenizer.special.iter() {
        config.insert(name.into(), token.into());
    }
    if let Some(length) = tokenizer.model_max_length {
        config.insert("model_max_length".into(), length.into());
    }
    if let Some(template) = &tokenizer.chat_template {
        config.insert("chat_template".into(), template.to_config_value());
    }
    let mut config = serde_json::to_string_pretty(&Value::Object(config)).map_err(|source| Error::Json {
        path: dir.join(CONFIG_FILE),
        source,
    })?;
    config.push('\n');
    write_atomic(&dir.join(CONFIG_FILE), config.as_bytes())?;

    write_template_files(tokenizer.chat_template.as_ref(), dir)
}

/// `chat_template.jinja` (the default) and `additional_chat_templates/<name>.jinja`, if any.
fn read_template_files(dir: &Path) -> Result<Option<ChatTemplate>> {
    let mut templates = Vec::new();
    let default_path = dir.join(CHAT_TEMPLATE_FILE);
    if let Some(source) = read_optional(&default_path)? {
        templates.push((DEFAULT_TEMPLATE.to_owned(), source));
    }
    let extra_dir = dir.join(CHAT_TEMPLATE_DIR);
    if extra_dir.is_dir() {
        let io = |source| Error::Io {
            path: extra_dir.clone(),
            source,
        };
        let mut extra = Vec::new();
        for entry in fs::read_dir(&extra_dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".jinja"));
            if let Some(name) = name {
                let source = fs::read_to_string(&path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                extra.push((name.to_owned(), source));
            }
        }
        // Directory order is arbitrary; sort so that loading is deterministic.
        extra.sort();
        templates.extend(extra);
    }
    let built = match templates.len() {
        0 => return Ok(None),
        1 if templates[0].0 == DEFAULT_TEMPLATE => ChatTemplate::new(templates.remove(0).1),
        _ => ChatTemplate::named(templates),
    };
    built.map(Some).map_err(|e| match &e {
        Error::Template { name, .. } if name == DEFAULT_TEMPLATE => e.in_file(&default_path),
        Error::Template { name, .. } => {
            let path = extra_dir.join(format!("{name}.jinja"));
            e.in_file(&path)
        }
        _ => e,
    })
}

fn write_template_files(template: Option<&ChatTemplate>, dir: &Path) -> Result<()> {
    let default_path = dir.join(CHAT_TEMPLATE_FILE);
    match template.and_then(|t| t.source(DEFAULT_TEMPLATE)) {
        Some(source) => write_atomic(&default_path, source.as_bytes())?,
        // A stale file would otherwise win over the config when transformers 5 loads the directory.
        None if default_path.exists() => {
            fs::remove_file(&default_path).map_err(|source| Error::Io {
                path: default_path.clone(),
                source,
            })?;
        }
        None => {}
    }
    let Some(template) = template else { return Ok(()) };
    for name in template.names().filter(|n| *n != DEFAULT_TEMPLATE) {
        let safe = !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
        if !safe {
            return Err(config_error(
                &dir.join(CONFIG_FILE),
                "chat_template",
                format!("unsafe template name {name:?}"),
            ));
        }
        let extra_dir = dir.join(CHAT_TEMPLATE_DIR);
        fs::create_dir_all(&extra_dir).map_err(|source| Error::Io {
            path: extra_dir.clone(),
            source,
        })?;
        let source = template.source(name).unwrap_or_default();
        write_atomic(&extra_dir.join(format!("{name}.jinja")), source.as_bytes())?;
    }
    Ok(())
}

/// The config's `chat_template`: a string, or a list of `{"name": …, "template": …}`.
fn template_from_config(path: &Path, value: &Value) -> Result<ChatTemplate> {
    match value {
        Value::String(source) => ChatTemplate::new(source.clone()),
        Value::Array(items) => {
            let named = items
                .iter()
                .map(|item| match (item.get("name"), item.get("template")) {
                    (Some(Value::String(name)), Some(Value::String(template))) => {
                        Ok((name.clone(), template.clone()))
                    }
                    _ => Err(config_error(
                        path,
                        "chat_template",
                        "list items must be {\"name\", \"template\"} strings".into(),
                    )),
                })
                .collect::<Result<Vec<_>>>()?;
            ChatTemplate::named(named)
        }
        other => Err(config_error(
            path,
            "chat_template",
            format!("expected a string or a list, found {other}"),
        )),
    }
}

/// A special token in a config: a string, an `AddedToken` object (`{"content": …}`), or null.
fn token_text(path: &Path, key: &str, value: &Value) -> Result<Option<String>> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Object(map) => match map.get("content") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            _ => Err(config_error(
                path,
                key,
                "an added-token object needs a string `content`".into(),
            )),
        },
        other => Err(config_error(
            path,
            key,
            format!("expected a token, found {other}"),
        )),
    }
}

/// `eos_token_id` of `generation_config.json`: one id or a list of ids.
fn generation_eos_ids(dir: &Path) -> Result<Vec<u32>> {
    let path = dir.join(GENERATION_CONFIG_FILE);
    let Some(config) = read_object(&path)? else {
        return Ok(Vec::new());
    };
    let as_id = |v: &Value| v.as_u64().and_then(|id| u32::try_from(id).ok());
    let bad = || {
        config_error(
            &path,
            "eos_token_id",
            "expected a token id or a list of them".into(),
        )
    };
    match config.get("eos_token_id") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(|v| as_id(v).ok_or_else(bad)).collect(),
        Some(v) => as_id(v).map(|id| vec![id]).ok_or_else(bad),
    }
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn read_object(path: &Path) -> Result<Option<Map<String, Value>>> {
    let Some(text) = read_optional(path)? else {
        return Ok(None);
    };
    match serde_json::from_str(&text).map_err(|source| Error::Json {
        path: path.to_path_buf(),
        source,
    })? {
        Value::Object(map) => Ok(Some(map)),
        _ => Err(config_error(path, "", "expected a JSON object".into())),
    }
}

fn config_error(path: &Path, key: &str, reason: String) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        key: key.to_owned(),
        reason,
    }
}

/// Writes through a temporary file and a rename, so a crash never leaves a half-written file.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp: PathBuf = path.to_path_buf();
    tmp.as_mut_os_string().push(".tmp");
    fs::write(&tmp, bytes).map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    fs::rename(&tmp, path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}
