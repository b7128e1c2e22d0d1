//! `compare A.json B.json`: the main metrics of two reports side by side,
//! with the ratio B / A.

use std::fmt::Write as _;

use crate::metrics::LatencyStats;
use crate::report::Report;

/// Metric names accepted by [`metric`], in display order, with whether a
/// larger value is better.
pub const METRICS: &[(&str, bool)] = &[
    ("completed", true),
    ("failed", false),
    ("request_throughput", true),
    ("output_throughput", true),
    ("total_token_throughput", true),
    ("peak_output_throughput", true),
    ("ttft_mean_ms", false),
    ("ttft_p50_ms", false),
    ("ttft_p99_ms", false),
    ("tpot_mean_ms", false),
    ("tpot_p99_ms", false),
    ("itl_mean_ms", false),
    ("itl_p50_ms", false),
    ("itl_p99_ms", false),
    ("e2el_mean_ms", false),
    ("e2el_p99_ms", false),
    ("llm_step_ratio", false),
    ("draft_acceptance_rate", true),
];

/// One metric of a report by name (see [`METRICS`]); `None` if the report
/// lacks it (a percentile not computed, no routing data, unknown name).
pub fn metric(report: &Report, name: &str) -> Option<f64> {
    let m = &report.measurements;
    let latency = |stats: &LatencyStats, what: &str| match what {
        "mean" => (stats.count > 0).then_some(stats.mean_ms),
        "p50" => stats
            .percentile(50.0)
            .or(Some(stats.median_ms))
            .filter(|_| stats.count > 0),
        "p99" => stats.percentile(99.0).filter(|_| stats.count > 0),
        _ => None,
    };
    match name {
        "completed" => Some(m.completed as f64),
        "failed" => Some(m.failed as f64),
        "request_throughput" => Some(m.request_throughput),
        "output_throughput" => Some(m.output_throughput),
        "total_token_throughput" => Some(m.total_token_throughput),
        "peak_output_throughput" => Some(m.peak_output_throughput),
        "llm_step_ratio" => m.routing.as_ref().and_then(|r| r.llm_step_ratio),
        "draft_acceptance_rate" => m.routing.as_ref().and_then(|r| r.draft_acceptance_rate),
        _ => {
            let rest = name.strip_suffix("_ms")?;
            let (family, what) = rest.split_once('_')?;
            let stats = match family {
                "ttft" => &m.ttft,
                "tpot" => &m.tpot,
                "itl" => &m.itl,
                "e2el" => &m.e2el,
                _ => return None,
            };
            latency(stats, what)
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub name: &'static str,
    pub a: Option<f64>,
    pub b: Option<f64>,
    /// B / A, when both exist and A is not zero.
    pub ratio: Option<f64>,
    pub higher_is_better: bool,
}

pub fn compare(a: &Report, b: &Report) -> Vec<Row> {
    METRICS
        .iter()
        .map(|(name, higher_is_better)| {
            let (va, vb) = (metric(a, name), metric(b, name));
            let ratio = match (va, vb) {
                (Some(x), Some(y)) if x != 0.0 => Some(y / x),
                _ => None,
            };
            Row {
                name,
                a: va,
                b: vb,
                ratio,
                higher_is_better: *higher_is_better,
            }
        })
        .collect()
}

pub fn render(rows: &[Row], a_name: &str, b_name: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "A: {a_name}\nB: {b_name}");
    let _ = writeln!(
        out,
        "{:<26}{:>14}{:>14}{:>10}  better",
        "metric", "A", "B", "B/A"
    );
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.3}"));
    for r in rows {
        let better = match r.ratio {
            Some(x) if (x > 1.0) == r.higher_is_better && x != 1.0 => "B",
            Some(x) if x != 1.0 => "A",
            _ => "",
        };
        let ratio = r.ratio.map_or("-".to_string(), |x| format!("{x:.3}x"));
        let _ = writeln!(
            out,
            "{:<26}{:>14}{:>14}{:>10}  {better}",
            r.name,
            cell(r.a),
            cell(r.b),
            ratio
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;
    use crate::routing::RoutingSummary;

    #[test]
    fn ratios_are_b_over_a() {
        let a = sample_report();
        let mut b = sample_report();
        b.measurements.output_throughput = 125.0;
        b.measurements
            .itl
            .percentiles_ms
            .insert("p99".into(), 6.002);
        b.measurements.routing = Some(RoutingSummary {
            requests: 1,
            totals: Default::default(),
            mean_ratios: Default::default(),
            llm_step_ratio: Some(0.3),
            llm_token_ratio: None,
            draft_acceptance_rate: None,
        });
        let rows = compare(&a, &b);
        let row = |n: &str| rows.iter().find(|r| r.name == n).unwrap().clone();
        assert_eq!(row("output_throughput").ratio, Some(2.5));
        assert_eq!(
            row("itl_p99_ms").a,
            Some(3.001),
            "3 ms at 3 significant digits"
        );
        assert_eq!(row("itl_p99_ms").ratio, Some(2.0));
        assert_eq!(row("llm_step_ratio").a, None);
        assert_eq!(row("llm_step_ratio").b, Some(0.3));
        assert_eq!(row("llm_step_ratio").ratio, None);
        assert_eq!(row("ttft_mean_ms").a, None, "no TTFT samples: no value");

        let text = render(&rows, "a.json", "b.json");
        let line = text
            .lines()
            .find(|l| l.starts_with("output_throughput"))
            .unwrap();
        assert!(line.contains("2.500x") && line.ends_with('B'), "{line}");
        let line = text.lines().find(|l| l.starts_with("itl_p99_ms")).unwrap();
        assert!(line.ends_with('A'), "lower latency is better: {line}");
    }

    #[test]
    fn every_listed_metric_resolves_or_is_optional() {
        let r = sample_report();
        assert_eq!(metric(&r, "itl_p50_ms"), Some(2.0));
        assert_eq!(metric(&r, "e2el_p99_ms"), None, "no samples");
        assert_eq!(metric(&r, "itl_mean_ms"), Some(2.0));
        assert_eq!(metric(&r, "no_such_metric"), None);
        assert_eq!(metric(&r, "itl_p77_ms"), None);
    }
}
