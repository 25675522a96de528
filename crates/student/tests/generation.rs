//! Generation on the tiny fixture models: left-padded batches against one sequence at a time
//! (on the CPU decoder, and on libtorch's masked path for GPT-2 as loaded), stop tokens, the
//! streaming callback, sampling, and GPT-2's position limit. The decoder's logits are checked
//! against libtorch's in `model::decode`'s unit tests.

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;

use std::path::Path;

use distill_student::{GenerationConfig, LoadedModel, Precision, generate};
use tch::Device;

fn load(name: &str, prepared: bool) -> LoadedModel {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model")
        .join(name);
    let mut model = LoadedModel::load(dir, Device::Cpu).unwrap();
    if prepared {
        model.prepare_for_generation(Precision::F32);
    }
    model
}

fn greedy(max_new_tokens: usize) -> GenerationConfig {
    GenerationConfig {
        max_new_tokens,
        ..Default::default()
    }
}

fn run(model: &LoadedModel, prompts: &[Vec<i64>], config: &GenerationConfig) -> Vec<Vec<i64>> {
    generate(&model.model, prompts, config, &mut |_, _| {}).unwrap()
}

const MODELS: [&str; 3] = ["tiny_llama_gqa", "tiny_llama_bias", "tiny_gpt2"];

#[test]
fn a_left_padded_batch_generates_what_each_prompt_does_alone() {
    let prompts = vec![vec![5, 17, 42, 8, 60], vec![3, 9], vec![70, 71, 72]];
    for name in MODELS {
        for prepared in [false, true] {
            let model = load(name, prepared);
            let batch = run(&model, &prompts, &greedy(12));
            for (prompt, together) in prompts.iter().zip(&batch) {
                let alone = run(&model, std::slice::from_ref(prompt), &greedy(12));
                assert_eq!(
                    &alone[0], together,
                    "{name} (prepared: {prepared}), prompt {prompt:?}"
                );
            }
        }
    }
}

#[test]
fn rows_of_a_batch_that_stop_early_leave_the_others_unchanged() {
    // SmolLM2, because the tiny random models answer every prompt with one repeated token.
    let mut model = LoadedModel::load(assets::smollm2_gguf(), Device::Cpu).unwrap();
    model.prepare_for_generation(Precision::F32);
    let prompts: Vec<Vec<i64>> = (0..3)
        .map(|b| (0..9 - 2 * b).map(|i| 100 + 37 * i + 1000 * b).collect())
        .collect();
    let alone: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| run(&model, std::slice::from_ref(p), &greedy(12)).remove(0))
        .collect();
    // A token one prompt produces early and another never: that row ends at it while the
    // other runs on.
    let (early, late, stop) = (0..3)
        .flat_map(|i| (0..3).map(move |j| (i, j)))
        .find_map(|(i, j)| Some((i, j, *alone[i][..6].iter().find(|t| !alone[j].contains(t))?)))
        .unwrap_or_else(|| panic!("the prompts give the same tokens: {alone:?}"));
    let config = GenerationConfig {
        stop_tokens: vec![stop],
        ..greedy(12)
    };
    let batch = run(&model, &prompts, &config);
    for (prompt, together) in prompts.iter().zip(&batch) {
        let single = run(&model, std::slice::from_ref(prompt), &config);
        assert_eq!(&single[0], together, "prompt {prompt:?}");
    }
    assert!(batch[early].len() < batch[late].len(), "{batch:?}");
}

#[test]
fn generation_ends_before_a_stop_token_and_streams_every_token() {
    for name in MODELS {
        let model = load(name, true);
        let prompt = vec![5, 17, 42, 8];
        // Seeded sampling varies the tokens (the random models' greedy output repeats one);
        // with the same seed, a run with a stop token draws the same tokens up to it.
        let sampled = GenerationConfig {
            temperature: 2.0,
            seed: 3,
            ..greedy(12)
        };
        let free = run(&model, std::slice::from_ref(&prompt), &sampled);
        assert_eq!(free[0].len(), 12, "{name}");
        // Stop at the latest first appearance of a token, so that many come out before it.
        let cut = (0..12)
            .rev()
            .find(|&i| !free[0][..i].contains(&free[0][i]))
            .unwrap();
        assert!(cut >= 3, "{name}: sampled {:?}", free[0]);
        let config = GenerationConfig {
            stop_tokens: vec![free[0][cut]],
            ..sampled
        };
        let mut streamed = Vec::new();
        let stopped = generate(&model.model, &[prompt], &config, &mut |row, token| {
            streamed.push((row, token))
        })
        .unwrap();
        assert_eq!(stopped[0], free[0][..cut], "{name}");
        let rows: Vec<(usize, i64)> = stopped[0].iter().map(|&t| (0, t)).collect();
        assert_eq!(streamed, rows, "{name}: streamed tokens");
    }
}

#[test]
fn sampling_is_seeded_and_narrow_filters_equal_greedy() {
    for name in MODELS {
        let model = load(name, true);
        let prompts = [vec![5, 17, 42, 8]];
        let sample = |seed, top_k, top_p| GenerationConfig {
            temperature: 1.5,
            top_k,
            top_p,
            seed,
            ..greedy(16)
        };
        let a = run(&model, &prompts, &sample(7, 0, 1.0));
        assert_eq!(a, run(&model, &prompts, &sample(7, 0, 1.0)), "{name}: same seed");
        assert_ne!(a, run(&model, &prompts, &sample(8, 0, 1.0)), "{name}: other seed");
        let want = run(&model, &prompts, &greedy(16));
        assert_eq!(run(&model, &prompts, &sample(7, 1, 1.0)), want, "{name}: top-k 1");
        assert_eq!(
            run(&model, &prompts, &sample(7, 0, 1e-6)),
            want,
            "{name}: top-p ~0"
        );
    }
}

#[test]
fn gpt2_stops_at_its_last_position_and_refuses_longer_prompts() {
    // tiny_gpt2 has 64 positions: a 60-token prompt leaves room for 5 new tokens (the last one
    // is chosen from position 63 and never fed back).
    for prepared in [false, true] {
        let model = load("tiny_gpt2", prepared);
        let prompt: Vec<i64> = (0..60).map(|i| i % 90).collect();
        let out = run(&model, &[prompt], &greedy(10));
        assert_eq!(out[0].len(), 5, "prepared: {prepared}");
        assert_eq!(
            distill_student::generate::new_token_limit(&model.model, 60, 10),
            5
        );
        let long: Vec<i64> = (0..65).map(|i| i % 90).collect();
        let error = generate(&model.model, &[long], &greedy(1), &mut |_, _| {}).unwrap_err();
        assert!(error.to_string().contains("64 positions"), "{error}");
    }
}

#[test]
fn batch_invariant_generation_in_16_bit_weights() {
    let config = GenerationConfig {
        batch_invariant: true,
        ..greedy(8)
    };
    // A Llama's bf16 weights decode on the CPU decoder, widened to f32: each row of a batch
    // is its prompt's answer alone, bit for bit.
    let mut model = LoadedModel::load(assets::smollm2_gguf(), Device::Cpu).unwrap();
    model.prepare_for_generation(Precision::Bf16);
    let prompts: Vec<Vec<i64>> = (0..3)
        .map(|b| (0..9 - 2 * b).map(|i| 100 + 37 * i + 1000 * b).collect())
        .collect();
    let batch = run(&model, &prompts, &config);
    for (prompt, together) in prompts.iter().zip(&batch) {
        let alone = run(&model, std::slice::from_ref(prompt), &config);
        assert_eq!(&alone[0], together, "prompt {prompt:?}");
        assert!(
            together.windows(2).any(|w| w[0] != w[1]),
            "a row repeats one token: {together:?}"
        );
    }
    // A 16-bit GPT-2 has no CPU decoder: after the prompts' one-by-one prefill, libtorch
    // decodes the batch from the stacked caches. The prefill is each prompt's own, so the
    // first token is too; libtorch's padded steps after it make no bit-for-bit promise.
    let mut gpt2 = load("tiny_gpt2", false);
    gpt2.prepare_for_generation(Precision::Bf16);
    let prompts: Vec<Vec<i64>> = prompts
        .iter()
        .map(|p| p.iter().map(|t| t % 97).collect())
        .collect();
    let batch = run(&gpt2, &prompts, &config);
    for (prompt, together) in prompts.iter().zip(&batch) {
        let alone = run(&gpt2, std::slice::from_ref(prompt), &config);
        assert_eq!(alone[0][0], together[0], "prompt {prompt:?}");
        assert_eq!(together.len(), 8);
    }
}
