//! A hand-written SVG chart of a [`ComparisonReport`]: grouped bars of request
//! latency (p50, p95, p99, TTFT p50) and of quality (accuracy, and BLEU and
//! ROUGE F1 of the student against the teacher, whose own score is 100 by
//! definition).

use std::fmt::Write;

use super::ComparisonReport;
use crate::rouge::RougeType;

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 380.0;
const PANEL: f64 = 400.0;
const TOP: f64 = 60.0;
const BOTTOM: f64 = 300.0;
const TEACHER: &str = "#4e79a7";
const STUDENT: &str = "#f28e2b";

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One group of two bars (teacher, student); a missing value draws no bar.
struct Group {
    label: &'static str,
    teacher: Option<f64>,
    student: Option<f64>,
}

/// Draws one panel of grouped bars at horizontal offset `x0`.
fn panel(out: &mut String, x0: f64, title: &str, unit: &str, groups: &[Group]) {
    let max = groups
        .iter()
        .flat_map(|g| [g.teacher, g.student])
        .flatten()
        .fold(0.0f64, f64::max);
    let scale = if max > 0.0 { (BOTTOM - TOP) / max } else { 0.0 };
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="40" font-size="15" text-anchor="middle" font-weight="bold">{}</text>"#,
        x0 + PANEL / 2.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<line x1="{x0:.1}" y1="{BOTTOM:.1}" x2="{:.1}" y2="{BOTTOM:.1}" stroke="#333"/>"##,
        x0 + PANEL
    );
    // Groups that neither model measured take no space.
    let groups: Vec<&Group> = groups
        .iter()
        .filter(|g| g.teacher.is_some() || g.student.is_some())
        .collect();
    if groups.is_empty() {
        return;
    }
    let slot = PANEL / groups.len() as f64;
    let bar = (slot * 0.35).min(40.0);
    for (i, g) in groups.iter().enumerate() {
        let center = x0 + slot * (i as f64 + 0.5);
        for (k, (value, color)) in [(g.teacher, TEACHER), (g.student, STUDENT)]
            .into_iter()
            .enumerate()
        {
            let Some(v) = value.filter(|v| v.is_finite() && *v >= 0.0) else {
                continue;
            };
            let h = v * scale;
            let x = center - bar + k as f64 * bar;
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{color}"><title>{v:.3} {unit}</title></rect>"#,
                BOTTOM - h,
                bar - 2.0
            );
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                x + (bar - 2.0) / 2.0,
                BOTTOM - h - 4.0,
                if v >= 100.0 {
                    format!("{v:.0}")
                } else {
                    format!("{v:.1}")
                }
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{center:.1}" y="{:.1}" font-size="12" text-anchor="middle">{}</text>"#,
            BOTTOM + 18.0,
            escape(g.label)
        );
    }
}

pub(super) fn render(report: &ComparisonReport) -> String {
    let (t, s) = (&report.teacher, &report.student);
    let ms = |m: &super::ModelSummary, f: fn(&crate::latency::LatencyReport) -> Option<f64>| {
        m.latency.as_ref().and_then(f).map(|v| v * 1e3)
    };
    let latency = [
        Group {
            label: "p50",
            teacher: ms(t, |l| Some(l.request_latency.p50)),
            student: ms(s, |l| Some(l.request_latency.p50)),
        },
        Group {
            label: "p95",
            teacher: ms(t, |l| Some(l.request_latency.p95)),
            student: ms(s, |l| Some(l.request_latency.p95)),
        },
        Group {
            label: "p99",
            teacher: ms(t, |l| Some(l.request_latency.p99)),
            student: ms(s, |l| Some(l.request_latency.p99)),
        },
        Group {
            label: "TTFT p50",
            teacher: ms(t, |l| l.ttft.map(|x| x.p50)),
            student: ms(s, |l| l.ttft.map(|x| x.p50)),
        },
    ];
    let mut quality = vec![Group {
        label: "accuracy %",
        teacher: t.accuracy.map(|a| a.accuracy * 100.0),
        student: s.accuracy.map(|a| a.accuracy * 100.0),
    }];
    if let Some(q) = &report.student_vs_teacher {
        // Against itself the teacher scores 100.
        quality.push(Group {
            label: "BLEU",
            teacher: Some(100.0),
            student: Some(q.bleu.score),
        });
        for (label, rt) in [
            ("ROUGE-1", RougeType::N(1)),
            ("ROUGE-2", RougeType::N(2)),
            ("ROUGE-L", RougeType::L),
        ] {
            if let Some(r) = q.rouge.get(rt) {
                quality.push(Group {
                    label,
                    teacher: Some(100.0),
                    student: Some(r.fmeasure * 100.0),
                });
            }
        }
    }

    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    panel(&mut out, 30.0, "Request latency (ms)", "ms", &latency);
    panel(
        &mut out,
        470.0,
        "Quality (0-100; BLEU/ROUGE vs teacher)",
        "",
        &quality,
    );
    // Legend.
    for (k, (name, color)) in [(&t.name, TEACHER), (&s.name, STUDENT)].into_iter().enumerate() {
        let y = HEIGHT - 30.0 + k as f64 * 16.0;
        let _ = writeln!(
            out,
            r#"<rect x="30" y="{:.1}" width="12" height="12" fill="{color}"/>"#,
            y - 10.0
        );
        let _ = writeln!(
            out,
            r#"<text x="48" y="{y:.1}" font-size="12">{}</text>"#,
            escape(name)
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn svg_is_well_formed_enough() {
        let svg = super::render(&super::super::tests::sample());
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("teacher &lt;SmolLM2-135M&gt;"));
        assert!(svg.contains("student &amp; friends"));
        assert_eq!(svg.matches("<rect").count(), 1 + 8 + 10 + 2, "{svg}");
        let empty = super::render(&super::super::ComparisonReport::default());
        assert!(empty.contains("Request latency"));
    }
}
