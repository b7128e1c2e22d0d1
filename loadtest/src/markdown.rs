//! `table A.json B.json ...`: one markdown row per report, for
//! benches/RESULTS.md.

use std::fmt::Write as _;

use crate::compare::metric;
use crate::config::LoadMode;
use crate::report::Report;

const COLUMNS: &[(&str, &str)] = &[
    ("ok", "completed"),
    ("failed", "failed"),
    ("req/s", "request_throughput"),
    ("out tok/s", "output_throughput"),
    ("peak tok/s", "peak_output_throughput"),
    ("TTFT p50 ms", "ttft_p50_ms"),
    ("TTFT p99 ms", "ttft_p99_ms"),
    ("TPOT mean ms", "tpot_mean_ms"),
    ("ITL p50 ms", "itl_p50_ms"),
    ("ITL p99 ms", "itl_p99_ms"),
    ("E2EL p99 ms", "e2el_p99_ms"),
    ("LLM step ratio", "llm_step_ratio"),
    ("draft accept", "draft_acceptance_rate"),
];

fn load(report: &Report) -> String {
    match &report.settings.mode {
        LoadMode::Closed { concurrency } => format!("c={concurrency}"),
        LoadMode::Open {
            rate,
            max_concurrency,
            ..
        } => match max_concurrency {
            Some(c) => format!("{rate} req/s, c<={c}"),
            None => format!("{rate} req/s"),
        },
    }
}

/// `names` label reports without a `label` (e.g. their file names).
pub fn table(reports: &[(String, Report)]) -> String {
    let mut out = String::from("| run | load |");
    for (title, _) in COLUMNS {
        let _ = write!(out, " {title} |");
    }
    out.push_str("\n|---|---|");
    out.push_str(&"---:|".repeat(COLUMNS.len()));
    out.push('\n');
    for (name, report) in reports {
        let label = report.label.as_deref().unwrap_or(name);
        let _ = write!(out, "| {label} | {} |", load(report));
        for (_, key) in COLUMNS {
            let cell = match metric(report, key) {
                Some(v) if *key == "completed" || *key == "failed" => format!("{v:.0}"),
                Some(v) if key.ends_with("ratio") || key.ends_with("rate") => format!("{v:.3}"),
                Some(v) => format!("{v:.1}"),
                None => "-".into(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    #[test]
    fn one_row_per_report_with_matching_columns() {
        let mut unlabelled = sample_report();
        unlabelled.label = None;
        let t = table(&[
            ("a.json".into(), sample_report()),
            ("b.json".into(), unlabelled),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 4);
        let cols = lines[0].matches('|').count();
        assert!(lines.iter().all(|l| l.matches('|').count() == cols), "{t}");
        assert!(
            lines[2].starts_with("| llm c=1 | c=1 | 10 | 1 |"),
            "{}",
            lines[2]
        );
        assert!(lines[2].contains("| 50.0 |"), "output tok/s: {}", lines[2]);
        assert!(lines[3].starts_with("| b.json |"), "{}", lines[3]);
    }
}
