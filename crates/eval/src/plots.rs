//! The two figures: accuracy against latency across thresholds, and the
//! H_init histogram split by whether the SLM's step matched the LLM's.

use std::path::Path;

use plotters::prelude::*;

use crate::disagreement::DisagreementResult;
use crate::policy_run::PolicyResult;
use crate::report::front;
use crate::EvalError;

const SIZE: (u32, u32) = (900, 620);

fn plot_err(e: impl std::fmt::Display) -> EvalError {
    EvalError::Plot(e.to_string())
}

/// Series of the accuracy / latency plot: one line per swept policy, one
/// marker per fixed baseline.
fn colour(label: &str) -> RGBColor {
    match label {
        "glimp" => RGBColor(31, 119, 180),
        "glimp+spec" => RGBColor(23, 190, 207),
        "step-entropy" => RGBColor(255, 127, 14),
        "step-ppl" => RGBColor(148, 103, 189),
        "specreason" => RGBColor(214, 39, 40),
        "slm-only" => RGBColor(44, 160, 44),
        "llm-only" => RGBColor(0, 0, 0),
        "llm+spec" => RGBColor(127, 127, 127),
        _ => RGBColor(188, 189, 34),
    }
}

/// `pareto.png`: accuracy (%) against mean latency relative to LLM-only.
pub fn plot_pareto(policies: &[PolicyResult], path: &Path) -> Result<(), EvalError> {
    let point = |p: &PolicyResult| p.latency_vs_llm_only.map(|r| (r, p.accuracy * 100.0));
    let all: Vec<(f64, f64)> = policies.iter().filter_map(point).collect();
    if all.is_empty() {
        return Err(EvalError::Plot(
            "no run has a latency relative to LLM-only".into(),
        ));
    }
    let x_max = all.iter().map(|p| p.0).fold(1.0, f64::max) * 1.1;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Accuracy vs mean latency per problem (thresholds by the points)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..x_max, 0f64..105f64)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("mean latency per problem / LLM-only")
        .y_desc("accuracy (%)")
        .draw()
        .map_err(plot_err)?;

    let mut labels: Vec<&str> = Vec::new();
    for p in policies {
        if !labels.contains(&p.label.as_str()) {
            labels.push(&p.label);
        }
    }
    for label in labels {
        let mut pts: Vec<(f64, f64, Option<f32>)> = policies
            .iter()
            .filter(|p| p.label == label)
            .filter_map(|p| point(p).map(|(x, y)| (x, y, p.tau)))
            .collect();
        // Left to right: noisy latencies would zig-zag a line drawn in tau order.
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let c = colour(label);
        let line = chart
            .draw_series(LineSeries::new(
                pts.iter().map(|&(x, y, _)| (x, y)),
                c.stroke_width(2),
            ))
            .map_err(plot_err)?;
        line.label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
        chart
            .draw_series(
                pts.iter()
                    .map(|&(x, y, _)| Circle::new((x, y), 5, c.filled())),
            )
            .map_err(plot_err)?;
        // Thresholds next to the swept points.
        chart
            .draw_series(pts.iter().filter(|p| p.2.is_some() && pts.len() > 1).map(
                |&(x, y, tau)| {
                    EmptyElement::at((x, y))
                        + Text::new(
                            format!("{}", tau.unwrap_or(0.0)),
                            (6, -16),
                            ("sans-serif", 13).into_font().color(&c),
                        )
                },
            ))
            .map_err(plot_err)?;
    }
    // The front over every run, dashed.
    let grey = RGBColor(90, 90, 90);
    chart
        .draw_series(DashedLineSeries::new(
            front(policies)
                .into_iter()
                .map(|p| (p.latency_vs_llm_only, p.accuracy * 100.0)),
            6,
            4,
            grey.stroke_width(1),
        ))
        .map_err(plot_err)?
        .label("Pareto front (all runs)")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], grey.stroke_width(1)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

/// Counts of `values` in `bins` equal bins over `[0, max)`; the last bin
/// takes `max` itself.
pub fn bin_counts(values: &[f64], max: f64, bins: usize) -> Vec<usize> {
    let mut counts = vec![0; bins];
    if bins == 0 || max <= 0.0 {
        return counts;
    }
    for &v in values.iter().filter(|v| v.is_finite()) {
        let i = ((v.max(0.0) / max) * bins as f64) as usize;
        counts[i.min(bins - 1)] += 1;
    }
    counts
}

/// `h_init_hist.png`: share of each class's steps per H_init bin.
pub fn plot_h_init_histogram(d: &DisagreementResult, path: &Path) -> Result<(), EvalError> {
    const BINS: usize = 24;
    let agree: Vec<f64> = d
        .samples
        .iter()
        .filter(|s| !s.differs)
        .map(|s| s.h_init)
        .collect();
    let differ: Vec<f64> = d
        .samples
        .iter()
        .filter(|s| s.differs)
        .map(|s| s.h_init)
        .collect();
    let max = d
        .samples
        .iter()
        .map(|s| s.h_init)
        .fold(0.0, f64::max)
        .max(0.1)
        * 1.0001;
    let share = |values: &[f64]| -> Vec<f64> {
        let n = values.len().max(1) as f64;
        bin_counts(values, max, BINS)
            .into_iter()
            .map(|c| c as f64 / n * 100.0)
            .collect()
    };
    let (a, b) = (share(&agree), share(&differ));
    let y_max = a.iter().chain(&b).copied().fold(1.0, f64::max) * 1.1;
    let width = max / BINS as f64;

    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(plot_err)?;
    let auc = d
        .auc
        .map(|a| format!("{a:.3}"))
        .unwrap_or_else(|| "n/a".into());
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("H_init of the SLM at step starts (AUC {auc})"),
            ("sans-serif", 24),
        )
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(55)
        .build_cartesian_2d(0f64..max, 0f64..y_max)
        .map_err(plot_err)?;
    chart
        .configure_mesh()
        .x_desc("H_init (nats)")
        .y_desc("share of the class's steps (%)")
        .draw()
        .map_err(plot_err)?;
    let series = [
        (
            &a,
            RGBColor(44, 160, 44),
            0.0,
            format!("SLM step = LLM step ({})", agree.len()),
        ),
        (
            &b,
            RGBColor(214, 39, 40),
            0.5,
            format!("SLM step differs ({})", differ.len()),
        ),
    ];
    for (shares, c, shift, name) in series {
        let bars = shares.iter().enumerate().map(move |(i, &s)| {
            let x0 = (i as f64 + shift) * width;
            Rectangle::new([(x0, 0.0), (x0 + width / 2.0, s)], c.mix(0.8).filled())
        });
        chart
            .draw_series(bars)
            .map_err(plot_err)?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_err)?;
    root.present().map_err(plot_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_cover_the_range() {
        assert_eq!(
            bin_counts(&[0.0, 0.1, 0.5, 0.99, 1.0, 2.0, -1.0, f64::NAN], 1.0, 4),
            vec![3, 0, 1, 3]
        );
        assert_eq!(bin_counts(&[0.3], 0.0, 4), vec![0; 4]);
    }
}
