//! Folds per-request records into the run's measurements: token counts,
//! throughputs and latency distributions (HdrHistogram, microsecond
//! resolution, 3 significant digits).

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::client::{RequestFailure, RequestRecord};
use crate::routing::{self, RoutingSummary};

/// How many failure messages the report keeps as examples.
const ERROR_SAMPLES: usize = 5;

/// Longest latency the histograms hold (one hour, in microseconds); longer
/// values are recorded as this.
const MAX_TRACKED_US: u64 = 3_600_000_000;

/// One latency distribution, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub count: u64,
    pub mean_ms: f64,
    pub std_ms: f64,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// Keyed `p50`, `p99`, `p99.9`...
    pub percentiles_ms: BTreeMap<String, f64>,
}

impl LatencyStats {
    pub fn percentile(&self, p: f64) -> Option<f64> {
        self.percentiles_ms.get(&percentile_key(p)).copied()
    }

    /// The percentiles in numeric order.
    pub fn sorted_percentiles(&self) -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = self
            .percentiles_ms
            .iter()
            .filter_map(|(k, ms)| Some((k.strip_prefix('p')?.parse::<f64>().ok()?, *ms)))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    }
}

pub fn percentile_key(p: f64) -> String {
    format!("p{p}")
}

/// Distribution of `values` (microseconds); all zero when there are none.
/// Count, mean, std, min and max are exact; median and percentiles are
/// nearest-rank from the histogram, to 3 significant digits.
pub fn latency_stats(values: impl IntoIterator<Item = u64>, percentiles: &[f64]) -> LatencyStats {
    // Fixed bounds: with auto-resize, `saturating_record` clamps to the
    // initial (tiny) range instead of growing. These constant bounds are valid.
    let Ok(mut hist) = Histogram::<u64>::new_with_bounds(1, MAX_TRACKED_US, 3) else {
        return LatencyStats::default();
    };
    let (mut sum, mut sum_sq, mut min, mut max) = (0.0f64, 0.0f64, u64::MAX, 0u64);
    for v in values {
        hist.saturating_record(v);
        sum += v as f64;
        sum_sq += (v as f64) * (v as f64);
        min = min.min(v);
        max = max.max(v);
    }
    if hist.is_empty() {
        return LatencyStats::default();
    }
    let n = hist.len() as f64;
    let mean = sum / n;
    let var = (sum_sq / n - mean * mean).max(0.0);
    let ms = |us: f64| us / 1000.0;
    LatencyStats {
        count: hist.len(),
        mean_ms: ms(mean),
        std_ms: ms(var.sqrt()),
        median_ms: ms(hist.value_at_quantile(0.5) as f64),
        min_ms: ms(min as f64),
        max_ms: ms(max as f64),
        percentiles_ms: percentiles
            .iter()
            .map(|p| {
                (
                    percentile_key(*p),
                    ms(hist.value_at_quantile(p / 100.0) as f64),
                )
            })
            .collect(),
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Measurements {
    /// From the first measured request sent to the last one finished.
    pub duration_s: f64,
    pub completed: u64,
    pub failed: u64,
    /// Failures by kind (`timeout`, `http_503`, ...).
    pub failed_by_kind: BTreeMap<String, u64>,
    /// Completed requests that were sent again on a new connection because
    /// the pooled one had been closed by the server (not failures).
    pub resent: u64,
    pub error_samples: Vec<String>,
    /// Sum of `usage.prompt_tokens` (0 where the server sent none).
    pub total_input_tokens: u64,
    /// Sum of `usage.completion_tokens` (the text-chunk count where absent).
    pub total_output_tokens: u64,
    /// Streamed chunks that carried generated text.
    pub total_text_chunks: u64,
    pub requests_without_usage: u64,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub total_token_throughput: f64,
    /// Most output tokens in any one-second window of the run.
    pub peak_output_throughput: f64,
    pub ttft: LatencyStats,
    /// (latency - TTFT) / (output tokens - 1), requests with >1 output token.
    pub tpot: LatencyStats,
    /// Gaps between consecutive text chunks.
    pub itl: LatencyStats,
    /// End-to-end latency.
    pub e2el: LatencyStats,
    pub routing: Option<RoutingSummary>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub fn measure(
    records: &[RequestRecord],
    failures: &[RequestFailure],
    duration: Duration,
    percentiles: &[f64],
) -> Measurements {
    let mut failed_by_kind = BTreeMap::new();
    for f in failures {
        *failed_by_kind.entry(f.kind.to_string()).or_insert(0) += 1;
    }
    let error_samples = failures
        .iter()
        .take(ERROR_SAMPLES)
        .map(|f| format!("{}: {}", f.kind, f.message))
        .collect();

    let total_input_tokens: u64 = records.iter().filter_map(|r| r.prompt_tokens).sum();
    let total_output_tokens: u64 = records.iter().map(|r| r.output_tokens).sum();
    let secs = duration.as_secs_f64();
    let per_s = |x: u64| if secs > 0.0 { x as f64 / secs } else { 0.0 };

    let ttft = records.iter().map(|r| micros(r.ttft()));
    let tpot = records.iter().filter(|r| r.output_tokens > 1).map(|r| {
        let decode = r.latency.saturating_sub(r.ttft());
        micros(decode) / (r.output_tokens - 1)
    });
    let itl = records.iter().flat_map(|r| {
        r.chunk_offsets
            .windows(2)
            .map(|w| micros(w[1].saturating_sub(w[0])))
    });
    let e2el = records.iter().map(|r| micros(r.latency));

    Measurements {
        duration_s: secs,
        completed: records.len() as u64,
        failed: failures.len() as u64,
        failed_by_kind,
        resent: records.iter().filter(|r| r.resent).count() as u64,
        error_samples,
        total_input_tokens,
        total_output_tokens,
        total_text_chunks: records.iter().map(|r| r.chunk_offsets.len() as u64).sum(),
        requests_without_usage: records.iter().filter(|r| !r.usage_reported).count() as u64,
        request_throughput: per_s(records.len() as u64),
        output_throughput: per_s(total_output_tokens),
        total_token_throughput: per_s(total_input_tokens + total_output_tokens),
        peak_output_throughput: peak_output_per_second(records),
        ttft: latency_stats(ttft, percentiles),
        tpot: latency_stats(tpot, percentiles),
        itl: latency_stats(itl, percentiles),
        e2el: latency_stats(e2el, percentiles),
        routing: routing::summarize(records.iter().filter_map(|r| r.routing.as_ref())),
    }
}

/// Output tokens per one-second window of the run, maximised. A chunk may
/// carry several tokens (speculative decoding) but the stream does not say
/// how many, so each request's tokens are spread evenly over its chunks.
pub fn peak_output_per_second(records: &[RequestRecord]) -> f64 {
    let mut per_second: BTreeMap<u64, f64> = BTreeMap::new();
    for r in records {
        if r.chunk_offsets.is_empty() {
            continue;
        }
        let per_chunk = r.output_tokens as f64 / r.chunk_offsets.len() as f64;
        for offset in &r.chunk_offsets {
            let second = (r.start + *offset).as_secs();
            *per_second.entry(second).or_default() += per_chunk;
        }
    }
    per_second.values().copied().fold(0.0, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::FailureKind;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn record(
        start_ms: u64,
        chunks_ms: &[u64],
        latency_ms: u64,
        out: u64,
        prompt: u64,
    ) -> RequestRecord {
        RequestRecord {
            start: ms(start_ms),
            chunk_offsets: chunks_ms.iter().map(|c| ms(*c)).collect(),
            latency: ms(latency_ms),
            output_tokens: out,
            prompt_tokens: Some(prompt),
            usage_reported: true,
            finish_reason: Some("length".into()),
            routing: None,
            resent: false,
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        // 1..=100 us: exact in the histogram (below 2048 units).
        let s = latency_stats(1..=100u64, &[50.0, 90.0, 99.0, 99.9, 100.0]);
        assert_eq!(s.count, 100);
        assert_eq!(s.percentile(50.0), Some(0.050));
        assert_eq!(s.percentile(90.0), Some(0.090));
        assert_eq!(s.percentile(99.0), Some(0.099));
        assert_eq!(s.percentile(99.9), Some(0.100));
        assert_eq!(s.percentile(100.0), Some(0.100));
        assert_eq!(s.median_ms, 0.050);
        assert_eq!(s.min_ms, 0.001);
        assert_eq!(s.max_ms, 0.100);
        assert!((s.mean_ms - 0.0505).abs() < 1e-12);
        // Population std of 1..=100 is sqrt((100^2 - 1) / 12).
        let std_us = ((100.0f64 * 100.0 - 1.0) / 12.0).sqrt();
        assert!((s.std_ms - std_us / 1000.0).abs() < 1e-9, "{}", s.std_ms);
        let order: Vec<f64> = s.sorted_percentiles().iter().map(|p| p.0).collect();
        assert_eq!(order, vec![50.0, 90.0, 99.0, 99.9, 100.0]);
    }

    #[test]
    fn large_values_keep_three_significant_digits() {
        let s = latency_stats([1_234_567u64, 7_654_321], &[50.0, 100.0]);
        for (p, want) in [(50.0, 1234.567), (100.0, 7654.321)] {
            let got = s.percentile(p).unwrap();
            assert!((got - want).abs() / want < 1e-3, "p{p}: {got}");
        }
        assert_eq!(s.min_ms, 1234.567, "min, max and mean are exact");
        assert_eq!(s.max_ms, 7654.321);
        assert_eq!(s.mean_ms, 4444.444);
        // Beyond the tracked hour the histogram saturates, the exact stats do not.
        let s = latency_stats([MAX_TRACKED_US * 2], &[50.0]);
        assert!(s.percentile(50.0).unwrap() <= MAX_TRACKED_US as f64 / 1000.0 * 1.001);
        assert_eq!(s.max_ms, MAX_TRACKED_US as f64 * 2.0 / 1000.0);
        assert_eq!(latency_stats(std::iter::empty(), &[50.0]).count, 0);
    }

    #[test]
    fn measure_computes_ttft_tpot_itl_and_throughput() {
        let records = vec![
            // TTFT 100, chunks every 10 ms, 4 tokens, done at 140.
            record(0, &[100, 110, 120, 130], 140, 4, 10),
            // One chunk carrying 3 tokens (speculation): TPOT from usage.
            record(500, &[200], 260, 3, 20),
            // Single token: no TPOT, no ITL.
            record(1500, &[50], 50, 1, 5),
        ];
        let failures = vec![
            RequestFailure {
                kind: FailureKind::Http(503),
                message: "busy".into(),
            },
            RequestFailure {
                kind: FailureKind::Http(503),
                message: "busy".into(),
            },
            RequestFailure {
                kind: FailureKind::Timeout,
                message: "slow".into(),
            },
        ];
        let m = measure(&records, &failures, Duration::from_secs(2), &[50.0, 99.0]);
        assert_eq!(m.completed, 3);
        assert_eq!(m.failed, 3);
        assert_eq!(m.failed_by_kind["http_503"], 2);
        assert_eq!(m.failed_by_kind["timeout"], 1);
        assert_eq!(m.error_samples.len(), 3);
        assert_eq!(m.total_output_tokens, 8);
        assert_eq!(m.total_input_tokens, 35);
        assert_eq!(m.total_text_chunks, 6);
        assert_eq!(m.request_throughput, 1.5);
        assert_eq!(m.output_throughput, 4.0);
        assert_eq!(m.total_token_throughput, 43.0 / 2.0);

        assert_eq!(m.ttft.count, 3);
        assert_eq!(m.ttft.min_ms, 50.0);
        assert_eq!(m.ttft.max_ms, 200.0);
        // TPOT: (140-100)/3 = 13.333 ms and (260-200)/2 = 30 ms.
        assert_eq!(m.tpot.count, 2);
        assert_eq!(m.tpot.min_ms, 13.333);
        assert_eq!(m.tpot.max_ms, 30.0);
        // ITL: three 10 ms gaps from the first request only.
        assert_eq!(m.itl.count, 3);
        assert_eq!(m.itl.mean_ms, 10.0);
        assert_eq!(m.itl.std_ms, 0.0);
        let p99 = m.itl.percentile(99.0).unwrap();
        assert!((p99 - 10.0).abs() / 10.0 < 1e-3, "{p99}");
        assert_eq!(m.e2el.count, 3);
        assert!(m.routing.is_none());
    }

    #[test]
    fn peak_counts_tokens_per_wall_clock_second() {
        let records = vec![
            record(0, &[100, 200, 300], 300, 3, 1),
            // 2 chunks at 1.1 s and 1.2 s carrying 6 tokens: 3 per chunk.
            record(1000, &[100, 200], 200, 6, 1),
            record(900, &[200, 250, 300], 300, 3, 1),
        ];
        // second 0: 3; second 1: 6 + 3 = 9.
        assert_eq!(peak_output_per_second(&records), 9.0);
    }
}
