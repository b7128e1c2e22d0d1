//! Drives a run: test request, warm-up, then the measured phase in closed
//! or open loop, bounded by request count and/or time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio::sync::{mpsc, Semaphore};

use crate::arrival::ArrivalSchedule;
use crate::client::{error_chain, send_streaming, RequestFailure, RequestRecord, Target};
use crate::config::{LoadConfig, LoadMode};
use crate::error::LoadError;
use crate::metrics::measure;
use crate::prompts::load_prompts;
use crate::report::{Report, RequestDetail, RunSettings};
use crate::request::RequestFactory;

type Outcome = Result<RequestRecord, RequestFailure>;

/// Runs the load `config` describes and reports what it measured. Fails
/// only if the run cannot start (bad config, prompts, no model, or the
/// test request fails); failures of measured requests are counted instead.
pub async fn run_load(config: &LoadConfig) -> Result<Report, LoadError> {
    config.validate()?;
    let client = reqwest::Client::builder()
        .connect_timeout(config.request_timeout.min(Duration::from_secs(10)))
        .build()
        .map_err(LoadError::Client)?;
    let model = match &config.model {
        Some(m) => m.clone(),
        None => discover_model(&client, config).await?,
    };
    let prompts = load_prompts(&config.prompts, config.seed, config.max_requests)?;
    let factory = RequestFactory::new(
        config.endpoint,
        model.clone(),
        config.max_tokens,
        config.ignore_eos,
        config.extra_body.clone(),
        prompts,
    )?;
    let sender = Arc::new(Sender {
        client,
        target: Target {
            url: config.endpoint_url(),
            api_key: config.api_key.clone(),
            timeout: config.request_timeout,
        },
        factory,
    });

    // A broken URL, model or payload should stop the run at once, not
    // show up as 100% failures.
    if let Err(f) = sender.send(0, Instant::now()).await {
        return Err(LoadError::TestRequest {
            kind: f.kind,
            message: f.message,
        });
    }

    if config.warmup_requests > 0 {
        let width = in_flight_limit(&config.mode).unwrap_or(usize::MAX);
        let bounds = Bounds {
            requests: Some(config.warmup_requests),
            duration: None,
        };
        closed_loop(
            &sender,
            width,
            bounds,
            Instant::now(),
            &ProgressBar::hidden(),
        )
        .await;
    }

    let bounds = Bounds {
        requests: config.max_requests,
        duration: config.max_duration,
    };
    let progress = progress_bar(config);
    let phase_start = Instant::now();
    let outcomes = match &config.mode {
        LoadMode::Closed { concurrency } => {
            closed_loop(&sender, *concurrency, bounds, phase_start, &progress).await
        }
        LoadMode::Open {
            rate,
            burstiness,
            max_concurrency,
        } => {
            let schedule = ArrivalSchedule::new(*rate, *burstiness, config.seed)?;
            open_loop(
                &sender,
                schedule,
                *max_concurrency,
                bounds,
                phase_start,
                &progress,
            )
            .await
        }
    };
    let duration = phase_start.elapsed();
    progress.finish_and_clear();

    let (mut records, mut failures) = (Vec::new(), Vec::new());
    for outcome in outcomes {
        match outcome {
            Ok(r) => records.push(r),
            Err(f) => failures.push(f),
        }
    }
    records.sort_by_key(|r| r.start);
    Ok(Report {
        label: config.label.clone(),
        settings: RunSettings::new(config, model),
        measurements: measure(&records, &failures, duration, &config.percentiles),
        details: config
            .save_detailed
            .then(|| records.iter().map(RequestDetail::from).collect()),
    })
}

struct Sender {
    client: reqwest::Client,
    target: Target,
    factory: RequestFactory,
}

impl Sender {
    async fn send(&self, index: u64, phase_start: Instant) -> Outcome {
        let body = self.factory.body(index);
        send_streaming(&self.client, &self.target, &body, phase_start).await
    }
}

#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// Issue no more than this many requests.
    requests: Option<u64>,
    /// Issue nothing after this long.
    duration: Option<Duration>,
}

impl Bounds {
    fn allows(&self, index: u64, elapsed: Duration) -> bool {
        self.requests.is_none_or(|k| index < k) && self.duration.is_none_or(|d| elapsed < d)
    }
}

fn in_flight_limit(mode: &LoadMode) -> Option<usize> {
    match mode {
        LoadMode::Closed { concurrency } => Some(*concurrency),
        LoadMode::Open {
            max_concurrency, ..
        } => *max_concurrency,
    }
}

/// `concurrency` workers, each sending its next request as soon as the
/// previous one finished.
async fn closed_loop(
    sender: &Arc<Sender>,
    concurrency: usize,
    bounds: Bounds,
    phase_start: Instant,
    progress: &ProgressBar,
) -> Vec<Outcome> {
    let workers = bounds.requests.map_or(concurrency, |k| {
        concurrency.min(usize::try_from(k).unwrap_or(usize::MAX))
    });
    let next = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::unbounded_channel();
    for _ in 0..workers {
        let (sender, next, tx) = (sender.clone(), next.clone(), tx.clone());
        tokio::spawn(async move {
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if !bounds.allows(index, phase_start.elapsed()) {
                    break;
                }
                let outcome = sender.send(index, phase_start).await;
                if tx.send(outcome).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    collect(rx, progress).await
}

/// Requests sent at scheduled arrival times whether or not earlier ones
/// finished; `max_in_flight` (if any) holds arrivals back while that many
/// are running.
async fn open_loop(
    sender: &Arc<Sender>,
    mut schedule: ArrivalSchedule,
    max_in_flight: Option<usize>,
    bounds: Bounds,
    phase_start: Instant,
    progress: &ProgressBar,
) -> Vec<Outcome> {
    let limit = max_in_flight.map(|c| Arc::new(Semaphore::new(c)));
    let (tx, rx) = mpsc::unbounded_channel();
    let sender = sender.clone();
    tokio::spawn(async move {
        for index in 0u64.. {
            let at = schedule.next_arrival();
            if !bounds.allows(index, at) {
                break;
            }
            let Some(when) = phase_start.checked_add(at) else {
                break;
            };
            tokio::time::sleep_until(when.into()).await;
            let permit = match &limit {
                Some(s) => match s.clone().acquire_owned().await {
                    Ok(p) => Some(p),
                    Err(_) => break,
                },
                None => None,
            };
            // Waiting for a slot may have used up the time.
            if !bounds.allows(index, phase_start.elapsed()) {
                break;
            }
            let (sender, tx) = (sender.clone(), tx.clone());
            tokio::spawn(async move {
                let outcome = sender.send(index, phase_start).await;
                drop(permit);
                let _ = tx.send(outcome);
            });
        }
    });
    collect(rx, progress).await
}

/// Gathers outcomes until every sender is gone.
async fn collect(mut rx: mpsc::UnboundedReceiver<Outcome>, progress: &ProgressBar) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    let mut failed = 0u64;
    while let Some(outcome) = rx.recv().await {
        if outcome.is_err() {
            failed += 1;
            progress.set_message(format!("{failed} failed"));
        }
        progress.inc(1);
        outcomes.push(outcome);
    }
    outcomes
}

fn progress_bar(config: &LoadConfig) -> ProgressBar {
    if !config.show_progress {
        return ProgressBar::hidden();
    }
    let (bar, template) = match config.max_requests {
        Some(k) => (
            ProgressBar::new(k),
            "[{elapsed_precise}] {bar:40} {pos}/{len} requests {msg}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} [{elapsed_precise}] {pos} requests {msg}",
        ),
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(250));
    bar
}

/// The first model the server lists under `/v1/models`.
async fn discover_model(
    client: &reqwest::Client,
    config: &LoadConfig,
) -> Result<String, LoadError> {
    let url = config.models_url();
    let fail = |message: String| LoadError::ModelDiscovery {
        url: url.clone(),
        message,
    };
    let mut request = client.get(&url).timeout(config.request_timeout);
    if let Some(key) = &config.api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.map_err(|e| fail(error_chain(&e)))?;
    if !response.status().is_success() {
        return Err(fail(format!("HTTP {}", response.status())));
    }
    let listing: Value = response.json().await.map_err(|e| fail(error_chain(&e)))?;
    listing["data"][0]["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| fail("the model list is empty; pass --model".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_stop_on_count_or_time() {
        let b = Bounds {
            requests: Some(3),
            duration: Some(Duration::from_secs(1)),
        };
        assert!(b.allows(2, Duration::from_millis(999)));
        assert!(!b.allows(3, Duration::ZERO));
        assert!(!b.allows(0, Duration::from_secs(1)));
        let unbounded_count = Bounds {
            requests: None,
            duration: Some(Duration::from_secs(1)),
        };
        assert!(unbounded_count.allows(u64::MAX - 1, Duration::ZERO));
    }
}
