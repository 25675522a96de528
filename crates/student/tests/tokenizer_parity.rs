//! Tokenizer and chat-template parity with transformers, on fixtures made by
//! `tests/fixtures/tokenizer/make_fixtures.py` (see its docstring for what each file holds).

#[path = "../../gguf/tests/support/chain.rs"]
mod chain;

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use distill_gguf::{GgufFile, Value};
use distill_student::tokenizer::{ChatTemplate, Error, Message, SpecialTokens, Tokenizer};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    len: usize,
    max_id: u32,
    vocab_hash: String,
    bos_token: Option<String>,
    eos_token: Option<String>,
    unk_token: Option<String>,
    pad_token: Option<String>,
    eos_token_id: u32,
    added_tokens: Vec<AddedToken>,
    cases: Vec<Case>,
    chats: Vec<Chat>,
}

#[derive(Deserialize, Debug, PartialEq)]
struct AddedToken {
    id: u32,
    content: String,
    special: bool,
    normalized: bool,
}

/// Left-out fields equal another one (see the fixture's `omitted`).
#[derive(Deserialize)]
struct Case {
    text: String,
    ids: Vec<u32>,
    ids_special: Option<Vec<u32>>,
    decoded: Option<String>,
    decoded_special_skipped: Option<String>,
    decoded_half: Option<String>,
}

impl Case {
    fn ids_special(&self) -> &[u32] {
        self.ids_special.as_deref().unwrap_or(&self.ids)
    }
    fn decoded(&self) -> &str {
        self.decoded.as_deref().unwrap_or(&self.text)
    }
    fn decoded_special_skipped(&self) -> &str {
        self.decoded_special_skipped.as_deref().unwrap_or(self.decoded())
    }
}

#[derive(Deserialize)]
struct Chat {
    messages: Vec<Message>,
    add_generation_prompt: bool,
    rendered: String,
    ids: Vec<u32>,
}

#[derive(Deserialize)]
struct Templates {
    templates: std::collections::HashMap<String, String>,
    bos_token: String,
    eos_token: String,
    renders: Vec<Render>,
}

#[derive(Deserialize)]
struct Render {
    template: String,
    messages: Vec<Message>,
    add_generation_prompt: bool,
    rendered: Option<String>,
    error: Option<String>,
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer")
}

fn load<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = fixture_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn smollm2() -> &'static Tokenizer {
    static TOKENIZER: OnceLock<Tokenizer> = OnceLock::new();
    TOKENIZER.get_or_init(|| Tokenizer::from_gguf_file(assets::smollm2_gguf()).expect("SmolLM2 tokenizer"))
}

fn smollm2_fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| load("smollm2.json"))
}

fn synthetic_gguf() -> GgufFile {
    GgufFile::read_header(fixture_dir().join("synthetic.gguf")).expect("synthetic.gguf")
}

fn synthetic() -> Tokenizer {
    Tokenizer::from_gguf(&synthetic_gguf()).expect("synthetic tokenizer")
}

/// Fails listing the first few differences, after counting them all.
fn report(what: &str, total: usize, failures: Vec<String>) {
    eprintln!("{what}: {}/{total} identical", total - failures.len());
    assert!(
        failures.is_empty(),
        "{what}: {} of {total} differ; first ones:\n{}",
        failures.len(),
        failures[..failures.len().min(5)].join("\n")
    );
}

fn check_ids(name: &str, tokenizer: &Tokenizer, fixture: &Fixture) {
    let mut failures = Vec::new();
    for case in &fixture.cases {
        let ids = tokenizer.encode(&case.text, false).unwrap();
        if ids != case.ids {
            failures.push(format!("{:?}: {ids:?} != {:?}", case.text, case.ids));
        }
        let ids = tokenizer.encode(&case.text, true).unwrap();
        if ids != case.ids_special() {
            failures.push(format!(
                "{:?} with special tokens: {ids:?} != {:?}",
                case.text,
                case.ids_special()
            ));
        }
    }
    report(
        &format!("{name} ids (plain and with special tokens)"),
        2 * fixture.cases.len(),
        failures,
    );
}

fn check_decode(name: &str, tokenizer: &Tokenizer, fixture: &Fixture) {
    let mut failures = Vec::new();
    let mut total = 0;
    for case in &fixture.cases {
        let mut check = |what: &str, got: String, want: &str| {
            total += 1;
            if got != want {
                failures.push(format!("{:?} {what}: {got:?} != {want:?}", case.text));
            }
        };
        check(
            "decode",
            tokenizer.decode(&case.ids, false).unwrap(),
            case.decoded(),
        );
        check(
            "decode skipping specials",
            tokenizer.decode(case.ids_special(), true).unwrap(),
            case.decoded_special_skipped(),
        );
        if let Some(half) = &case.decoded_half {
            check(
                "decode of the first half",
                tokenizer.decode(&case.ids[..case.ids.len() / 2], false).unwrap(),
                half,
            );
        }
    }
    report(&format!("{name} decodes"), total, failures);
}

fn check_chats(name: &str, tokenizer: &Tokenizer, fixture: &Fixture) {
    let mut failures = Vec::new();
    for chat in &fixture.chats {
        let rendered = tokenizer
            .render_chat(&chat.messages, chat.add_generation_prompt)
            .unwrap();
        if rendered != chat.rendered {
            failures.push(format!(
                "{} messages, prompt {}: {rendered:?} != {:?}",
                chat.messages.len(),
                chat.add_generation_prompt,
                chat.rendered
            ));
        }
        let ids = tokenizer.encode(&rendered, false).unwrap();
        if ids != chat.ids {
            failures.push(format!("ids of {rendered:?}: {ids:?} != {:?}", chat.ids));
        }
    }
    report(
        &format!("{name} chat renders and their ids"),
        2 * fixture.chats.len(),
        failures,
    );
}

fn check_metadata(tokenizer: &Tokenizer, fixture: &Fixture) {
    // `len(tokenizer)` counts distinct tokens; with duplicate tokens that is less than the ids in use.
    assert_eq!(tokenizer.vocab_size(), fixture.max_id as usize + 1);
    assert!(tokenizer.vocab_size() >= fixture.len);
    assert_eq!(tokenizer.vocab_hash(), fixture.vocab_hash);
    assert_eq!(tokenizer.eos_token_ids().first(), Some(&fixture.eos_token_id));
    let want = SpecialTokens {
        bos: fixture.bos_token.clone(),
        eos: fixture.eos_token.clone(),
        unk: fixture.unk_token.clone(),
        pad: fixture.pad_token.clone(),
    };
    assert_eq!(tokenizer.special_tokens(), &want);
    let mut added: Vec<AddedToken> = tokenizer
        .inner()
        .get_added_tokens_decoder()
        .into_iter()
        .map(|(id, t)| AddedToken {
            id,
            content: t.content,
            special: t.special,
            normalized: t.normalized,
        })
        .collect();
    added.sort_by_key(|t| t.id);
    assert_eq!(added, fixture.added_tokens);
}

#[test]
fn smollm2_ids_match_transformers() {
    let fixture = smollm2_fixture();
    assert!(
        fixture.cases.len() >= 1000,
        "the corpus has {} strings",
        fixture.cases.len()
    );
    check_ids("SmolLM2", smollm2(), fixture);
}

#[test]
fn smollm2_decodes_match_transformers() {
    check_decode("SmolLM2", smollm2(), smollm2_fixture());
}

#[test]
fn smollm2_chat_template_matches_transformers() {
    check_chats("SmolLM2", smollm2(), smollm2_fixture());
}

#[test]
fn smollm2_vocabulary_and_special_tokens_match_transformers() {
    let tokenizer = smollm2();
    check_metadata(tokenizer, smollm2_fixture());
    assert_eq!(tokenizer.vocab_size(), 49152);
    assert_eq!(tokenizer.bos_token_id(), Some(1));
    assert_eq!(tokenizer.pad_token_id(), Some(2));
    assert!(!tokenizer.adds_bos_token());
    assert_eq!(tokenizer.model_max_length(), Some(8192));
}

#[test]
fn synthetic_gguf_matches_transformers() {
    // Split regex (llama-bpe), bos and eos added, user-defined, mislabelled, respelled and duplicate tokens.
    let tokenizer = synthetic();
    let fixture: Fixture = load("synthetic.json");
    check_metadata(&tokenizer, &fixture);
    check_ids("synthetic", &tokenizer, &fixture);
    check_decode("synthetic", &tokenizer, &fixture);
    check_chats("synthetic", &tokenizer, &fixture);
    assert!(tokenizer.adds_bos_token() && tokenizer.adds_eos_token());
    // eos, then the GGUF's eot token.
    assert_eq!(tokenizer.eos_token_ids(), [1, 3]);
}

#[test]
fn chat_templates_render_like_jinja2() {
    let fixture: Templates = load("templates.json");
    let special = SpecialTokens {
        bos: Some(fixture.bos_token.clone()),
        eos: Some(fixture.eos_token.clone()),
        unk: None,
        pad: None,
    };
    let mut failures = Vec::new();
    for render in &fixture.renders {
        let template = ChatTemplate::new(fixture.templates[&render.template].clone())
            .unwrap()
            .with_special_tokens(special.clone());
        let got = template.render(&render.messages, render.add_generation_prompt);
        let label = format!(
            "{} ({} messages, prompt {})",
            render.template,
            render.messages.len(),
            render.add_generation_prompt
        );
        match (&got, &render.rendered, &render.error) {
            (Ok(got), Some(want), _) if got == want => {}
            (Err(e), _, Some(message)) if chain::chain_line(e).contains(message.as_str()) => {}
            _ => failures.push(format!(
                "{label}: got {got:?}, want {:?} / error {:?}",
                render.rendered, render.error
            )),
        }
    }
    report("chat template renders", fixture.renders.len(), failures);
}

#[test]
fn incremental_decoding_emits_whole_characters_and_adds_up() {
    let tokenizer = smollm2();
    let fixture = smollm2_fixture();
    let mut split_characters = 0;
    for case in &fixture.cases {
        for skip in [false, true] {
            let mut stream = tokenizer.incremental_decoder(skip);
            let mut text = String::new();
            for &id in case.ids_special() {
                match stream.step(id).unwrap() {
                    Some(piece) => {
                        // A held-back partial character would show up as a trailing U+FFFD.
                        assert!(
                            !piece.ends_with('\u{fffd}') || case.text.contains('\u{fffd}'),
                            "{:?}: {piece:?}",
                            case.text
                        );
                        text.push_str(&piece);
                    }
                    None => split_characters += 1,
                }
            }
            text.push_str(&stream.finish().unwrap());
            assert_eq!(
                text,
                tokenizer.decode(case.ids_special(), skip).unwrap(),
                "{:?}",
                case.text
            );
        }
    }
    // The corpus has emoji and CJK text whose bytes span several tokens.
    assert!(split_characters > 100, "only {split_characters} held-back steps");
}

#[test]
fn incremental_decoder_flushes_an_incomplete_character() {
    let tokenizer = smollm2();
    let ids = tokenizer.encode("a😀", false).unwrap();
    assert!(ids.len() > 2, "{ids:?}");
    let mut stream = tokenizer.incremental_decoder(false);
    let mut text = String::new();
    for &id in &ids[..ids.len() - 1] {
        text.extend(stream.step(id).unwrap());
    }
    assert_eq!(text, "a");
    assert_eq!(stream.finish().unwrap(), "\u{fffd}");
}

/// A directory under target/tmp that is kept, so `make_fixtures.py --check-saved` can load it.
fn save_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).unwrap();
    }
    dir
}

#[test]
fn save_hf_round_trip_keeps_ids_and_template() {
    let dir = save_dir("tokenizer_save_hf_smollm2");
    let original = smollm2();
    original.save_hf(&dir).unwrap();
    let reloaded = Tokenizer::from_hf_dir(&dir).unwrap();
    let fixture = smollm2_fixture();
    check_ids("SmolLM2 saved and reloaded", &reloaded, fixture);
    check_decode("SmolLM2 saved and reloaded", &reloaded, fixture);
    check_chats("SmolLM2 saved and reloaded", &reloaded, fixture);
    check_metadata(&reloaded, fixture);
    assert_eq!(reloaded.eos_token_ids(), original.eos_token_ids());
    assert_eq!(reloaded.model_max_length(), Some(8192));

    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap()).unwrap();
    assert_eq!(config["tokenizer_class"], "PreTrainedTokenizerFast");
    assert_eq!(config["eos_token"], "<|im_end|>");
    assert_eq!(
        config["chat_template"].as_str(),
        original.chat_template().and_then(|t| t.source("default"))
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("chat_template.jinja"))
            .ok()
            .as_deref(),
        config["chat_template"].as_str()
    );

    // Saving what was loaded from a directory writes the same files again.
    let again = save_dir("tokenizer_save_hf_smollm2_again");
    reloaded.save_hf(&again).unwrap();
    for file in ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"] {
        assert_eq!(
            std::fs::read(dir.join(file)).unwrap(),
            std::fs::read(again.join(file)).unwrap(),
            "{file}"
        );
    }
}

#[test]
fn save_hf_round_trip_keeps_bos_and_eos() {
    let dir = save_dir("tokenizer_save_hf_synthetic");
    synthetic().save_hf(&dir).unwrap();
    let reloaded = Tokenizer::from_hf_dir(&dir).unwrap();
    let fixture: Fixture = load("synthetic.json");
    check_ids("synthetic saved and reloaded", &reloaded, &fixture);
    check_chats("synthetic saved and reloaded", &reloaded, &fixture);
    check_metadata(&reloaded, &fixture);
    assert!(reloaded.adds_bos_token() && reloaded.adds_eos_token());
}

#[test]
fn hf_dir_reads_named_templates_and_generation_eos() {
    let dir = save_dir("tokenizer_hf_named_templates");
    smollm2().save_hf(&dir).unwrap();
    std::fs::remove_file(dir.join("chat_template.jinja")).unwrap();
    let config_path = dir.join("tokenizer_config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["chat_template"] = serde_json::json!([
        {"name": "default", "template": "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"},
        {"name": "tool_use", "template": "tools: {{ tools }}"},
    ]);
    config["eos_token"] = serde_json::json!({"content": "<|endoftext|>", "special": true});
    std::fs::write(&config_path, config.to_string()).unwrap();
    std::fs::write(dir.join("generation_config.json"), r#"{"eos_token_id": [0, 2]}"#).unwrap();

    let tokenizer = Tokenizer::from_hf_dir(&dir).unwrap();
    let template = tokenizer.chat_template().unwrap();
    assert_eq!(template.names().collect::<Vec<_>>(), ["default", "tool_use"]);
    assert_eq!(
        tokenizer
            .render_chat(&[Message::user("x"), Message::assistant("y")], true)
            .unwrap(),
        "<|im_start|>xy"
    );
    assert_eq!(
        template
            .render_named("tool_use", &[Message::user("x")], false)
            .unwrap(),
        "tools: None"
    );
    assert_eq!(tokenizer.special_tokens().eos.as_deref(), Some("<|endoftext|>"));
    assert_eq!(tokenizer.eos_token_ids(), [0, 2]);

    // Saved again, the extra template goes to additional_chat_templates/ and stays in the config.
    let again = save_dir("tokenizer_hf_named_templates_again");
    tokenizer.save_hf(&again).unwrap();
    assert_eq!(
        std::fs::read_to_string(again.join("additional_chat_templates/tool_use.jinja")).unwrap(),
        "tools: {{ tools }}"
    );
    let reloaded = Tokenizer::from_hf_dir(&again).unwrap();
    assert_eq!(
        reloaded.chat_template().unwrap().names().collect::<Vec<_>>(),
        ["default", "tool_use"]
    );
}

#[test]
fn chatml_fallback_only_without_a_model_template() {
    let mut tokenizer = smollm2().clone();
    let messages = [Message::system("S"), Message::user("U")];
    let own = tokenizer.render_chat(&messages, true).unwrap();
    tokenizer.set_chat_template(None);
    let fallback = tokenizer.render_chat(&messages, true).unwrap();
    assert_eq!(
        fallback,
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    );
    // SmolLM2's own template is ChatML too, but only adds a default system prompt when there is none.
    assert_eq!(own, fallback);
    assert_ne!(
        smollm2().render_chat(&[Message::user("U")], false).unwrap(),
        tokenizer.render_chat(&[Message::user("U")], false).unwrap()
    );
    // The fallback is never saved as if it were the model's.
    let dir = save_dir("tokenizer_no_template");
    tokenizer.save_hf(&dir).unwrap();
    assert!(!dir.join("chat_template.jinja").exists());
    assert!(Tokenizer::from_hf_dir(&dir).unwrap().chat_template().is_none());
}

#[test]
fn a_missing_tokenizer_json_names_the_file() {
    let dir = save_dir("tokenizer_missing");
    std::fs::create_dir_all(&dir).unwrap();
    let err = Tokenizer::from_hf_dir(&dir).unwrap_err();
    assert!(
        matches!(err, Error::TokenizerFile { ref path, .. } if path.ends_with("tokenizer.json")),
        "{err}"
    );
}

// ---- Hostile GGUF metadata: errors, never panics ----------------------------------------------

fn with_metadata(edit: impl FnOnce(&mut Vec<(String, Value)>)) -> Result<Tokenizer, Error> {
    let mut gguf = synthetic_gguf();
    edit(&mut gguf.metadata);
    Tokenizer::from_gguf(&gguf)
}

fn set(metadata: &mut Vec<(String, Value)>, key: &str, value: Value) {
    match metadata.iter_mut().find(|(k, _)| k == key) {
        Some((_, v)) => *v = value,
        None => metadata.push((key.to_owned(), value)),
    }
}

fn remove(metadata: &mut Vec<(String, Value)>, key: &str) {
    metadata.retain(|(k, _)| k != key);
}

fn array_of(metadata: &mut [(String, Value)], key: &str) -> Vec<Value> {
    metadata
        .iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_array())
        .unwrap()
        .to_vec()
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| Value::String((*s).to_owned())).collect())
}

#[test]
fn hostile_gguf_metadata_gives_errors() {
    type Edit = Box<dyn FnOnce(&mut Vec<(String, Value)>)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "no tokenizer model",
            Box::new(|m| remove(m, "tokenizer.ggml.model")),
        ),
        (
            "sentencepiece model",
            Box::new(|m| set(m, "tokenizer.ggml.model", Value::String("llama".into()))),
        ),
        (
            "model is a number",
            Box::new(|m| set(m, "tokenizer.ggml.model", Value::U32(2))),
        ),
        ("no tokens", Box::new(|m| remove(m, "tokenizer.ggml.tokens"))),
        (
            "empty tokens",
            Box::new(|m| set(m, "tokenizer.ggml.tokens", Value::Array(vec![]))),
        ),
        (
            "tokens not strings",
            Box::new(|m| set(m, "tokenizer.ggml.tokens", Value::Array(vec![Value::U8(1)]))),
        ),
        ("no merges", Box::new(|m| remove(m, "tokenizer.ggml.merges"))),
        (
            "merge of one token",
            Box::new(|m| set(m, "tokenizer.ggml.merges", strings(&["Ġt"]))),
        ),
        (
            "merge of three tokens",
            Box::new(|m| set(m, "tokenizer.ggml.merges", strings(&["a b c"]))),
        ),
        (
            "merge of unknown tokens",
            Box::new(|m| set(m, "tokenizer.ggml.merges", strings(&["zzzz yyyy"]))),
        ),
        // Both pieces are tokens but their concatenation is not: tokenizers itself would panic here.
        (
            "merge result not a token",
            Box::new(|m| set(m, "tokenizer.ggml.merges", strings(&["<|begin|> <|end|>"]))),
        ),
        (
            "bos id out of range",
            Box::new(|m| set(m, "tokenizer.ggml.bos_token_id", Value::U32(1_000_000))),
        ),
        (
            "eos id negative",
            Box::new(|m| set(m, "tokenizer.ggml.eos_token_id", Value::I32(-1))),
        ),
        (
            "pad id a string",
            Box::new(|m| set(m, "tokenizer.ggml.padding_token_id", Value::String("2".into()))),
        ),
        (
            "eot id out of range",
            Box::new(|m| set(m, "tokenizer.ggml.eot_token_id", Value::U64(u64::MAX))),
        ),
        (
            "add_bos not a bool",
            Box::new(|m| set(m, "tokenizer.ggml.add_bos_token", Value::U8(1))),
        ),
        (
            "pre not a string",
            Box::new(|m| set(m, "tokenizer.ggml.pre", Value::Bool(true))),
        ),
        (
            "types too short",
            Box::new(|m| {
                let types = array_of(m, "tokenizer.ggml.token_type");
                set(m, "tokenizer.ggml.token_type", Value::Array(types[1..].to_vec()));
            }),
        ),
        (
            "types not integers",
            Box::new(|m| {
                let mut types = array_of(m, "tokenizer.ggml.token_type");
                types[7] = Value::String("control".into());
                set(m, "tokenizer.ggml.token_type", Value::Array(types));
            }),
        ),
        (
            "chat template does not compile",
            Box::new(|m| set(m, "tokenizer.chat_template", Value::String("{% for %}".into()))),
        ),
        (
            "chat template not a string",
            Box::new(|m| set(m, "tokenizer.chat_template", Value::Array(vec![]))),
        ),
    ];
    for (what, edit) in cases {
        match with_metadata(edit) {
            Ok(_) => panic!("{what}: accepted"),
            Err(e) => eprintln!("{what}: {e}"),
        }
    }
}

#[test]
fn a_bad_chat_template_names_its_file() {
    let err =
        with_metadata(|m| set(m, "tokenizer.chat_template", Value::String("{% if %}".into()))).unwrap_err();
    assert!(
        matches!(err, Error::TemplateFile { ref path, .. } if path.ends_with("synthetic.gguf")),
        "{err}"
    );

    let dir = save_dir("tokenizer_bad_template");
    synthetic().save_hf(&dir).unwrap();
    std::fs::write(dir.join("chat_template.jinja"), "{{ unclosed").unwrap();
    let err = Tokenizer::from_hf_dir(&dir).unwrap_err();
    assert!(
        matches!(err, Error::TemplateFile { ref path, .. } if path.ends_with("chat_template.jinja")),
        "{err}"
    );
}

#[test]
fn unusual_but_valid_gguf_metadata_is_accepted() {
    // No token types, no special token ids, no template: a plain BPE without added tokens.
    let tokenizer = with_metadata(|m| {
        m.retain(|(k, _)| {
            !k.ends_with("_token_id") && k != "tokenizer.ggml.token_type" && k != "tokenizer.chat_template"
        });
    })
    .unwrap();
    assert_eq!(tokenizer.special_tokens(), &SpecialTokens::default());
    assert!(tokenizer.eos_token_ids().is_empty() && tokenizer.chat_template().is_none());
    assert!(!tokenizer.adds_bos_token(), "bos is only added when there is one");
    assert_eq!(
        tokenizer
            .decode(&tokenizer.encode("Hello world", true).unwrap(), false)
            .unwrap(),
        "Hello world"
    );
    // Unknown ids decode to nothing rather than failing.
    assert_eq!(tokenizer.decode(&[u32::MAX], false).unwrap(), "");
}

#[test]
fn scrambled_gguf_metadata_never_panics() {
    // A deterministic xorshift drives single-field corruptions of the synthetic file.
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let base = synthetic_gguf();
    let (mut ok, mut err) = (0, 0);
    for _ in 0..120 {
        let mut gguf = base.clone();
        let keys: Vec<usize> = (0..gguf.metadata.len())
            .filter(|&i| gguf.metadata[i].0.starts_with("tokenizer."))
            .collect();
        let (_, value) = &mut gguf.metadata[keys[next() as usize % keys.len()]];
        let r = next();
        *value = match (value.clone(), r % 6) {
            (Value::Array(mut items), 0) if !items.is_empty() => {
                let n = items.len();
                items.truncate(r as usize % n);
                Value::Array(items)
            }
            (Value::Array(mut items), 1) if !items.is_empty() => {
                let n = items.len();
                items.swap(r as usize % n, (r >> 20) as usize % n);
                Value::Array(items)
            }
            (Value::Array(mut items), 2) if !items.is_empty() => {
                let n = items.len();
                items[r as usize % n] = Value::String(format!("Ġ{}", r % 1000));
                Value::Array(items)
            }
            (_, 3) => Value::U32((r >> 8) as u32 % 3000),
            (_, 4) => Value::String(String::from_utf8_lossy(&r.to_le_bytes()).into_owned()),
            (_, _) => Value::Bool(r & 1 == 0),
        };
        match Tokenizer::from_gguf(&gguf) {
            Ok(t) => {
                ok += 1;
                let ids = t.encode("Hello <think> wörld 😀 42", true).unwrap();
                t.decode(&ids, false).unwrap();
            }
            Err(_) => err += 1,
        }
    }
    eprintln!("scrambled GGUFs: {ok} built, {err} refused");
    assert!(err > 0 && ok > 0);
}
