//! ROUGE parity with rouge-score 0.1.2 (and NLTK's Porter stemmer) on the
//! committed fixtures: every pair, with and without the stemmer.

mod common;

use common::{assert_close, f64_of, fixture, read_json, read_jsonl, str_of};
use distill_eval::rouge::{PorterStemmer, RougeScorer, RougeType, mean_scores};

#[test]
fn porter_stems_match_nltk() {
    let text = std::fs::read_to_string(fixture("porter.tsv")).unwrap();
    let mut stemmer = PorterStemmer::new();
    let mut n = 0;
    for line in text.lines() {
        let (word, stem) = line.split_once('\t').unwrap();
        assert_eq!(stemmer.stem(word), stem, "stem of {word:?}");
        n += 1;
    }
    assert!(n >= 5000, "only {n} words");
}

#[test]
fn rouge_matches_every_pair_and_corpus_mean() {
    let pairs = read_jsonl("pairs.jsonl");
    let corpus = read_json("corpus.json");
    let types = RougeType::ALL_COMMON;
    for (key, stem) in [("rouge", false), ("rouge_stem", true)] {
        let scorer = RougeScorer::new(&types, stem).unwrap();
        let targets: Vec<&str> = pairs.iter().map(|p| str_of(&p["ref"])).collect();
        let predictions: Vec<&str> = pairs.iter().map(|p| str_of(&p["hyp"])).collect();
        let batch = scorer.score_batch(&targets, &predictions).unwrap();
        for (i, pair) in pairs.iter().enumerate() {
            let single = scorer.score(targets[i], predictions[i]);
            assert_eq!(single, batch[i], "pair {i}: batch and single scoring differ");
            for (k, t) in types.iter().enumerate() {
                let s = single.get(*t).unwrap();
                let e = &pair[key][k];
                let what = format!("pair {i} ({}) {key} {t}", str_of(&pair["kind"]));
                assert_close(s.precision, f64_of(&e[0]), &format!("{what} precision"));
                assert_close(s.recall, f64_of(&e[1]), &format!("{what} recall"));
                assert_close(s.fmeasure, f64_of(&e[2]), &format!("{what} F"));
            }
        }
        let mean = mean_scores(&batch).unwrap();
        for t in types {
            let e = &corpus[key][t.to_string()];
            let m = mean.get(t).unwrap();
            assert_close(m.precision, f64_of(&e[0]), &format!("corpus {key} {t} precision"));
            assert_close(m.recall, f64_of(&e[1]), &format!("corpus {key} {t} recall"));
            assert_close(m.fmeasure, f64_of(&e[2]), &format!("corpus {key} {t} F"));
        }
    }
}

#[test]
fn score_multi_matches() {
    let scorer = RougeScorer::new(&RougeType::ALL_COMMON, true).unwrap();
    for (i, seg) in read_jsonl("multiref.jsonl").iter().enumerate() {
        let targets: Vec<&str> = seg["refs"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| r.as_str())
            .collect();
        let s = scorer.score_multi(&targets, str_of(&seg["hyp"])).unwrap();
        for t in RougeType::ALL_COMMON {
            let e = &seg["rouge_stem"][t.to_string()];
            let got = s.get(t).unwrap();
            assert_close(
                got.fmeasure,
                f64_of(&e[2]),
                &format!("multiref segment {i} {t} F"),
            );
            assert_close(
                got.precision,
                f64_of(&e[0]),
                &format!("multiref segment {i} {t} P"),
            );
        }
    }
}

#[test]
fn python_whitespace_is_str_isspace() {
    let checks = read_json("python.json");
    let spaces: Vec<u32> = checks["isspace"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    for cp in (0..0x11_0000u32).filter_map(char::from_u32) {
        let expected = spaces.binary_search(&(cp as u32)).is_ok();
        assert_eq!(
            distill_eval::text::is_python_space(cp),
            expected,
            "U+{:04X}",
            cp as u32
        );
    }
}
