//! `POST /v1/completions`.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use glimprouter_engine::{Finished, TokenDelta};

use super::{check_common, in_request_span, CommonFields};
use crate::auth::Tenant;
use crate::backend::Backend;
use crate::error::ApiError;
use crate::generation::{collect_all, completion_tokens, start, Deadline, RequestCtx};
use crate::json::ApiJson;
use crate::middleware::RequestId;
use crate::params;
use crate::protocol::common::unix_now;
use crate::protocol::completions::{
    CompletionChoice, CompletionRequest, CompletionResponse, COMPLETION_OBJECT,
};
use crate::protocol::logprobs::CompletionLogprobs;
use crate::protocol::{RoutingSummary, UsageOut};
use crate::sse::{stream_response, to_json, ChunkWriter, StreamSpec};
use crate::state::AppState;

/// OpenAI's default for completions.
pub const DEFAULT_MAX_TOKENS: usize = 16;

pub async fn completions(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<CompletionRequest>,
) -> Result<Response, ApiError> {
    let ctx = RequestCtx {
        id: format!("cmpl-{}", request_id.id),
        tenant,
        arrival: request_id.arrival,
    };
    in_request_span(ctx, |ctx, span| handle(state, ctx, body, span)).await
}

async fn handle(
    state: Arc<AppState>,
    ctx: RequestCtx,
    body: CompletionRequest,
    span: tracing::Span,
) -> Result<Response, ApiError> {
    let checked = check_common(
        &state,
        CommonFields {
            shared: &body.shared,
            max_tokens: (body.max_tokens, "max_tokens"),
            logprobs: (body.logprobs, "logprobs"),
            other: &body.other,
        },
    )?;
    let echo = body.echo.unwrap_or(false);
    if echo && body.logprobs.is_some() {
        return Err(ApiError::invalid(
            "echo",
            "`echo` together with `logprobs` is not supported: prompt logprobs are not computed.",
        ));
    }
    let (stream, n, routing) = (checked.stream, checked.n, checked.routing);
    let prompts = params::prompts(&body.prompt, state.backend.codec())?;
    let mut sampling = checked.sampling;
    sampling.max_tokens = checked.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
    let prompt_tokens: usize = prompts.iter().map(|(ids, _)| ids.len()).sum();
    let ids: Vec<Vec<u32>> = prompts.iter().map(|(ids, _)| ids.clone()).collect();
    let (mut admission, mut jobs) = start(&state, &ctx, &ids, &sampling, &routing, n)?;
    tracing::info!(
        prompts = prompts.len(),
        n,
        prompt_tokens,
        max_tokens = sampling.max_tokens,
        stream,
        policy = routing.policy.as_str(),
        user = body.shared.user.as_deref().unwrap_or(""),
        "completion request accepted"
    );
    let deadline = Deadline::new(ctx.arrival, state.request_timeout);
    let created = unix_now();
    let model = state.backend.model_name().to_string();
    // The prompt text each choice starts with when echoing.
    let prefixes: Vec<String> = jobs
        .iter()
        .map(|job| {
            if echo {
                prompts[job.prompt].1.clone()
            } else {
                String::new()
            }
        })
        .collect();
    let want_logprobs = sampling.logprobs.is_some();
    let want_token_ids = body.return_token_ids.unwrap_or(false);

    if stream {
        let writer = CompletionChunks {
            id: ctx.id.clone(),
            created,
            model,
            backend: state.backend.clone(),
            offsets: vec![0; prefixes.len()],
            prefixes,
            want_logprobs,
            want_token_ids,
        };
        return Ok(stream_response(StreamSpec {
            writer,
            jobs,
            admission,
            include_usage: body.shared.stream_options.is_some_and(|o| o.include_usage),
            prompt_tokens,
            policy: routing.policy.as_str().to_string(),
            deadline,
            span,
        }));
    }

    let outputs = collect_all(&mut jobs, deadline).await?;
    let completion_tokens = completion_tokens(outputs.iter().map(|o| &o.finished));
    admission.settle((prompt_tokens + completion_tokens) as u64);
    drop(admission);
    let codec = state.backend.codec();
    let choices = jobs
        .iter()
        .zip(&outputs)
        .zip(prefixes)
        .map(|((job, output), prefix)| {
            let logprobs = want_logprobs.then(|| {
                let mut logprobs = CompletionLogprobs::default();
                logprobs.extend(codec, &output.logprobs, prefix.chars().count());
                logprobs
            });
            CompletionChoice {
                index: job.choice,
                text: prefix + &output.text,
                logprobs,
                finish_reason: Some(output.finished.reason.as_str()),
                stop_reason: output.finished.stop_reason.clone(),
                token_ids: want_token_ids.then(|| output.token_ids.clone()),
            }
        })
        .collect();
    let response = CompletionResponse {
        id: ctx.id,
        object: COMPLETION_OBJECT,
        created,
        model,
        choices,
        usage: Some(UsageOut::new(prompt_tokens, completion_tokens)),
        routing: Some(RoutingSummary::from_stats(
            routing.policy.as_str(),
            outputs.iter().map(|o| &o.finished.routing),
        )),
    };
    tracing::info!(completion_tokens, "completion request finished");
    Ok(Json(response).into_response())
}

/// Streamed completions chunks.
struct CompletionChunks {
    id: String,
    created: u64,
    model: String,
    backend: Arc<dyn Backend>,
    /// Echoed prompt of each choice ("" without echo).
    prefixes: Vec<String>,
    /// Characters of each choice's text sent so far (for `text_offset`).
    offsets: Vec<usize>,
    want_logprobs: bool,
    want_token_ids: bool,
}

impl CompletionChunks {
    fn chunk(
        &self,
        choices: Vec<CompletionChoice>,
        usage: Option<UsageOut>,
        routing: Option<RoutingSummary>,
    ) -> String {
        to_json(&CompletionResponse {
            id: self.id.clone(),
            object: COMPLETION_OBJECT,
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            routing,
        })
    }

    fn text_choice(
        index: usize,
        text: String,
        logprobs: Option<CompletionLogprobs>,
        token_ids: Option<Vec<u32>>,
    ) -> CompletionChoice {
        CompletionChoice {
            index,
            text,
            logprobs,
            finish_reason: None,
            stop_reason: None,
            token_ids,
        }
    }
}

impl ChunkWriter for CompletionChunks {
    fn opening(&mut self) -> Vec<String> {
        let echoed: Vec<(usize, String)> = self
            .prefixes
            .iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
            .map(|(i, p)| (i, p.clone()))
            .collect();
        echoed
            .into_iter()
            .map(|(index, text)| {
                if let Some(offset) = self.offsets.get_mut(index) {
                    *offset = text.chars().count();
                }
                self.chunk(vec![Self::text_choice(index, text, None, None)], None, None)
            })
            .collect()
    }

    fn delta(&mut self, choice: usize, delta: &TokenDelta) -> Option<String> {
        let logprobs = match (&delta.logprobs, self.want_logprobs) {
            (Some(entries), true) if !entries.is_empty() => {
                let mut logprobs = CompletionLogprobs::default();
                logprobs.extend(
                    self.backend.codec(),
                    entries,
                    self.offsets.get(choice).copied().unwrap_or(0),
                );
                Some(logprobs)
            }
            _ => None,
        };
        let token_ids =
            (self.want_token_ids && !delta.token_ids.is_empty()).then(|| delta.token_ids.clone());
        if delta.text.is_empty() && logprobs.is_none() && token_ids.is_none() {
            return None;
        }
        if let Some(offset) = self.offsets.get_mut(choice) {
            *offset += delta.text.chars().count();
        }
        Some(self.chunk(
            vec![Self::text_choice(
                choice,
                delta.text.clone(),
                logprobs,
                token_ids,
            )],
            None,
            None,
        ))
    }

    fn finish(
        &mut self,
        choice: usize,
        finished: &Finished,
        routing: Option<RoutingSummary>,
    ) -> String {
        let last = CompletionChoice {
            index: choice,
            text: String::new(),
            logprobs: None,
            finish_reason: Some(finished.reason.as_str()),
            stop_reason: finished.stop_reason.clone(),
            token_ids: None,
        };
        self.chunk(vec![last], None, routing)
    }

    fn usage(&mut self, usage: UsageOut, routing: RoutingSummary) -> String {
        self.chunk(Vec::new(), Some(usage), Some(routing))
    }
}
