//! The Markdown form of a [`ComparisonReport`].

use std::fmt::Write;

use super::{ComparisonReport, ModelSummary};
use crate::rouge::RougeType;

/// Escapes the characters that would break a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map_or_else(|| "–".to_owned(), f)
}

/// `1234567` as `1.23 M`, keeping small numbers exact.
fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.1} k", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.2} M", n as f64 / 1e6),
        _ => format!("{:.2} B", n as f64 / 1e9),
    }
}

fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if (n as f64) < MIB {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{:.1} MiB", n as f64 / MIB)
    }
}

fn ms(seconds: f64) -> String {
    format!("{:.1} ms", seconds * 1e3)
}

fn ratio(r: Option<f64>) -> String {
    opt(r, |r| format!("{r:.3}×"))
}

fn row(out: &mut String, label: &str, t: String, s: String, r: String) {
    let _ = writeln!(out, "| {label} | {t} | {s} | {r} |");
}

pub(super) fn render(report: &ComparisonReport) -> String {
    let (t, s) = (&report.teacher, &report.student);
    let ratios = report.ratios();
    let mut out = String::new();
    let _ = writeln!(out, "# Teacher vs student\n");
    let _ = writeln!(
        out,
        "- teacher: {}\n- student: {}\n",
        cell(&t.name),
        cell(&s.name)
    );

    let _ = writeln!(out, "## Size and memory\n");
    let _ = writeln!(
        out,
        "| measure | teacher | student | student / teacher |\n|---|---:|---:|---:|"
    );
    row(
        &mut out,
        "parameters",
        opt(t.parameters, count),
        opt(s.parameters, count),
        ratio(ratios.parameters),
    );
    row(
        &mut out,
        "disk size",
        opt(t.disk_bytes, bytes),
        opt(s.disk_bytes, bytes),
        ratio(ratios.disk_bytes),
    );
    row(
        &mut out,
        "peak resident memory",
        opt(t.peak_rss_bytes, bytes),
        opt(s.peak_rss_bytes, bytes),
        ratio(ratios.peak_rss_bytes),
    );

    let _ = writeln!(out, "\n## Speed\n");
    let _ = writeln!(
        out,
        "| measure | teacher | student | student / teacher |\n|---|---:|---:|---:|"
    );
    let lat = |m: &ModelSummary,
               f: fn(&crate::latency::LatencyReport) -> Option<f64>,
               fmt: fn(f64) -> String| { opt(m.latency.as_ref().and_then(f), fmt) };
    row(
        &mut out,
        "tokens/s",
        lat(t, |l| Some(l.tokens_per_second), |v| format!("{v:.1}")),
        lat(s, |l| Some(l.tokens_per_second), |v| format!("{v:.1}")),
        ratio(ratios.tokens_per_second),
    );
    row(
        &mut out,
        "latency p50",
        lat(t, |l| Some(l.request_latency.p50), ms),
        lat(s, |l| Some(l.request_latency.p50), ms),
        ratio(ratios.latency_p50),
    );
    row(
        &mut out,
        "latency p95",
        lat(t, |l| Some(l.request_latency.p95), ms),
        lat(s, |l| Some(l.request_latency.p95), ms),
        ratio(ratios.latency_p95),
    );
    row(
        &mut out,
        "latency p99",
        lat(t, |l| Some(l.request_latency.p99), ms),
        lat(s, |l| Some(l.request_latency.p99), ms),
        "".into(),
    );
    row(
        &mut out,
        "time to first token p50",
        lat(t, |l| l.ttft.map(|x| x.p50), ms),
        lat(s, |l| l.ttft.map(|x| x.p50), ms),
        "".into(),
    );
    row(
        &mut out,
        "time per output token (mean)",
        lat(t, |l| l.tpot.map(|x| x.mean), ms),
        lat(s, |l| l.tpot.map(|x| x.mean), ms),
        "".into(),
    );

    let _ = writeln!(out, "\n## Quality\n");
    let _ = writeln!(
        out,
        "| measure | teacher | student | student / teacher |\n|---|---:|---:|---:|"
    );
    let acc = |m: &ModelSummary| {
        opt(m.accuracy, |a| {
            format!("{:.1}% ({}/{})", a.accuracy * 100.0, a.correct, a.total)
        })
    };
    row(
        &mut out,
        "multiple-choice accuracy",
        acc(t),
        acc(s),
        ratio(ratios.accuracy),
    );
    let ppl = |m: &ModelSummary| opt(m.perplexity, |p| format!("{:.2}", p.perplexity));
    row(&mut out, "perplexity", ppl(t), ppl(s), "".into());
    for (label, m) in [("teacher", t), ("student", s)] {
        if let Some(v) = &m.vs_references {
            let _ = writeln!(
                out,
                "| {label} vs references: BLEU / ROUGE-L F | | {:.2} / {:.4} | |",
                v.bleu.score,
                v.rouge.get(RougeType::L).map_or(0.0, |r| r.fmeasure)
            );
        }
    }

    if let Some(q) = &report.student_vs_teacher {
        let _ = writeln!(
            out,
            "\n## Student outputs against teacher outputs ({} segments)\n",
            q.segments
        );
        let _ = writeln!(out, "- BLEU = {:.2} (`{}`)", q.bleu.score, q.bleu.signature);
        let _ = writeln!(
            out,
            "- ROUGE (rouge-score, use_stemmer={}), mean over segments:\n",
            q.rouge_stemmer
        );
        let _ = writeln!(out, "| ROUGE | precision | recall | F1 |\n|---|---:|---:|---:|");
        for (rt, r) in &q.rouge.scores {
            let _ = writeln!(
                out,
                "| {rt} | {:.4} | {:.4} | {:.4} |",
                r.precision, r.recall, r.fmeasure
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_tables_and_escapes() {
        let md = super::render(&super::super::tests::sample());
        assert!(
            md.contains("| parameters | 134.52 M | 49.50 M | 0.368× |"),
            "{md}"
        );
        assert!(md.contains("| tokens/s | 16.8 | 50.0 | 2.976× |"), "{md}");
        assert!(md.contains("BLEU = "));
        assert!(md.contains("| rougeLsum |"));
        assert!(md.contains("student & friends"));
    }
}
