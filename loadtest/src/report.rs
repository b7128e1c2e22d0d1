//! The run's report: settings plus measurements, as JSON and as the
//! terminal table `vllm bench serve` users know.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::RequestRecord;
use crate::config::{Endpoint, LoadConfig, LoadMode, PromptSource};
use crate::error::LoadError;
use crate::metrics::{LatencyStats, Measurements};

/// What was run, as recorded in the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSettings {
    pub url: String,
    pub endpoint: Endpoint,
    pub model: String,
    pub mode: LoadMode,
    pub max_requests: Option<u64>,
    pub max_duration_s: Option<f64>,
    pub max_tokens: Option<u32>,
    pub ignore_eos: bool,
    pub prompts: PromptSource,
    pub seed: u64,
    pub extra_body: Option<Map<String, Value>>,
    pub warmup_requests: u64,
    pub request_timeout_s: f64,
}

impl RunSettings {
    pub fn new(config: &LoadConfig, model: String) -> Self {
        RunSettings {
            url: config.endpoint_url(),
            endpoint: config.endpoint,
            model,
            mode: config.mode.clone(),
            max_requests: config.max_requests,
            max_duration_s: config.max_duration.map(|d| d.as_secs_f64()),
            max_tokens: config.max_tokens,
            ignore_eos: config.ignore_eos,
            prompts: config.prompts.clone(),
            seed: config.seed,
            extra_body: config.extra_body.clone(),
            warmup_requests: config.warmup_requests,
            request_timeout_s: config.request_timeout.as_secs_f64(),
        }
    }

    /// Requests in flight at most: the closed-loop concurrency or the
    /// open-loop cap.
    pub fn concurrency(&self) -> Option<usize> {
        match self.mode {
            LoadMode::Closed { concurrency } => Some(concurrency),
            LoadMode::Open {
                max_concurrency, ..
            } => max_concurrency,
        }
    }

    pub fn describe_mode(&self) -> String {
        match &self.mode {
            LoadMode::Closed { concurrency } => format!("closed loop, concurrency {concurrency}"),
            LoadMode::Open {
                rate,
                burstiness,
                max_concurrency,
            } => {
                let cap =
                    max_concurrency.map_or(String::new(), |c| format!(", at most {c} in flight"));
                format!("open loop, {rate} req/s, burstiness {burstiness}{cap}")
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub label: Option<String>,
    pub settings: RunSettings,
    #[serde(flatten)]
    pub measurements: Measurements,
    /// Per-request timings of the successful requests, in send order, when
    /// asked for (`--save-detailed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<RequestDetail>>,
}

/// One successful request's timings, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestDetail {
    /// Sent this long after the measured phase began.
    pub start_ms: f64,
    pub ttft_ms: f64,
    pub latency_ms: f64,
    /// Gaps between consecutive text chunks.
    pub itl_ms: Vec<f64>,
    pub output_tokens: u64,
    pub prompt_tokens: Option<u64>,
    pub finish_reason: Option<String>,
}

impl From<&RequestRecord> for RequestDetail {
    fn from(r: &RequestRecord) -> Self {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        RequestDetail {
            start_ms: ms(r.start),
            ttft_ms: ms(r.ttft()),
            latency_ms: ms(r.latency),
            itl_ms: r
                .chunk_offsets
                .windows(2)
                .map(|w| ms(w[1].saturating_sub(w[0])))
                .collect(),
            output_tokens: r.output_tokens,
            prompt_tokens: r.prompt_tokens,
            finish_reason: r.finish_reason.clone(),
        }
    }
}

impl Report {
    pub fn write_json(&self, path: &Path) -> Result<(), LoadError> {
        let text = serde_json::to_string_pretty(self).map_err(LoadError::Serialize)?;
        std::fs::write(path, text + "\n").map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })
    }

    pub fn read_json(path: &Path) -> Result<Report, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| LoadError::ReportFormat {
            path: path.to_path_buf(),
            source,
        })
    }

    /// The terminal table.
    pub fn to_table(&self) -> String {
        let m = &self.measurements;
        let s = &self.settings;
        let mut out = String::new();
        let title = match &self.label {
            Some(l) => format!(" Serving Benchmark Result: {l} "),
            None => " Serving Benchmark Result ".to_string(),
        };
        let _ = writeln!(out, "{title:=^60}");
        let mut line = |name: &str, value: String| {
            let _ = writeln!(out, "{name:<44}{value:>16}");
        };
        line("Target:", s.url.clone());
        line("Model:", s.model.clone());
        line("Load:", s.describe_mode());
        line("Successful requests:", m.completed.to_string());
        line("Failed requests:", m.failed.to_string());
        if m.resent > 0 {
            line("Re-sent on a new connection:", m.resent.to_string());
        }
        for (kind, n) in &m.failed_by_kind {
            line(&format!("  failed ({kind}):"), n.to_string());
        }
        line("Benchmark duration (s):", format!("{:.2}", m.duration_s));
        line("Total input tokens:", m.total_input_tokens.to_string());
        line("Total generated tokens:", m.total_output_tokens.to_string());
        line("Streamed text chunks:", m.total_text_chunks.to_string());
        if m.requests_without_usage > 0 {
            line(
                "Requests without usage (chunks counted):",
                m.requests_without_usage.to_string(),
            );
        }
        line(
            "Request throughput (req/s):",
            format!("{:.2}", m.request_throughput),
        );
        line(
            "Output token throughput (tok/s):",
            format!("{:.2}", m.output_throughput),
        );
        line(
            "Peak output token throughput (tok/s):",
            format!("{:.2}", m.peak_output_throughput),
        );
        line(
            "Total token throughput (tok/s):",
            format!("{:.2}", m.total_token_throughput),
        );
        let sections = [
            ("Time to First Token", "TTFT", &m.ttft),
            ("Time per Output Token (excl. 1st token)", "TPOT", &m.tpot),
            ("Inter-token Latency", "ITL", &m.itl),
            ("End-to-end Latency", "E2EL", &m.e2el),
        ];
        for (title, short, stats) in sections {
            latency_section(&mut out, title, short, stats);
        }
        if let Some(r) = &m.routing {
            let _ = writeln!(out, "{:-^60}", "Routing (from the server)");
            let mut line = |name: &str, value: String| {
                let _ = writeln!(out, "{name:<44}{value:>16}");
            };
            line("Requests with routing info:", r.requests.to_string());
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{x:.4}"));
            line("LLM step ratio (total):", opt(r.llm_step_ratio));
            line("LLM token ratio (total):", opt(r.llm_token_ratio));
            line("Draft acceptance rate:", opt(r.draft_acceptance_rate));
            for (k, v) in &r.totals {
                line(&format!("  total {k}:"), format!("{v}"));
            }
            for (k, v) in &r.mean_ratios {
                line(&format!("  mean {k}:"), format!("{v:.4}"));
            }
        }
        if !m.error_samples.is_empty() {
            let _ = writeln!(out, "{:-^60}", "Sample errors");
            for e in &m.error_samples {
                let _ = writeln!(out, "{e}");
            }
        }
        let _ = writeln!(out, "{}", "=".repeat(60));
        out
    }
}

fn latency_section(out: &mut String, title: &str, short: &str, stats: &LatencyStats) {
    let _ = writeln!(out, "{:-^60}", title);
    let mut line = |name: String, value: f64| {
        let _ = writeln!(out, "{name:<44}{value:>16.2}");
    };
    line(format!("Mean {short} (ms):"), stats.mean_ms);
    line(format!("Median {short} (ms):"), stats.median_ms);
    line(format!("Std {short} (ms):"), stats.std_ms);
    for (p, v) in stats.sorted_percentiles() {
        line(format!("P{p} {short} (ms):"), v);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metrics::latency_stats;

    pub(crate) fn sample_report() -> Report {
        let cfg = LoadConfig::new("http://127.0.0.1:8000");
        let mut m = Measurements {
            duration_s: 2.0,
            completed: 10,
            failed: 1,
            total_output_tokens: 100,
            output_throughput: 50.0,
            itl: latency_stats([1000, 2000, 3000], &[50.0, 99.0]),
            ..Default::default()
        };
        m.failed_by_kind.insert("http_503".into(), 1);
        Report {
            label: Some("llm c=1".into()),
            settings: RunSettings::new(&cfg, "tiny".into()),
            measurements: m,
            details: None,
        }
    }

    #[test]
    fn json_round_trips() {
        let r = sample_report();
        let dir =
            std::env::temp_dir().join(format!("glimp-loadtest-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.json");
        r.write_json(&path).unwrap();
        assert_eq!(Report::read_json(&path).unwrap(), r);
        let text = std::fs::read_to_string(&path).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["output_throughput"], 50.0,
            "measurements are top-level keys"
        );
        assert_eq!(v["itl"]["percentiles_ms"]["p99"], 3.001);

        std::fs::write(&path, "{}").unwrap();
        assert!(matches!(
            Report::read_json(&path),
            Err(LoadError::ReportFormat { .. })
        ));
    }

    #[test]
    fn table_shows_the_main_numbers() {
        let t = sample_report().to_table();
        for needle in [
            "Serving Benchmark Result: llm c=1",
            "Successful requests:",
            "failed (http_503):",
            "Output token throughput (tok/s):",
            "P99 ITL (ms):",
            "Mean TPOT (ms):",
            "closed loop, concurrency 1",
        ] {
            assert!(t.contains(needle), "missing {needle:?} in\n{t}");
        }
        assert!(
            !t.contains("Routing"),
            "no routing section without routing data"
        );
    }
}
