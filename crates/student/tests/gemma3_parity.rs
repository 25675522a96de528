//! Gemma 3 270M from its GGUF against transformers' GGUF loader (transformers 5.25): sampled
//! dequantized weights, token ids and decoded text of varied strings, logits at every position
//! of three prompts (512 sampled vocabulary columns and each position's top 10), and 16 greedy
//! tokens. Fixtures and the script that made them are in `tests/fixtures/model/`.

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;

use std::path::Path;

use distill_data::{Example, Message};
use distill_student::tokenizer::Tokenizer;
use distill_student::train::data::{Preparer, SoftSource};
use distill_student::{ForwardInput, GenerationConfig, LoadedModel, generate};
use serde_json::Value;
use tch::{Device, Tensor};

fn fixture() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model/gemma3.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn gemma3_tokenizer_matches_transformers() {
    let expected = fixture();
    let tokenizer = Tokenizer::from_gguf_file(assets::gemma3_gguf()).unwrap();
    let t = &expected["tokenizer"];
    assert_eq!(tokenizer.vocab_size() as u64, t["vocab_size"].as_u64().unwrap());
    assert_eq!(
        tokenizer.eos_token_ids()[0] as u64,
        t["eos_token_id"].as_u64().unwrap()
    );
    for case in t["texts"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text, false).unwrap(),
            ids(&case["ids"]),
            "{text:?}"
        );
        assert_eq!(
            tokenizer.encode(text, true).unwrap(),
            ids(&case["ids_with_special"]),
            "{text:?} with bos"
        );
        let decoded = tokenizer.decode(&ids(&case["ids"]), false).unwrap();
        assert_eq!(decoded, case["decoded"].as_str().unwrap(), "{text:?} decoded");
    }
    for prompt in expected["prompts"].as_array().unwrap() {
        let text = prompt["text"].as_str().unwrap();
        assert_eq!(
            tokenizer.encode(text, true).unwrap(),
            ids(&prompt["ids"]),
            "{text:?}"
        );
    }

    // Training answers end as Gemma's turn format ends a turn: `<end_of_turn>` (106), not `<eos>`.
    let preparer = Preparer::new(&tokenizer, 512, SoftSource::None).unwrap();
    let example = Example::new(vec![Message::user("Hi")], "Hello.");
    let sequence = preparer
        .sequence(&example, Path::new("x.jsonl"))
        .unwrap()
        .unwrap();
    assert_eq!(sequence.targets.last(), Some(&106));
}

#[test]
fn gemma3_gguf_matches_transformers_weights_logits_and_greedy_tokens() {
    let expected = fixture();
    let model = LoadedModel::load(assets::gemma3_gguf(), Device::Cpu).unwrap();
    assert_eq!(
        model.parameter_count(),
        expected["config"]["parameter_count"].as_u64().unwrap()
    );
    let vars = model.vs.variables();
    for (name, sample) in expected["samples"].as_object().unwrap() {
        let shape: Vec<i64> = serde_json::from_value(sample["shape"].clone()).unwrap();
        assert_eq!(vars[name].size(), shape, "{name}");
        let indices: Vec<i64> = serde_json::from_value(sample["indices"].clone()).unwrap();
        let values: Vec<f32> = serde_json::from_value(sample["values"].clone()).unwrap();
        let flat = vars[name].flatten(0, -1);
        let ours = Vec::<f32>::try_from(flat.index_select(0, &Tensor::from_slice(&indices))).unwrap();
        for (i, (a, b)) in ours.iter().zip(&values).enumerate() {
            assert!((a - b).abs() <= 1e-6, "{name}[{}]: {a} vs {b}", indices[i]);
        }
    }

    let columns: Vec<i64> = serde_json::from_value(expected["logit_columns"].clone()).unwrap();
    let columns = Tensor::from_slice(&columns);
    let _guard = tch::no_grad_guard();
    for prompt in expected["prompts"].as_array().unwrap() {
        let text = prompt["text"].as_str().unwrap();
        let prompt_ids: Vec<i64> = serde_json::from_value(prompt["ids"].clone()).unwrap();
        let input = Tensor::from_slice(&prompt_ids).unsqueeze(0);
        let logits = model
            .model
            .forward(&ForwardInput::new(&input), None)
            .squeeze_dim(0);
        let want: Vec<Vec<f32>> = serde_json::from_value(prompt["sampled_logits"].clone()).unwrap();
        let want = Tensor::from_slice(&want.concat()).reshape([prompt_ids.len() as i64, -1]);
        let diff = (logits.index_select(1, &columns) - want)
            .abs()
            .max()
            .double_value(&[]);
        eprintln!("{text:?}: sampled logits differ by at most {diff:.2e}");
        assert!(diff <= 1e-4, "{text:?}: sampled logits differ by {diff}");
        let top_ids: Vec<Vec<i64>> = serde_json::from_value(prompt["top_ids"].clone()).unwrap();
        let (_, ours) = logits.topk(1, -1, true, true);
        let ours = Vec::<i64>::try_from(ours.flatten(0, -1)).unwrap();
        let theirs: Vec<i64> = top_ids.iter().map(|row| row[0]).collect();
        assert_eq!(ours, theirs, "{text:?}: most likely token at each position");

        let want: Vec<i64> = serde_json::from_value(prompt["greedy_ids"].clone()).unwrap();
        let config = GenerationConfig {
            max_new_tokens: want.len(),
            ..Default::default()
        };
        let got = generate(
            &model.model,
            std::slice::from_ref(&prompt_ids),
            &config,
            &mut |_, _| {},
        )
        .unwrap();
        assert_eq!(got[0], want, "{text:?}: greedy tokens");
    }
}
