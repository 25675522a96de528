//! BLEU parity with sacrebleu 2.6.0 on the committed fixtures: every pair, every
//! tokenizer, case and smoothing variant, and the corpus scores with signatures.

mod common;

use common::{assert_close, config_of, f64_of, read_json, read_jsonl, str_of};
use distill_eval::bleu::{Bleu, BleuConfig, BleuTokenizer};
use distill_eval::chrf::{Chrf, ChrfConfig};
use distill_eval::rouge::RougeType;
use distill_eval::texts::{TextScoreOptions, score_text_files};

#[test]
fn tokenizers_match_sacrebleu() {
    let mut checked = 0;
    for (i, pair) in read_jsonl("pairs.jsonl").iter().enumerate() {
        let hyp = str_of(&pair["hyp"]);
        let stripped = distill_eval::text::python_rstrip(hyp);
        if let Some(expected) = pair.get("tok13a") {
            assert_eq!(
                BleuTokenizer::Tok13a.tokenize(stripped),
                str_of(expected),
                "13a, pair {i}: {hyp:?}"
            );
            checked += 1;
        }
        if let Some(expected) = pair.get("tokintl") {
            assert_eq!(
                BleuTokenizer::Intl.tokenize(stripped),
                str_of(expected),
                "intl, pair {i}: {hyp:?}"
            );
        }
    }
    assert!(checked > 500, "only {checked} tokenizations checked");
}

#[test]
fn sentence_bleu_matches_every_pair_and_variant() {
    let meta = read_json("meta.json");
    let variants: Vec<&str> = meta["bleu_variants"]
        .as_array()
        .unwrap()
        .iter()
        .map(str_of)
        .collect();
    assert_eq!(variants.len(), 32);
    let scorers: Vec<Bleu> = variants
        .iter()
        .map(|v| Bleu::new(config_of(v, true)).unwrap())
        .collect();
    let pairs = read_jsonl("pairs.jsonl");
    assert!(pairs.len() >= 2000);
    for (i, pair) in pairs.iter().enumerate() {
        let (hyp, reference) = (str_of(&pair["hyp"]), str_of(&pair["ref"]));
        for (k, scorer) in scorers.iter().enumerate() {
            let score = scorer.sentence_score(hyp, &[reference]).unwrap().score;
            let what = format!("pair {i} ({}) variant {}", str_of(&pair["kind"]), variants[k]);
            assert_close(score, f64_of(&pair["bleu"][k]), &what);
        }
    }
}

#[test]
fn corpus_bleu_matches_every_variant() {
    let corpus = read_json("corpus.json");
    let pairs = read_jsonl("pairs.jsonl");
    let hyps: Vec<&str> = pairs.iter().map(|p| str_of(&p["hyp"])).collect();
    let refs = vec![pairs.iter().map(|p| str_of(&p["ref"])).collect::<Vec<_>>()];
    for (section, eff) in [("bleu", false), ("bleu_eff", true)] {
        for (key, expected) in corpus[section].as_object().unwrap() {
            let bleu = Bleu::new(config_of(key, eff)).unwrap();
            let score = bleu.corpus_score(&hyps, &refs).unwrap();
            assert_close(
                score.score,
                f64_of(&expected["score"]),
                &format!("{section} {key}"),
            );
            assert_eq!(
                score.signature.to_string(),
                str_of(&expected["signature"]),
                "{section} {key}"
            );
            if section == "bleu" {
                assert_eq!(score.format(), str_of(&expected["formatted"]), "{key}");
                assert_eq!(score.sys_len, expected["sys_len"].as_u64().unwrap(), "{key}");
                assert_eq!(score.ref_len, expected["ref_len"].as_u64().unwrap(), "{key}");
                for n in 0..4 {
                    assert_close(score.precisions[n], f64_of(&expected["precisions"][n]), &key);
                    assert_close(score.bp, f64_of(&expected["bp"]), &key);
                }
                if !key.ends_with("add-k") {
                    let counts: Vec<u64> = expected["counts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_u64().unwrap())
                        .collect();
                    assert_eq!(score.counts, counts, "{key}");
                }
            }
        }
    }
}

#[test]
fn multiple_references_match() {
    let segs = read_jsonl("multiref.jsonl");
    let expected = read_json("multiref.json");
    let hyps: Vec<&str> = segs.iter().map(|s| str_of(&s["hyp"])).collect();
    let present: Vec<Vec<&str>> = segs
        .iter()
        .map(|s| {
            s["refs"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|r| r.as_str())
                .collect()
        })
        .collect();
    let sentence = Bleu::new(BleuConfig::sentence()).unwrap();
    for (i, s) in segs.iter().enumerate() {
        let score = sentence.sentence_score(hyps[i], &present[i]).unwrap();
        assert_close(score.score, f64_of(&s["bleu"]), &format!("multiref segment {i}"));
    }
    let bleu = Bleu::new(BleuConfig::default()).unwrap();
    let var = bleu.corpus_score_by_segment(&hyps, &present).unwrap();
    assert_close(
        var.score,
        f64_of(&expected["variable"]["score"]),
        &"variable references",
    );
    assert_eq!(
        var.signature.to_string(),
        str_of(&expected["variable"]["signature"])
    );

    // Missing references are replaced by the first one to make three full streams.
    let streams: Vec<Vec<&str>> = (0..3)
        .map(|k| {
            segs.iter()
                .map(|s| s["refs"][k].as_str().unwrap_or_else(|| str_of(&s["refs"][0])))
                .collect()
        })
        .collect();
    for (key, exp) in expected.as_object().unwrap() {
        if key == "variable" {
            continue;
        }
        let score = Bleu::new(config_of(key, false))
            .unwrap()
            .corpus_score(&hyps, &streams)
            .unwrap();
        assert_close(
            score.score,
            f64_of(&exp["score"]),
            &format!("3 references, {key}"),
        );
        assert_eq!(score.signature.to_string(), str_of(&exp["signature"]));
    }
}

#[test]
fn chrf_and_chrf_plus_plus_match() {
    let pairs = read_jsonl("pairs.jsonl");
    let corpus = read_json("corpus.json");
    let hyps: Vec<&str> = pairs.iter().map(|p| str_of(&p["hyp"])).collect();
    let refs = vec![pairs.iter().map(|p| str_of(&p["ref"])).collect::<Vec<_>>()];
    for (key, config) in [
        ("chrf", ChrfConfig::default()),
        ("chrfpp", ChrfConfig::plus_plus()),
    ] {
        let chrf = Chrf::new(config).unwrap();
        for (i, pair) in pairs.iter().enumerate() {
            let s = chrf.sentence_score(hyps[i], &[refs[0][i]]).unwrap();
            assert_close(
                s.score,
                f64_of(&pair[key]),
                &format!("pair {i} ({}) {key}", str_of(&pair["kind"])),
            );
        }
        let s = chrf.corpus_score(&hyps, &refs).unwrap();
        assert_close(s.score, f64_of(&corpus[key]["score"]), &format!("corpus {key}"));
        assert_eq!(s.signature(), str_of(&corpus[key]["signature"]));
    }
}

#[test]
fn three_reference_files_score_as_sacrebleu_and_rouge_score() {
    // `distill eval text --references A B C`: one file per reference stream, as sacrebleu's
    // command line takes them; ROUGE takes each segment's best reference (`score_multi`).
    let segs = read_jsonl("multiref.jsonl");
    let expected = read_json("multiref.json");
    let dir = tempfile::tempdir().unwrap();
    let lines = |texts: Vec<&str>| texts.iter().map(|t| format!("{t}\n")).collect::<String>();
    let hyps = dir.path().join("hyps.txt");
    std::fs::write(&hyps, lines(segs.iter().map(|s| str_of(&s["hyp"])).collect())).unwrap();
    let refs: Vec<std::path::PathBuf> = (0..3)
        .map(|k| {
            let path = dir.path().join(format!("refs{k}.txt"));
            let stream = segs
                .iter()
                .map(|s| s["refs"][k].as_str().unwrap_or_else(|| str_of(&s["refs"][0])))
                .collect();
            std::fs::write(&path, lines(stream)).unwrap();
            path
        })
        .collect();
    let scores = score_text_files(&hyps, &refs, &TextScoreOptions::default()).unwrap();
    assert_close(
        scores.bleu.score,
        f64_of(&expected["13a/mixed/exp"]["score"]),
        &"3 reference files",
    );
    for t in RougeType::ALL_COMMON {
        let mean = segs
            .iter()
            .map(|s| f64_of(&s["rouge_stem"][t.to_string()][2]))
            .sum::<f64>()
            / segs.len() as f64;
        assert_close(
            scores.rouge.get(t).unwrap().fmeasure,
            mean,
            &format!("{t} F over 3 files"),
        );
    }
}
