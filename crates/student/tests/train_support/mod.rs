//! Shared pieces of the trainer tests: a tiny Llama on the synthetic byte-level BPE tokenizer
//! fixture, and small datasets with and without stored top-k logprobs.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use distill_data::{Example, Message, TokenLogprob, TopLogprob};
use distill_student::LlamaConfig;
use distill_student::tokenizer::Tokenizer;
use distill_student::train::{LossKind, TrainConfig};
use distill_student::{LoadedModel, Pretrained};
use tch::Device;

pub fn tokenizer_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/synthetic.gguf")
}

pub fn tokenizer() -> Tokenizer {
    Tokenizer::from_gguf_file(tokenizer_fixture()).expect("synthetic tokenizer")
}

/// A 2-layer Llama sized for the synthetic tokenizer (weights set by the trainer's `reinit`).
pub fn tiny_model(tokenizer: &Tokenizer, layers: i64) -> Pretrained {
    let config: LlamaConfig = serde_json::from_value(serde_json::json!({
        "vocab_size": tokenizer.vocab_size(),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 2,
    }))
    .unwrap();
    let model = LoadedModel::new_llama(config, Device::Cpu, PathBuf::from("tiny")).unwrap();
    Pretrained {
        model,
        tokenizer: tokenizer.clone(),
    }
}

fn text(i: usize) -> (String, String) {
    let words = [
        "alpha", "beta", "gamma", "delta", "kappa", "omega", "sigma", "theta",
    ];
    let prompt = format!("List {} words starting at {}.", 2 + i % 5, words[i % words.len()]);
    let response: Vec<&str> = (0..2 + (i * 7) % 11)
        .map(|k| words[(i + k) % words.len()])
        .collect();
    (prompt, response.join(" "))
}

/// `n` examples; with `logprobs`, each response token carries three alternatives given as a
/// teacher API would: text and UTF-8 bytes, not ids.
pub fn examples(n: usize, tokenizer: &Tokenizer, logprobs: bool) -> Vec<Example> {
    (0..n)
        .map(|i| {
            let (prompt, response) = text(i);
            let mut e = Example::new(
                vec![Message::system("Be brief."), Message::user(prompt)],
                response.clone(),
            );
            if logprobs {
                let ids = tokenizer.encode(&response, false).unwrap();
                let vocab = tokenizer.vocab_size() as u32;
                let entry = |id: u32, logprob: f64| {
                    let bytes = tokenizer.token_bytes(id).unwrap();
                    (String::from_utf8_lossy(&bytes).into_owned(), bytes, logprob)
                };
                e.logprobs = Some(
                    ids.iter()
                        .map(|&id| {
                            let (token, bytes, logprob) = entry(id, -0.3);
                            let alts = [
                                (id, -0.3),
                                (10 + (id + 1) % (vocab - 10), -1.9),
                                (10 + (id + 7) % (vocab - 10), -2.6),
                            ];
                            TokenLogprob {
                                token,
                                bytes: Some(bytes),
                                logprob,
                                top_logprobs: alts
                                    .iter()
                                    .map(|&(a, lp)| {
                                        let (token, bytes, logprob) = entry(a, lp);
                                        TopLogprob {
                                            token,
                                            bytes: Some(bytes),
                                            logprob,
                                        }
                                    })
                                    .collect(),
                            }
                        })
                        .collect(),
                );
            }
            e
        })
        .collect()
}

/// A small, fast configuration writing to `out`.
pub fn config(out: &Path, loss: LossKind) -> TrainConfig {
    // One intra-op thread: on a shared 2-core machine, OpenMP's spinning threads otherwise slow
    // these tiny models down 20-fold. Also keeps numerics identical between test processes.
    tch::set_num_threads(1);
    let mut c = TrainConfig::new("synthetic.jsonl", "tiny", out);
    c.loss.kind = loss;
    c.reinit = true;
    c.device = distill_student::train::DeviceChoice::Cpu;
    c.batch_size = 4;
    c.max_seq_len = 192;
    c.optim.lr = 3e-3;
    c.optim.warmup_steps = 2;
    c.save_every = 0;
    c.seed = 7;
    c
}
