//! The trainer end to end on a tiny model: hard and soft labels, validation, outputs, guards,
//! and an in-process stop/resume that must reproduce an uninterrupted run bit for bit.

#[path = "../../gguf/tests/support/assets.rs"]
mod assets;
#[path = "../../gguf/tests/support/chain.rs"]
mod chain;

#[path = "train_support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use distill_data::{TokenLogprob, TopLogprob};
use distill_student::LoadedModel;
use distill_student::tokenizer::Tokenizer;
use distill_student::train::data::{Preparer, SoftSource};
use distill_student::train::metrics::Record;
use distill_student::train::{Error, LossKind, MixedPrecision, Outcome, Parts, TrainEvent, Trainer};
use tch::{Device, Tensor};

/// Held by every test here: `reinit` and the tests' own draws use libtorch's one global
/// generator, so two tests seeding and drawing at once would change each other's weights.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|p| p.into_inner())
}

fn parts(n: usize, logprobs: bool) -> Parts {
    let tokenizer = support::tokenizer();
    let mut examples = support::examples(n, &tokenizer, logprobs);
    let val = examples.split_off(n - 6);
    Parts {
        student: support::tiny_model(&tokenizer, 2),
        teacher: None,
        train: examples,
        val,
    }
}

fn run(
    config: distill_student::train::TrainConfig,
    parts: Parts,
) -> (distill_student::train::TrainSummary, Vec<TrainEvent>) {
    let mut events = Vec::new();
    let mut trainer = Trainer::from_parts(config, parts).unwrap();
    let summary = trainer
        .run(&AtomicBool::new(false), &mut |e| events.push(e.clone()))
        .unwrap();
    (summary, events)
}

fn step_losses(events: &[TrainEvent]) -> Vec<f64> {
    events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step { record, .. } => Some(record.loss),
            _ => None,
        })
        .collect()
}

fn weights(dir: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("model.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

fn assert_bitwise_equal(a: &BTreeMap<String, Tensor>, b: &BTreeMap<String, Tensor>) {
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, t) in a {
        assert!(
            t.equal(&b[name]),
            "{name} differs: max |Δ| = {}",
            (t - &b[name]).abs().max().double_value(&[])
        );
    }
}

#[test]
fn hard_labels_learn_and_every_output_is_written() {
    let _rng = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = support::config(out.path(), LossKind::Ce);
    config.max_steps = Some(40);
    config.eval_every = 10;
    config.save_every = 10;
    config.keep_checkpoints = 2;
    let (summary, events) = run(config, parts(40, false));
    assert_eq!(summary.outcome, Outcome::Completed);
    assert_eq!(summary.steps, 40);
    let losses = step_losses(&events);
    let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = losses[35..].iter().sum::<f64>() / 5.0;
    assert!(last < first * 0.7, "loss {first} -> {last}");
    let evals: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Eval { record, .. } => Some(record.val_loss),
            _ => None,
        })
        .collect();
    assert_eq!(evals.len(), 4);
    assert!(evals[3] < evals[0], "{evals:?}");

    let dir = out.path();
    for f in [
        "training_args.json",
        "metrics.jsonl",
        "loss_curve.svg",
        "final_model/config.json",
        "final_model/tokenizer.json",
    ] {
        assert!(dir.join(f).exists(), "{f} missing");
    }
    let lines = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    let records: Vec<Record> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(
        records.iter().filter(|r| matches!(r, Record::Step(_))).count(),
        40
    );
    assert_eq!(records.iter().filter(|r| matches!(r, Record::Eval(_))).count(), 4);
    // Two newest checkpoints, plus the best one when it is older.
    let kept: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        kept.contains(&"step-00000040".to_string()) && kept.contains(&"step-00000030".to_string()),
        "{kept:?}"
    );
    assert!(!kept.contains(&"step-00000010".to_string()), "{kept:?}");

    // The final model loads back as an HF directory and scores the validation data as the trainer did.
    let model = LoadedModel::load(dir.join("final_model"), Device::Cpu).unwrap();
    let tokenizer = Tokenizer::from_hf_dir(dir.join("final_model")).unwrap();
    assert_eq!(tokenizer.vocab_hash(), support::tokenizer().vocab_hash());
    assert_eq!(model.config.layer_count(), 2);
}

/// A 20-step run with `kind` ran every step, its losses stayed finite, and its last three
/// steps' losses sum below its first three's.
fn assert_learns(summary: &distill_student::train::TrainSummary, events: &[TrainEvent], kind: LossKind) {
    assert_eq!(summary.steps, 20, "{kind:?}");
    let losses = step_losses(events);
    assert!(losses.iter().all(|l| l.is_finite()), "{kind:?}: {losses:?}");
    assert!(
        losses[17..].iter().sum::<f64>() < losses[..3].iter().sum::<f64>(),
        "{kind:?}: {losses:?}"
    );
}

#[test]
fn soft_labels_from_stored_top_k_train_with_every_divergence() {
    let _rng = serial();
    for kind in [
        LossKind::Kl,
        LossKind::Rkl,
        LossKind::Jsd,
        LossKind::Skl,
        LossKind::Srkl,
    ] {
        let out = tempfile::tempdir().unwrap();
        let mut config = support::config(out.path(), kind);
        config.max_steps = Some(20);
        let (summary, events) = run(config, parts(30, true));
        assert_learns(&summary, &events, kind);
        let soft = events.iter().find_map(|e| match e {
            TrainEvent::Step { record, .. } => record.soft_loss,
            _ => None,
        });
        assert!(soft.is_some_and(|s| s > 0.0), "{kind:?}");
    }
}

#[test]
fn an_online_teacher_and_its_top_k_cache_train() {
    let _rng = serial();
    let tokenizer = support::tokenizer();
    for cache in [None, Some(8)] {
        let out = tempfile::tempdir().unwrap();
        let mut config = support::config(out.path(), LossKind::Kl);
        config.max_steps = Some(6);
        config.teacher_model = Some("tiny-teacher".into());
        config.teacher_cache_top_k = cache;
        let teacher = support::tiny_model(&tokenizer, 1);
        let mut p = parts(20, false);
        p.teacher = Some(teacher);
        let (summary, events) = run(config, p);
        assert_eq!(summary.steps, 6);
        assert!(step_losses(&events).iter().all(|l| l.is_finite()));
        assert_eq!(
            out.path().join("teacher_topk.safetensors").exists(),
            cache.is_some()
        );
    }
}

#[test]
fn a_dataset_from_a_teacher_with_another_vocabulary_is_aligned_on_bytes() {
    let _rng = serial();
    let out = tempfile::tempdir().unwrap();
    let tokenizer = support::tokenizer();
    let source = Path::new("synthetic.jsonl");

    // Another vocabulary (its hash differs): the student tokenizes the teacher's text, and
    // trains with soft labels where a student token spells exactly one teacher token.
    let mut examples = support::examples(1, &tokenizer, true);
    let e = &mut examples[0];
    e.metadata.insert("teacher_vocab_hash".into(), "0123abcd".into());
    // The teacher's tokens, re-cut into one token per byte: a foreign tokenization.
    let logprobs = e.logprobs.take().unwrap();
    let text: Vec<u8> = logprobs.iter().flat_map(|t| t.bytes.clone().unwrap()).collect();
    e.logprobs = Some(
        text.iter()
            .map(|&b| TokenLogprob {
                token: String::from_utf8_lossy(&[b]).into_owned(),
                bytes: Some(vec![b]),
                logprob: -0.2,
                top_logprobs: vec![TopLogprob {
                    token: "zz-not-a-token".into(),
                    bytes: None,
                    logprob: -3.0,
                }],
            })
            .collect(),
    );
    let preparer = Preparer::new(&tokenizer, 256, SoftSource::Dataset)
        .unwrap()
        .with_spans(true);
    let (sequences, stats) = preparer.prepare(&examples, source).unwrap();
    let response = tokenizer
        .encode(std::str::from_utf8(&text).unwrap(), false)
        .unwrap();
    let one_byte: Vec<bool> = response
        .iter()
        .map(|&id| tokenizer.token_bytes(id).unwrap().len() == 1)
        .collect();
    assert!(
        one_byte.contains(&true) && one_byte.contains(&false),
        "{one_byte:?}"
    );
    let seq = &sequences[0];
    let soft: Vec<bool> = seq.soft.iter().map(|e| !e.is_empty()).collect();
    assert_eq!(soft, one_byte, "soft labels exactly on one-to-one tokens");
    // There, the sampled token carries over; the unspellable alternative joins the rest.
    let at = one_byte.iter().position(|&b| b).unwrap();
    assert_eq!(seq.soft[at], vec![(response[at], -0.2)]);
    assert_eq!(
        (stats.cross_tokenizer_examples, stats.soft_targets),
        (1, one_byte.iter().filter(|&&b| b).count())
    );
    // The response is the student's own tokenization of the teacher's text.
    let response_ids: Vec<i64> = response.iter().map(|&id| i64::from(id)).collect();
    let targets = &seq.targets[seq.first_target..seq.first_target + response.len()];
    assert_eq!(targets, &response_ids[..]);
    // Every student token ends on a teacher boundary here, so each is a span, whose teacher
    // log-probability is the sum over its bytes; one-byte spans keep the whole teacher top-k.
    assert_eq!(seq.spans.len(), response.len());
    assert_eq!(stats.span_targets, response.len());
    for (i, span) in seq.spans.iter().enumerate() {
        let bytes = tokenizer.token_bytes(response[i]).unwrap().len();
        assert_eq!((span.start, span.len), (i, 1));
        assert!(
            (span.teacher_logprob - (-0.2 * bytes as f32)).abs() < 1e-5,
            "{span:?}"
        );
        let top = if bytes == 1 {
            vec![(-0.2f32).exp(), (-3.0f32).exp()]
        } else {
            vec![]
        };
        assert_eq!(span.teacher_top, top, "{span:?}");
    }
    // A teacher token that spells no bytes (as some APIs send) changes nothing.
    let mut with_empty = examples.clone();
    let empty = TokenLogprob {
        token: String::new(),
        bytes: Some(Vec::new()),
        logprob: -5.0,
        top_logprobs: Vec::new(),
    };
    with_empty[0].logprobs.as_mut().unwrap().insert(2, empty);
    let (again, _) = preparer.prepare(&with_empty, source).unwrap();
    assert_eq!(again[0], sequences[0]);

    // A whole run trains on such data.
    let mut p = parts(12, true);
    p.train[3]
        .metadata
        .insert("teacher_vocab_hash".into(), "0123abcd".into());
    let mut config = support::config(out.path(), LossKind::Kl);
    config.max_steps = Some(2);
    let (summary, _) = run(config, p);
    assert_eq!(summary.steps, 2);

    // Without a hash, a token the student cannot spell means another vocabulary too.
    let mut p = parts(12, true);
    let lp = p.train[2].logprobs.as_mut().unwrap();
    lp[1].top_logprobs[1].token = "not-a-token-of-this-vocabulary".into();
    lp[1].top_logprobs[1].bytes = None;
    let (_, stats) = preparer.prepare(&p.train, source).unwrap();
    assert_eq!(stats.cross_tokenizer_examples, 1);

    // A token with neither text nor bytes cannot be matched: a clear error.
    let mut p = parts(12, true);
    let lp = p.train[2].logprobs.as_mut().unwrap();
    lp[4].token.clear();
    lp[4].bytes = None;
    let err = Trainer::from_parts(support::config(out.path(), LossKind::Kl), p).unwrap_err();
    assert!(
        err.to_string()
            .contains("logprob 4 has neither token text nor bytes"),
        "{err}"
    );

    // Soft labels without logprobs.
    let err = Trainer::from_parts(support::config(out.path(), LossKind::Kl), parts(12, false)).unwrap_err();
    assert!(err.to_string().contains("has no logprobs"), "{err}");
}

#[test]
fn vocabulary_free_losses_train_on_a_teacher_with_another_vocabulary() {
    let _rng = serial();
    for kind in [LossKind::Uld, LossKind::Alm] {
        let out = tempfile::tempdir().unwrap();
        let mut p = parts(30, true);
        for e in &mut p.train {
            e.metadata.insert("teacher_vocab_hash".into(), "0123abcd".into());
        }
        let mut config = support::config(out.path(), kind);
        config.max_steps = Some(20);
        let (summary, events) = run(config, p);
        assert_learns(&summary, &events, kind);
        let soft: Vec<f64> = events
            .iter()
            .filter_map(|e| match e {
                TrainEvent::Step { record, .. } => record.soft_loss,
                _ => None,
            })
            .collect();
        assert_eq!(soft.len(), 20, "{kind:?}");
        assert!(
            soft[0] > 0.0 && soft[17..].iter().sum::<f64>() < soft[..3].iter().sum::<f64>(),
            "{kind:?}: {soft:?}"
        );
    }
    // They compare stored probabilities at temperature 1, without a teacher model.
    let out = tempfile::tempdir().unwrap();
    let mut config = support::config(out.path(), LossKind::Alm);
    config.loss.temperature = 2.0;
    let err = Trainer::from_parts(config, parts(12, true)).unwrap_err();
    assert!(err.to_string().contains("temperature 1"), "{err}");
    let mut config = support::config(out.path(), LossKind::Uld);
    config.teacher_model = Some("tiny-teacher".into());
    let mut p = parts(12, true);
    p.teacher = Some(support::tiny_model(&support::tokenizer(), 1));
    let err = Trainer::from_parts(config, p).unwrap_err();
    assert!(err.to_string().contains("shares the student's"), "{err}");
}

/// A 1-layer teacher for `tokenizer`, with random weights drawn from `seed`.
fn random_teacher(tokenizer: &Tokenizer, seed: i64) -> distill_student::Pretrained {
    let teacher = support::tiny_model(tokenizer, 1);
    tch::manual_seed(seed);
    distill_student::model::init_like_transformers(&teacher.model.vs, &teacher.model.config, 0.5);
    teacher
}

/// Each step's (hard loss, soft loss, on-policy micro-batches), and the training data's
/// statistics.
fn step_parts(
    events: &[TrainEvent],
) -> (
    Vec<(f64, Option<f64>, u32)>,
    distill_student::train::data::DataStats,
) {
    let steps = events
        .iter()
        .filter_map(|e| match e {
            TrainEvent::Step { record, .. } => {
                Some((record.hard_loss, record.soft_loss, record.on_policy_batches))
            }
            _ => None,
        })
        .collect();
    let stats = events.iter().find_map(|e| match e {
        TrainEvent::Started { train, .. } => Some(train.clone()),
        _ => None,
    });
    (steps, stats.unwrap())
}

#[test]
fn on_policy_distillation_trains_with_a_teacher_of_either_vocabulary() {
    let _rng = serial();
    let tokenizer = support::tokenizer();
    let on_policy = |out: &Path, loss| {
        let mut config = support::config(out, loss);
        config.max_steps = Some(3);
        config.loss.alpha = 1.0;
        config.on_policy = 1.0;
        config.on_policy_max_new_tokens = 8;
        config.teacher_model = Some("tiny-teacher".into());
        config
    };

    // The student's vocabulary: its own answers, scored over the whole vocabulary online.
    let out = tempfile::tempdir().unwrap();
    let mut p = parts(12, false);
    p.teacher = Some(random_teacher(&tokenizer, 11));
    let (summary, events) = run(on_policy(out.path(), LossKind::Jsd), p);
    assert_eq!(summary.steps, 3);
    let (steps, stats) = step_parts(&events);
    assert_eq!(stats.cross_tokenizer_examples, 0);
    for (hard, soft, on_policy) in &steps {
        assert_eq!(
            (*hard, *on_policy),
            (0.0, 1),
            "the student's own answers have no hard labels"
        );
        assert!(soft.is_some_and(|s| s.is_finite() && s > 0.0), "{steps:?}");
    }

    // Another vocabulary (SmolLM2's): the teacher scores the dataset's answers once and the
    // student's answers each step, as text; the student aligns them on bytes.
    let smollm2 = Tokenizer::from_gguf_file(assets::smollm2_gguf()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut p = parts(12, false);
    p.teacher = Some(random_teacher(&smollm2, 11));
    let mut config = on_policy(out.path(), LossKind::Kl);
    config.on_policy = 0.5;
    config.optim.grad_accum = 2;
    let (summary, events) = run(config.clone(), p);
    assert_eq!(summary.steps, 3);
    let (steps, stats) = step_parts(&events);
    assert_eq!(stats.cross_tokenizer_examples, stats.sequences);
    assert!(stats.soft_targets > 0);
    assert!(
        steps
            .iter()
            .all(|(h, s, _)| h.is_finite() && s.is_some_and(f64::is_finite)),
        "{steps:?}"
    );
    let sampled: u32 = steps.iter().map(|s| s.2).sum();
    assert!(
        0 < sampled && sampled < 6,
        "about half of 6 micro-batches: {steps:?}"
    );

    // Without a teacher, or with the loss `ce`, on-policy has nothing to learn from.
    let mut config = on_policy(out.path(), LossKind::Ce);
    let err = Trainer::from_parts(config.clone(), parts(12, false)).unwrap_err();
    assert!(err.to_string().contains("`ce`"), "{err}");
    config.loss.kind = LossKind::Kl;
    config.teacher_model = None;
    let err = Trainer::from_parts(config, parts(12, false)).unwrap_err();
    assert!(err.to_string().contains("needs a teacher model"), "{err}");
}

#[test]
fn mixed_precision_on_the_cpu_is_refused_with_a_clear_error() {
    let _rng = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = support::config(out.path(), LossKind::Ce);
    config.precision = MixedPrecision::Fp16;
    let err = Trainer::from_parts(config, parts(12, false)).unwrap_err();
    assert!(
        err.to_string()
            .contains("f16 mixed precision needs a CUDA device"),
        "{err}"
    );
}

#[test]
fn non_finite_steps_are_skipped_then_the_run_aborts() {
    let _rng = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = support::config(out.path(), LossKind::Ce);
    config.max_steps = Some(10);
    config.max_bad_steps = 3;
    config.reinit = false;
    let p = parts(12, false);
    {
        // Fault injection: a NaN in the final norm poisons every forward pass.
        let _guard = tch::no_grad_guard();
        let mut vars = p.student.model.vs.variables();
        let _ = vars.get_mut("model.norm.weight").unwrap().fill_(f64::NAN);
    }
    let mut skipped = 0;
    let mut trainer = Trainer::from_parts(config, p).unwrap();
    let err = trainer
        .run(&AtomicBool::new(false), &mut |e| {
            if matches!(e, TrainEvent::Skipped { .. }) {
                skipped += 1;
            }
        })
        .unwrap_err();
    assert!(matches!(err, Error::Diverged { step: 3, count: 3 }), "{err}");
    assert_eq!(skipped, 2);
}

#[test]
fn truncation_is_counted() {
    let _rng = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = support::config(out.path(), LossKind::Ce);
    config.max_seq_len = 135;
    config.max_steps = Some(1);
    let mut started = None;
    let mut trainer = Trainer::from_parts(config, parts(30, false)).unwrap();
    trainer
        .run(&AtomicBool::new(false), &mut |e| {
            if let TrainEvent::Started { train, .. } = e {
                started = Some(train.clone());
            }
        })
        .unwrap();
    let stats = started.unwrap();
    assert!(
        stats.truncated > 0 && stats.truncated < stats.sequences,
        "{stats:?}"
    );
    assert!(trainer.train_sequences().iter().all(|s| s.len() <= 135));
}

#[test]
fn stopping_and_resuming_reproduces_an_uninterrupted_run_exactly() {
    let _rng = serial();
    let whole = tempfile::tempdir().unwrap();
    let mut config = support::config(whole.path(), LossKind::Kl);
    config.max_steps = Some(12);
    config.save_every = 3;
    config.optim.grad_accum = 2;
    run(config.clone(), parts(30, true));

    let split = tempfile::tempdir().unwrap();
    config.output_dir = split.path().into();
    let stop = AtomicBool::new(false);
    let mut trainer = Trainer::from_parts(config.clone(), parts(30, true)).unwrap();
    let summary = trainer
        .run(&stop, &mut |e| {
            if let TrainEvent::Step { record, .. } = e
                && record.step == 5
            {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        })
        .unwrap();
    assert_eq!(summary.outcome, Outcome::Stopped);
    assert_eq!(summary.steps, 5);
    assert!(!split.path().join("final_model").exists());

    config.resume = true;
    let (summary, events) = run(config.clone(), parts(30, true));
    assert!(matches!(events[0], TrainEvent::Started { start_step: 5, .. }));
    assert_eq!(summary.steps, 12);
    assert_bitwise_equal(
        &weights(&whole.path().join("final_model")),
        &weights(&split.path().join("final_model")),
    );

    // Resuming with settings that change the trajectory is refused.
    config.optim.lr *= 2.0;
    let err = Trainer::from_parts(config, parts(30, true)).unwrap_err();
    assert!(err.to_string().contains("optim"), "{err}");
}

#[test]
fn validation_without_logprobs_falls_back_to_hard_labels() {
    let _rng = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = support::config(out.path(), LossKind::Kl);
    config.max_steps = Some(2);
    let mut p = parts(20, true);
    for e in &mut p.val {
        e.logprobs = None;
    }
    let (_, events) = run(config, p);
    let eval = events.iter().find_map(|e| match e {
        TrainEvent::Eval { record, .. } => Some(record.clone()),
        _ => None,
    });
    let eval = eval.unwrap();
    assert!(
        eval.val_loss.is_finite() && eval.val_soft_loss.is_none(),
        "{eval:?}"
    );
}

#[test]
fn early_stopping_ends_the_run_and_keeps_the_best_checkpoint() {
    let _rng = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = support::config(out.path(), LossKind::Ce);
    config.max_steps = Some(20);
    // Below f32 resolution: the weights, hence the validation loss, never change.
    config.optim.lr = 1e-30;
    config.optim.warmup_steps = 0;
    config.eval_every = 1;
    config.early_stopping_patience = Some(2);
    config.save_every = 10;
    config.keep_checkpoints = 1;
    let (summary, _) = run(config, parts(20, false));
    assert_eq!(summary.outcome, Outcome::EarlyStopped);
    assert_eq!(summary.steps, 3);
    assert_eq!(summary.best.unwrap().step, 1);
    let mut kept: Vec<String> = std::fs::read_dir(out.path().join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, ["step-00000001", "step-00000003"]);
    assert!(out.path().join("final_model/model.safetensors").exists());
}

#[test]
fn logits_at_chosen_rows_equal_the_full_forward_there() {
    let _rng = serial();
    let tokenizer = support::tokenizer();
    let m = support::tiny_model(&tokenizer, 2);
    tch::manual_seed(3);
    distill_student::model::init_like_transformers(&m.model.vs, &m.model.config, 0.02);
    let ids = Tensor::randint(
        tokenizer.vocab_size() as i64,
        [3, 11],
        (tch::Kind::Int64, Device::Cpu),
    );
    let rows = Tensor::from_slice(&[0i64, 5, 10, 11, 20, 32]);
    let input = distill_student::ForwardInput::new(&ids);
    let _guard = tch::no_grad_guard();
    let full = m.model.model.forward(&input, None);
    let vocab = full.size()[2];
    let want = full.reshape([-1, vocab]).index_select(0, &rows);
    let got = m.model.model.forward_rows(&input, &rows);
    assert_eq!(got.size(), [6, vocab]);
    let diff = (got - want).abs().max().double_value(&[]);
    assert!(diff < 1e-6, "{diff}");
}

#[test]
fn a_checkpoint_that_does_not_fit_the_model_is_refused_with_the_cause_chained() {
    let _rng = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = support::config(out.path(), LossKind::Ce);
    config.max_steps = Some(2);
    run(config.clone(), parts(12, false));

    // The same data and settings, but a student with three layers: the fingerprint matches,
    // the saved weights do not.
    config.resume = true;
    let tokenizer = support::tokenizer();
    let mut p = parts(12, false);
    p.student = support::tiny_model(&tokenizer, 3);
    let err = Trainer::from_parts(config, p).unwrap_err();
    assert!(matches!(err, Error::CheckpointTensors { .. }), "{err}");
    assert_eq!(err.kind(), distill_student::train::ErrorKind::Checkpoint);
    let line = chain::chain_line(&err);
    assert!(
        line.contains("step-00000002: the checkpoint does not fit this run: missing `model.layers.2."),
        "{line}"
    );
}

#[test]
fn missing_files_are_not_found() {
    let _rng = serial();
    let out = tempfile::tempdir().unwrap();
    let mut config = support::config(out.path(), LossKind::Ce);
    config.dataset = out.path().join("no-such-dataset.jsonl");
    config.student_model = out.path().join("no-such-model");
    let err = Trainer::from_config(config.clone()).unwrap_err();
    assert!(matches!(err, Error::Data(_)), "{err}");
    assert_eq!(err.kind(), distill_student::train::ErrorKind::NotFound, "{err}");

    config.dataset = out.path().join("data.jsonl");
    std::fs::write(&config.dataset, "{\"prompt\": \"q\", \"response\": \"a\"}\n").unwrap();
    let err = Trainer::from_config(config).unwrap_err();
    assert!(matches!(err, Error::ModelNotFound(_)), "{err}");
    assert_eq!(err.kind(), distill_student::train::ErrorKind::NotFound, "{err}");
}
