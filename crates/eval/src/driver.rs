//! Sends requests to the engine and times each one from submit to finish.
//!
//! Batched mode submits every request at once (the engine batches them as
//! it would concurrent users); sequential mode waits for each before
//! submitting the next. Events are read on a current-thread tokio runtime,
//! one task per request, so each finish is timed when it arrives rather
//! than when a loop gets round to it.

use std::time::{Duration, Instant};

use glimprouter_engine::{EngineError, EngineHandle, Finished, GenerateRequest, StreamEvent};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::plan::LatencyMode;
use crate::EvalError;

/// What became of one request.
#[derive(Debug, Clone)]
pub struct RequestOutcome {
    /// The completion text as streamed.
    pub text: String,
    /// Seconds from submit to the `Finished` event (or to the error).
    pub latency_s: f64,
    /// The finish record, or why the request failed.
    pub result: Result<Finished, String>,
}

/// Runs `requests` and returns their outcomes in the same order. A failed
/// request is an outcome, not an error; only running out of `timeout` (all
/// requests together) is, and it aborts whatever is still in flight.
pub fn run_requests(
    engine: &EngineHandle,
    requests: Vec<GenerateRequest>,
    mode: LatencyMode,
    timeout: Duration,
) -> Result<Vec<RequestOutcome>, EvalError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(EvalError::Runtime)?;
    let ids: Vec<String> = requests.iter().map(|r| r.request_id.clone()).collect();
    let work = async {
        match mode {
            LatencyMode::Batched => run_batched(engine, requests).await,
            LatencyMode::Sequential => {
                let mut outcomes = Vec::with_capacity(requests.len());
                for request in requests {
                    outcomes.push(submit(engine, request).await);
                }
                outcomes
            }
        }
    };
    match runtime.block_on(async { tokio::time::timeout(timeout, work).await }) {
        Ok(outcomes) => Ok(outcomes),
        Err(_) => {
            for id in &ids {
                engine.abort(id);
            }
            Err(EvalError::Timeout {
                secs: timeout.as_secs(),
            })
        }
    }
}

/// Submits every request at once, as far as the engine takes them: when it is full
/// (`Overloaded`), the next waits for one in flight to finish.
async fn run_batched(engine: &EngineHandle, requests: Vec<GenerateRequest>) -> Vec<RequestOutcome> {
    let mut tasks = tokio::task::JoinSet::new();
    let n = requests.len();
    let mut outcomes: Vec<Option<RequestOutcome>> = vec![None; n];
    let mut record = |joined: Result<(usize, RequestOutcome), _>| {
        if let Ok((i, outcome)) = joined {
            outcomes[i] = Some(outcome);
        }
    };
    for (i, mut request) in requests.into_iter().enumerate() {
        let start = Instant::now();
        request.arrival = start;
        loop {
            match engine.submit(request.clone()) {
                Ok(rx) => {
                    tasks.spawn(async move { (i, collect(rx, start).await) });
                }
                Err(EngineError::Overloaded { .. }) if !tasks.is_empty() => {
                    if let Some(joined) = tasks.join_next().await {
                        record(joined);
                    }
                    continue;
                }
                Err(e) => {
                    tasks.spawn(async move { (i, failed(e.to_string(), start)) });
                }
            }
            break;
        }
    }
    while let Some(joined) = tasks.join_next().await {
        record(joined);
    }
    outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| failed("the request's reader task failed".into(), Instant::now()))
        })
        .collect()
}

async fn submit(engine: &EngineHandle, mut request: GenerateRequest) -> RequestOutcome {
    let start = Instant::now();
    request.arrival = start;
    match engine.submit(request) {
        Ok(rx) => collect(rx, start).await,
        Err(e) => failed(e.to_string(), start),
    }
}

async fn collect(mut rx: UnboundedReceiver<StreamEvent>, start: Instant) -> RequestOutcome {
    let mut text = String::new();
    loop {
        match rx.recv().await {
            Some(StreamEvent::Token(delta)) => text.push_str(&delta.text),
            Some(StreamEvent::Finished(finished)) => {
                return RequestOutcome {
                    text,
                    latency_s: start.elapsed().as_secs_f64(),
                    result: Ok(finished),
                };
            }
            Some(StreamEvent::Error(e)) => {
                return RequestOutcome {
                    text,
                    latency_s: start.elapsed().as_secs_f64(),
                    result: Err(e.to_string()),
                };
            }
            None => {
                let latency_s = start.elapsed().as_secs_f64();
                return RequestOutcome {
                    text,
                    latency_s,
                    result: Err("the engine dropped the request".into()),
                };
            }
        }
    }
}

fn failed(message: String, start: Instant) -> RequestOutcome {
    RequestOutcome {
        text: String::new(),
        latency_s: start.elapsed().as_secs_f64(),
        result: Err(message),
    }
}
