//! Property tests: encodings round-trip arbitrary Unicode, and the reader never panics.

use distill_data::{
    EncodeOptions, Encoding, Example, ExampleReader, ExampleWriter, FinishReason, Message, Metadata, Mode,
    ReaderOptions, Split, SyncPolicy, TeacherInfo, TokenLogprob, TopLogprob, Usage, WriterOptions,
    encode_line,
};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

fn text() -> impl Strategy<Value = String> {
    // Any Unicode scalar values, including controls, quotes, backslashes and U+2028.
    proptest::collection::vec(any::<char>(), 0..40).prop_map(|v| v.into_iter().collect())
}

fn logprob() -> impl Strategy<Value = f64> {
    // Finite values, including extreme and subnormal ones: JSON has no NaN or infinity.
    prop_oneof![
        -1e300f64..=0.0,
        Just(-0.0),
        Just(f64::MIN_POSITIVE),
        Just(-5e-324),
        Just(f64::MIN)
    ]
}

fn top() -> impl Strategy<Value = TopLogprob> {
    (
        text(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
        logprob(),
    )
        .prop_map(|(token, bytes, logprob)| TopLogprob {
            token,
            bytes,
            logprob,
        })
}

fn token() -> impl Strategy<Value = TokenLogprob> {
    (
        text(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
        logprob(),
        proptest::collection::vec(top(), 0..4),
    )
        .prop_map(|(token, bytes, logprob, top_logprobs)| TokenLogprob {
            token,
            bytes,
            logprob,
            top_logprobs,
        })
}

fn prompt_messages() -> impl Strategy<Value = Vec<Message>> {
    (
        proptest::option::of(text()),
        proptest::collection::vec((text(), text()), 0..2),
        text(),
    )
        .prop_map(|(system, turns, user)| {
            let mut m = Vec::new();
            if let Some(s) = system {
                m.push(Message::system(s));
            }
            for (u, a) in turns {
                m.push(Message::user(u));
                m.push(Message::assistant(a));
            }
            m.push(Message::user(user));
            m
        })
}

fn finish() -> impl Strategy<Value = FinishReason> {
    prop_oneof![
        Just(FinishReason::Stop),
        Just(FinishReason::Length),
        Just(FinishReason::ContentFilter),
        Just(FinishReason::ToolCalls),
        "[a-z_]{1,12}".prop_map(FinishReason::from),
    ]
}

fn teacher() -> impl Strategy<Value = TeacherInfo> {
    (
        text(),
        text(),
        proptest::option::of(finish()),
        proptest::option::of((any::<u64>(), any::<u64>())),
        proptest::option::of(any::<u64>()),
        proptest::option::of(any::<i64>()),
    )
        .prop_map(
            |(model, provider, finish_reason, usage, latency_ms, created)| TeacherInfo {
                model,
                provider,
                finish_reason,
                usage: usage.map(|(p, c)| Usage {
                    prompt_tokens: p,
                    completion_tokens: c,
                }),
                latency_ms,
                created,
            },
        )
}

fn metadata() -> impl Strategy<Value = Metadata> {
    proptest::collection::btree_map(text(), text(), 0..3).prop_map(|m| {
        m.into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect()
    })
}

fn example() -> impl Strategy<Value = Example> {
    (
        prompt_messages(),
        text(),
        proptest::option::of(teacher()),
        proptest::option::of(proptest::collection::vec(token(), 0..4)),
        proptest::option::of(prop_oneof![
            Just(Split::Train),
            Just(Split::Val),
            Just(Split::Test)
        ]),
        metadata(),
    )
        .prop_map(|(messages, response, teacher, logprobs, split, metadata)| {
            let mut e = Example::new(messages, response);
            e.teacher = teacher;
            e.logprobs = logprobs;
            e.split = split;
            e.metadata = metadata;
            e
        })
}

fn read_all(bytes: &[u8], options: ReaderOptions) -> Vec<distill_data::Result<Example>> {
    ExampleReader::from_reader(bytes, "prop.jsonl", options)
        .unwrap()
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct("tests/properties.proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn full_round_trips(examples in proptest::collection::vec(example(), 1..5)) {
        let mut buf = Vec::new();
        for e in &examples {
            encode_line(e, Encoding::Full, EncodeOptions::default(), &mut buf).unwrap();
        }
        prop_assert_eq!(buf.iter().filter(|&&b| b == b'\n').count(), examples.len());
        let opts = ReaderOptions { duplicate_ids: distill_data::DuplicateIds::Allow, ..Default::default() };
        let back: Vec<Example> = read_all(&buf, opts).into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(back, examples);
    }

    #[test]
    fn chat_round_trips(e in example()) {
        let mut buf = Vec::new();
        encode_line(&e, Encoding::Chat, EncodeOptions::default(), &mut buf).unwrap();
        let back: Vec<Example> = read_all(&buf, ReaderOptions::default()).into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(back, vec![Example::new(e.messages.clone(), e.response.clone())]);
    }

    #[test]
    fn lab_round_trips(prompt in text(), response in text()) {
        let e = Example::new(vec![Message::user(prompt)], response);
        let mut buf = Vec::new();
        encode_line(&e, Encoding::Lab, EncodeOptions::default(), &mut buf).unwrap();
        let back: Vec<Example> = read_all(&buf, ReaderOptions::default()).into_iter().map(Result::unwrap).collect();
        prop_assert_eq!(back, vec![e]);
    }

    #[test]
    fn ids_depend_only_on_messages(a in prompt_messages(), r1 in text(), r2 in text()) {
        prop_assert_eq!(Example::new(a.clone(), r1).id, Example::new(a.clone(), r2).id);
        let mut b = a.clone();
        b.last_mut().unwrap().content.push('x');
        prop_assert_ne!(Example::id_for(&a), Example::id_for(&b));
    }

    #[test]
    fn reader_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        for mode in [Mode::Strict, Mode::Lenient] {
            let opts = ReaderOptions { mode, max_line_bytes: 64, ..Default::default() };
            let items = read_all(&bytes, opts);
            // Strict mode stops at its first error; both modes end.
            if mode == Mode::Strict {
                prop_assert!(items.iter().filter(|r| r.is_err()).count() <= 1);
            }
            for e in items.iter().filter_map(|r| r.as_ref().err()) {
                let _ = e.to_string();
            }
        }
    }

    #[test]
    fn reader_never_panics_on_mutated_valid_files(
        e in example(),
        cuts in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
    ) {
        let mut buf = Vec::new();
        encode_line(&e, Encoding::Full, EncodeOptions::default(), &mut buf).unwrap();
        encode_line(&e, Encoding::Chat, EncodeOptions::default(), &mut buf).unwrap();
        for (i, b) in cuts {
            let at = i.index(buf.len());
            buf[at] = b;
        }
        let _ = read_all(&buf, ReaderOptions::lenient());
        let _ = read_all(&buf, ReaderOptions::default());
    }

    #[test]
    fn writer_then_reader_round_trips(examples in proptest::collection::vec(example(), 1..4)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.jsonl");
        let opts = WriterOptions { sync: SyncPolicy::OnClose, ..Default::default() };
        let mut w = ExampleWriter::open_with(&path, opts).unwrap();
        let mut written = Vec::new();
        for e in examples {
            if !w.contains(&e.id) {
                w.append(&e).unwrap();
                written.push(e);
            }
        }
        drop(w);
        prop_assert_eq!(distill_data::read_file(&path).unwrap(), written);
    }
}
