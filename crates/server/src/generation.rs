//! Submitting a request's choices to the engine and collecting their outputs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::mapref::entry::Entry;
use glimprouter_core::{RoutingParams, SamplingParams};
use glimprouter_engine::{EngineError, Finished, GenerateRequest, StreamEvent, TokenLogprob};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::OwnedSemaphorePermit;

use crate::auth::Tenant;
use crate::error::ApiError;
use crate::limits::TokenCharge;
use crate::metrics::RunningGuard;
use crate::middleware::refuse;
use crate::state::AppState;

/// Who is asking, and since when.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// `cmpl-...` / `chatcmpl-...`.
    pub id: String,
    pub tenant: Tenant,
    pub arrival: Instant,
}

/// The tenant's concurrency slot and its place in the running gauge, held
/// until the response (stream) ends.
pub struct Admission {
    _permit: Option<OwnedSemaphorePermit>,
    _running: RunningGuard,
    tokens: Option<TokenCharge>,
}

impl Admission {
    /// The request finished having used `tokens` (prompt and completion): the
    /// tenant's token budget gets back the rest of what it was charged. A request
    /// that fails or is aborted keeps its whole charge.
    pub fn settle(&mut self, tokens: u64) {
        if let Some(charge) = self.tokens.take() {
            charge.settle(tokens);
        }
    }
}

/// Checks the tenant's concurrency and token limits. `tokens`: prompt tokens
/// plus the completion tokens the request may produce.
fn admit(state: &AppState, tenant: &str, tokens: u64) -> Result<Admission, ApiError> {
    let permit = state
        .limits
        .try_acquire(tenant)
        .map_err(|e| refuse(state, tenant, e))?;
    let tokens = state
        .limits
        .check_tokens(tenant, tokens)
        .map_err(|e| refuse(state, tenant, e))?;
    Ok(Admission {
        _permit: permit,
        _running: state.metrics.running(tenant),
        tokens,
    })
}

/// Aborts its engine request when dropped before the request finished
/// (client gone, error in a sibling choice, timeout).
pub struct AbortGuard {
    state: Arc<AppState>,
    engine_id: String,
    finished: bool,
}

impl AbortGuard {
    pub fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!(engine_id = %self.engine_id, "aborting unfinished request");
            self.state.backend.abort(&self.engine_id);
        }
        self.state.inflight.remove(&self.engine_id);
    }
}

/// One choice being generated.
pub struct Job {
    /// The choice's index in the response.
    pub choice: usize,
    /// Which prompt it continues.
    pub prompt: usize,
    pub events: UnboundedReceiver<StreamEvent>,
    pub guard: AbortGuard,
}

/// Starts `n` choices per prompt, in three passes so that a refused request costs
/// nothing: every choice is validated (and the count capped) first, then the tenant is
/// charged for all of them, then they are enqueued. Choice `p * n + i` is the `i`-th of
/// prompt `p`; its engine id is the tenant's name and the request id, suffixed with
/// `-<choice>` when the request has more than one choice, so tenants never share ids.
pub fn start(
    state: &Arc<AppState>,
    ctx: &RequestCtx,
    prompts: &[Vec<u32>],
    sampling: &SamplingParams,
    routing: &RoutingParams,
    n: usize,
) -> Result<(Admission, Vec<Job>), ApiError> {
    let total = prompts.len().saturating_mul(n);
    if total > state.max_choices_per_request {
        state.metrics.record_refused("too_many_choices");
        let param = if prompts.len() > 1 { "prompt" } else { "n" };
        return Err(ApiError::invalid(
            param,
            format!(
                "This request asks for {total} completions ({} prompts x n = {n}), more than \
                 the {} allowed per request.",
                prompts.len(),
                state.max_choices_per_request
            ),
        ));
    }
    let mut requests = Vec::with_capacity(total);
    let mut cost: u64 = 0;
    for (p, prompt_ids) in prompts.iter().enumerate() {
        for i in 0..n {
            let choice = p * n + i;
            let mut choice_sampling = sampling.clone();
            // Seeded choices of one prompt must differ from each other yet stay reproducible.
            choice_sampling.seed = sampling.seed.map(|s| s.wrapping_add(i as u64));
            let request = GenerateRequest {
                request_id: engine_id(ctx, choice, total),
                tenant: ctx.tenant.0.to_string(),
                prompt_ids: prompt_ids.clone(),
                sampling: choice_sampling,
                routing: routing.clone(),
                arrival: ctx.arrival,
            };
            // The choices of a prompt differ only in their seed, which any value may
            // be: the first stands for all of them.
            if i == 0 {
                state.backend.validate(&request)?;
            }
            // Prompt tokens once per prompt, completion tokens per choice.
            let tokens = if i == 0 { prompt_ids.len() } else { 0 } + request.sampling.max_tokens;
            cost = cost.saturating_add(tokens as u64);
            requests.push((choice, p, request));
        }
    }
    let admission = admit(state, &ctx.tenant.0, cost)?;
    let mut jobs = Vec::with_capacity(total);
    for (choice, prompt, request) in requests {
        let engine_id = request.request_id.clone();
        match state.inflight.entry(engine_id.clone()) {
            Entry::Occupied(_) => {
                return Err(ApiError::bad_request(format!(
                    "Request id `{}` is already in use.",
                    display_id(ctx, choice, total)
                )));
            }
            Entry::Vacant(slot) => {
                slot.insert(());
            }
        }
        let mut guard = AbortGuard {
            state: state.clone(),
            engine_id,
            finished: false,
        };
        match state.backend.submit(request) {
            Ok(events) => jobs.push(Job {
                choice,
                prompt,
                events,
                guard,
            }),
            Err(error) => {
                // Never reached the engine: nothing to abort.
                guard.finish();
                if matches!(error, EngineError::Overloaded { .. }) {
                    state.metrics.record_refused("queue_full");
                }
                return Err(error.into());
            }
        }
    }
    Ok((admission, jobs))
}

/// The id a client sees for a choice: the request id, `-<choice>` when there are several.
fn display_id(ctx: &RequestCtx, choice: usize, total: usize) -> String {
    if total == 1 {
        ctx.id.clone()
    } else {
        format!("{}-{choice}", ctx.id)
    }
}

/// The engine's id for a choice: its display id under its tenant's name.
fn engine_id(ctx: &RequestCtx, choice: usize, total: usize) -> String {
    format!("{}/{}", ctx.tenant.0, display_id(ctx, choice, total))
}

/// Completion tokens over a request's finished choices (its `usage`).
pub fn completion_tokens<'a>(finished: impl IntoIterator<Item = &'a Finished>) -> usize {
    finished
        .into_iter()
        .map(|f| f.usage.completion_tokens)
        .sum()
}

/// The full output of one choice.
#[derive(Debug, Clone, PartialEq)]
pub struct ChoiceOutput {
    pub text: String,
    pub token_ids: Vec<u32>,
    pub logprobs: Vec<TokenLogprob>,
    pub finished: Finished,
}

/// Reads a choice's events to its end.
pub async fn collect(job: &mut Job) -> Result<ChoiceOutput, ApiError> {
    let mut text = String::new();
    let mut token_ids = Vec::new();
    let mut logprobs = Vec::new();
    while let Some(event) = job.events.recv().await {
        match event {
            StreamEvent::Token(delta) => {
                text.push_str(&delta.text);
                token_ids.extend_from_slice(&delta.token_ids);
                logprobs.extend(delta.logprobs.unwrap_or_default());
            }
            StreamEvent::Finished(finished) => {
                job.guard.finish();
                return Ok(ChoiceOutput {
                    text,
                    token_ids,
                    logprobs,
                    finished,
                });
            }
            StreamEvent::Error(error) => {
                job.guard.finish();
                return Err(error.into());
            }
        }
    }
    Err(ended_early())
}

pub fn ended_early() -> ApiError {
    ApiError::internal(
        "The engine ended the request without finishing it: its thread has stopped \
         (the server is shutting down).",
    )
}

pub fn timed_out(limit: Duration) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::GATEWAY_TIMEOUT,
        format!(
            "The request did not finish within {} s and was aborted.",
            limit.as_secs()
        ),
    )
}

/// When a request must be done by: `request_timeout` after its arrival.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    pub at: tokio::time::Instant,
    pub limit: Duration,
}

impl Deadline {
    /// `None` without a limit, or with one so large that the deadline is past any
    /// representable instant (it would never come).
    pub fn new(arrival: Instant, limit: Option<Duration>) -> Option<Self> {
        let limit = limit?;
        Some(Deadline {
            at: tokio::time::Instant::from_std(arrival.checked_add(limit)?),
            limit,
        })
    }
}

/// Collects every choice, in choice order; the first error wins (and the
/// other choices are aborted when the jobs are dropped).
pub async fn collect_all(
    jobs: &mut [Job],
    deadline: Option<Deadline>,
) -> Result<Vec<ChoiceOutput>, ApiError> {
    let all = futures::future::try_join_all(jobs.iter_mut().map(collect));
    match deadline {
        None => all.await,
        Some(d) => tokio::time::timeout_at(d.at, all)
            .await
            .map_err(|_| timed_out(d.limit))?,
    }
}
