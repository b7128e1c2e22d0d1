//! Command line: `glimp-loadtest --url URL [options]` runs a load test;
//! `compare` and `table` read saved reports.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{
    Endpoint, LoadConfig, LoadMode, PromptSource, DEFAULT_MAX_DURATION, DEFAULT_REQUESTS,
};
use crate::error::LoadError;
use crate::prompts::task_dataset;
use crate::request::parse_extra_body;

#[derive(Debug, Parser)]
#[command(
    name = "glimp-loadtest",
    version,
    about = "Load-test an OpenAI-compatible server: tokens/s, TTFT, TPOT, ITL and latency percentiles.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the main metrics of two reports and their ratio B / A.
    Compare {
        a: PathBuf,
        b: PathBuf,
        /// Print only this metric's ratio B / A (e.g. output_throughput, itl_p99_ms).
        #[arg(long)]
        metric: Option<String>,
    },
    /// Print a markdown table with one row per report.
    Table {
        #[arg(required = true)]
        reports: Vec<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dataset {
    /// The project's reasoning-task prompts, read from benches/task_prompts.jsonl.
    Task,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Server base URL, e.g. http://127.0.0.1:8000.
    #[arg(long, required = true)]
    pub url: Option<String>,
    #[arg(long, value_enum, default_value_t = Endpoint::Completions)]
    pub endpoint: Endpoint,
    /// Model name; default: the first model the server lists.
    #[arg(long)]
    pub model: Option<String>,
    /// Closed loop: this many requests in flight. With --rate: the most in flight.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open loop: requests per second (Gamma arrivals; `inf` = all at once).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Gamma shape of open-loop gaps: 1 = Poisson, <1 burstier, >1 more even.
    #[arg(long, default_value_t = 1.0)]
    pub burstiness: f64,
    /// Measured requests to send [default: 100 unless --duration is given].
    #[arg(long)]
    pub requests: Option<u64>,
    /// Stop sending after this many seconds (requests in flight finish)
    /// [default: 3600, a safety bound].
    #[arg(long)]
    pub duration: Option<f64>,
    /// Output tokens per request (overrides the prompts' own; default 128).
    #[arg(long)]
    pub max_tokens: Option<u32>,
    /// Ask the server to ignore end-of-sequence (vLLM, glimp) so every
    /// request generates --max-tokens.
    #[arg(long)]
    pub ignore_eos: bool,
    /// JSONL prompts: {"prompt": "text"}, {"prompt": [token ids]} or {"messages": [...]}, optional "max_tokens".
    #[arg(long, group = "source")]
    pub prompts: Option<PathBuf>,
    /// A named dataset (`task` reads benches/task_prompts.jsonl).
    #[arg(long, value_enum, group = "source")]
    pub dataset: Option<Dataset>,
    /// Random prompts of this many words [default: 32].
    #[arg(long, group = "source")]
    pub random_input_len: Option<usize>,
    /// Bearer token sent as Authorization.
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Seed for random prompts and open-loop arrivals.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// JSON object merged into every request body, e.g.
    /// '{"routing": {"policy": "glimp", "tau": 1.0}}'.
    #[arg(long)]
    pub extra_body: Option<String>,
    /// Unmeasured requests after the test request.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Seconds one request may take, stream included.
    #[arg(long, default_value_t = 300.0)]
    pub timeout: f64,
    /// Percentiles to report.
    #[arg(long, value_delimiter = ',', default_value = "50,90,99")]
    pub percentiles: Vec<f64>,
    /// Name stored in the report and shown by `table`.
    #[arg(long)]
    pub label: Option<String>,
    /// Keep every request's TTFT, ITLs and latency in the JSON report.
    #[arg(long)]
    pub save_detailed: bool,
    /// No progress bar.
    #[arg(long)]
    pub no_progress: bool,
}

fn seconds(flag: &str, s: f64) -> Result<Duration, LoadError> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| LoadError::Config(format!("{flag} must be a positive number of seconds")))
}

impl RunArgs {
    /// The run these flags describe; `--dataset` paths resolve under `root`.
    pub fn into_config(self, root: &std::path::Path) -> Result<LoadConfig, LoadError> {
        let url = self
            .url
            .ok_or_else(|| LoadError::Config("--url is required".into()))?;
        let mode = match self.rate {
            Some(rate) => LoadMode::Open {
                rate,
                burstiness: self.burstiness,
                max_concurrency: self.concurrency,
            },
            None => LoadMode::Closed {
                concurrency: self.concurrency.unwrap_or(1),
            },
        };
        let duration = self
            .duration
            .map(|s| seconds("--duration", s))
            .transpose()?;
        let max_requests = match (self.requests, duration) {
            (None, None) => Some(DEFAULT_REQUESTS),
            (k, _) => k,
        };
        let max_duration = Some(duration.unwrap_or(DEFAULT_MAX_DURATION));
        let prompts = match (self.prompts, self.dataset, self.random_input_len) {
            (Some(path), _, _) => PromptSource::File { path },
            (_, Some(Dataset::Task), _) => task_dataset(root)?,
            (_, _, Some(input_len)) => PromptSource::Random { input_len },
            (None, None, None) => PromptSource::Random { input_len: 32 },
        };
        let extra_body = self
            .extra_body
            .as_deref()
            .map(parse_extra_body)
            .transpose()?;
        let config = LoadConfig {
            base_url: url,
            endpoint: self.endpoint,
            model: self.model,
            mode,
            max_requests,
            max_duration,
            max_tokens: self.max_tokens,
            ignore_eos: self.ignore_eos,
            prompts,
            api_key: self.api_key.filter(|k| !k.is_empty()),
            seed: self.seed,
            extra_body,
            warmup_requests: self.warmup,
            request_timeout: seconds("--timeout", self.timeout)?,
            percentiles: self.percentiles,
            label: self.label,
            save_detailed: self.save_detailed,
            show_progress: !self.no_progress,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("glimp-loadtest").chain(args.iter().copied()))
    }

    fn config(args: &[&str]) -> Result<LoadConfig, LoadError> {
        let cli = parse(args).unwrap();
        cli.run
            .into_config(std::path::Path::new("/nonexistent-root"))
    }

    #[test]
    fn defaults_are_a_bounded_closed_loop() {
        let c = config(&["--url", "http://127.0.0.1:9"]).unwrap();
        assert_eq!(c.mode, LoadMode::Closed { concurrency: 1 });
        assert_eq!(c.max_requests, Some(DEFAULT_REQUESTS));
        assert_eq!(
            c.max_duration,
            Some(DEFAULT_MAX_DURATION),
            "time is bounded too"
        );
        assert_eq!(c.prompts, PromptSource::Random { input_len: 32 });
        assert_eq!(c.percentiles, vec![50.0, 90.0, 99.0]);
        assert_eq!(c.endpoint, Endpoint::Completions);
    }

    #[test]
    fn rate_makes_an_open_loop_capped_by_concurrency() {
        let c = config(&[
            "--url",
            "http://127.0.0.1:9",
            "--rate",
            "4",
            "--burstiness",
            "0.5",
            "--concurrency",
            "8",
            "--duration",
            "2.5",
            "--endpoint",
            "chat",
            "--extra-body",
            r#"{"routing":{"policy":"llm"}}"#,
            "--percentiles",
            "50,99.9",
        ])
        .unwrap();
        assert_eq!(
            c.mode,
            LoadMode::Open {
                rate: 4.0,
                burstiness: 0.5,
                max_concurrency: Some(8)
            }
        );
        assert_eq!(c.max_requests, None, "duration alone bounds the run");
        assert_eq!(c.max_duration, Some(Duration::from_millis(2500)));
        assert_eq!(c.endpoint, Endpoint::Chat);
        assert_eq!(c.extra_body.unwrap()["routing"]["policy"], "llm");
        assert_eq!(c.percentiles, vec![50.0, 99.9]);
    }

    #[test]
    fn bad_flags_are_errors() {
        assert!(parse(&[]).is_err(), "--url is required");
        assert!(
            parse(&[
                "--url",
                "http://x",
                "--prompts",
                "a.jsonl",
                "--random-input-len",
                "5"
            ])
            .is_err(),
            "one prompt source"
        );
        assert!(config(&["--url", "http://127.0.0.1:9", "--extra-body", "[]"]).is_err());
        assert!(config(&["--url", "http://127.0.0.1:9", "--duration=-1"]).is_err());
        assert!(config(&["--url", "http://127.0.0.1:9", "--duration", "0"]).is_err());
        assert!(config(&["--url", "http://127.0.0.1:9", "--concurrency", "0"]).is_err());
        let err = config(&["--url", "http://127.0.0.1:9", "--dataset", "task"]).unwrap_err();
        assert!(
            err.to_string().contains("benches/task_prompts.jsonl"),
            "{err}"
        );
    }

    #[test]
    fn subcommands_need_no_url() {
        let cli = parse(&["compare", "a.json", "b.json"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Compare { metric: None, .. })
        ));
        let cli = parse(&[
            "compare",
            "a.json",
            "b.json",
            "--metric",
            "output_throughput",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Compare {
                metric: Some(_),
                ..
            })
        ));
        let cli = parse(&["table", "a.json", "b.json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Table { reports }) if reports.len() == 2));
    }
}
