//! `POST /v1/chat/completions`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use glimprouter_core::params::Policy;
use glimprouter_core::reasoning::{Opening, ReasoningParser, ReasoningSplitter};
use glimprouter_core::{Model, RoutingParams};
use glimprouter_engine::info::rest_of_context;
use glimprouter_engine::{Finished, TokenDelta};

use super::{check_common, in_request_span, CommonFields};
use crate::auth::Tenant;
use crate::backend::Backend;
use crate::error::ApiError;
use crate::generation::{collect_all, completion_tokens, start, Deadline, RequestCtx};
use crate::json::ApiJson;
use crate::middleware::RequestId;
use crate::params::chat_turns;
use crate::protocol::chat::{
    AssistantMessage, ChatChoice, ChatChunk, ChatChunkChoice, ChatDelta, ChatRequest, ChatResponse,
    CHAT_CHUNK_OBJECT, CHAT_OBJECT,
};
use crate::protocol::common::unix_now;
use crate::protocol::logprobs::ChatLogprobs;
use crate::protocol::{RoutingSummary, UsageOut};
use crate::sse::{stream_response, to_json, ChunkWriter, StreamSpec};
use crate::state::AppState;

pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    Extension(tenant): Extension<Tenant>,
    Extension(request_id): Extension<RequestId>,
    ApiJson(body): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let ctx = RequestCtx {
        id: format!("chatcmpl-{}", request_id.id),
        tenant,
        arrival: request_id.arrival,
    };
    in_request_span(ctx, |ctx, span| handle(state, ctx, body, span)).await
}

/// The prompt of a chat request, its messages through the model's chat
/// template: the token ids and the text.
fn chat_prompt(state: &AppState, body: &ChatRequest) -> Result<(Vec<u32>, String), ApiError> {
    let turns = chat_turns(&body.messages)?;
    let codec = state.backend.codec();
    let kwargs = body.chat_template_kwargs.clone().unwrap_or_default();
    let add_generation_prompt = body.add_generation_prompt.unwrap_or(true);
    let text = match codec.apply_chat_template(&turns, add_generation_prompt, &kwargs) {
        None => return Err(ApiError::bad_request(
            "This model has no chat template (tokenizer_config.json); use /v1/completions instead.",
        )),
        Some(Err(error)) => {
            return Err(ApiError::invalid(
                "messages",
                format!("Cannot apply the chat template: {error}"),
            ))
        }
        Some(Ok(text)) => text,
    };
    // The template already wrote the special tokens it wants.
    let ids = codec
        .encode(&text, false)
        .map_err(|e| ApiError::invalid("messages", format!("Cannot tokenize the messages: {e}")))?;
    if ids.is_empty() {
        return Err(ApiError::invalid(
            "messages",
            "The messages render to an empty prompt.",
        ));
    }
    Ok((ids, text))
}

/// With a reasoning parser, where each choice's output starts; and a prompt
/// whose template closed the thinking block (thinking off) has no steps to
/// route: the answer model serves it, and `routing.policy` says which.
fn reasoning_opening(
    state: &AppState,
    prompt_text: &str,
    routing: &mut RoutingParams,
) -> Option<(ReasoningParser, Opening)> {
    let parser = state.backend.reasoning_parser()?;
    let opening = parser.opening(prompt_text);
    if opening == Opening::Answer {
        routing.policy = match routing.answer_model {
            Model::Llm => Policy::Llm,
            Model::Slm => Policy::Slm,
        };
    }
    Some((parser, opening))
}

/// A choice's whole text as a message: thoughts apart from the answer when
/// a reasoning parser is set (vLLM's `reasoning`, and `reasoning_content`,
/// which DeepSeek's API and many clients read).
fn assistant_message(
    text: &str,
    reasoning: Option<(ReasoningParser, Opening)>,
) -> AssistantMessage {
    let Some((parser, opening)) = reasoning else {
        return AssistantMessage {
            role: "assistant",
            content: text.to_string(),
            reasoning: None,
            reasoning_content: None,
        };
    };
    let split = ReasoningSplitter::new(parser, opening).push_last(text);
    AssistantMessage {
        role: "assistant",
        content: split.content,
        reasoning: Some(split.reasoning.clone()),
        reasoning_content: Some(split.reasoning),
    }
}

async fn handle(
    state: Arc<AppState>,
    ctx: RequestCtx,
    body: ChatRequest,
    span: tracing::Span,
) -> Result<Response, ApiError> {
    let want_logprobs = body.logprobs.unwrap_or(false);
    let (max_tokens, max_tokens_param) = match body.max_completion_tokens {
        Some(m) => (Some(m), "max_completion_tokens"),
        None => (body.max_tokens, "max_tokens"),
    };
    let checked = check_common(
        &state,
        CommonFields {
            shared: &body.shared,
            max_tokens: (max_tokens, max_tokens_param),
            logprobs: (
                want_logprobs.then_some(body.top_logprobs.unwrap_or(0)),
                "top_logprobs",
            ),
            other: &body.other,
        },
    )?;
    if body.top_logprobs.is_some() && !want_logprobs {
        return Err(ApiError::invalid(
            "top_logprobs",
            "`top_logprobs` needs `logprobs` set to true.",
        ));
    }
    let (stream, n, mut routing) = (checked.stream, checked.n, checked.routing);
    let (prompt, prompt_text) = chat_prompt(&state, &body)?;
    let reasoning = reasoning_opening(&state, &prompt_text, &mut routing);
    let top_n = checked.sampling.logprobs.unwrap_or(0);
    let mut sampling = checked.sampling;
    sampling.max_tokens = checked
        .max_tokens
        .unwrap_or_else(|| rest_of_context(state.backend.max_model_len(), prompt.len()));
    let prompt_tokens = prompt.len();
    let (mut admission, mut jobs) = start(
        &state,
        &ctx,
        std::slice::from_ref(&prompt),
        &sampling,
        &routing,
        n,
    )?;
    tracing::info!(
        n,
        prompt_tokens,
        max_tokens = sampling.max_tokens,
        stream,
        policy = routing.policy.as_str(),
        user = body.shared.user.as_deref().unwrap_or(""),
        "chat request accepted"
    );
    let deadline = Deadline::new(ctx.arrival, state.request_timeout);
    let created = unix_now();
    let model = state.backend.model_name().to_string();

    if stream {
        let writer = ChatChunks {
            id: ctx.id.clone(),
            created,
            model,
            backend: state.backend.clone(),
            choices: jobs.iter().map(|j| j.choice).collect(),
            want_logprobs,
            top_n,
            splitters: jobs
                .iter()
                .map(|j| {
                    let splitter = reasoning.map(|(p, o)| ReasoningSplitter::new(p, o));
                    (j.choice, splitter)
                })
                .collect(),
        };
        return Ok(stream_response(StreamSpec {
            writer,
            jobs,
            admission,
            include_usage: body
                .shared
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
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
        .map(|(job, output)| ChatChoice {
            index: job.choice,
            message: assistant_message(&output.text, reasoning),
            logprobs: want_logprobs.then(|| {
                let mut logprobs = ChatLogprobs::default();
                logprobs.extend(codec, &output.logprobs, top_n);
                logprobs
            }),
            finish_reason: Some(output.finished.reason.as_str()),
            stop_reason: output.finished.stop_reason.clone(),
        })
        .collect();
    let response = ChatResponse {
        id: ctx.id,
        object: CHAT_OBJECT,
        created,
        model,
        choices,
        usage: UsageOut::new(prompt_tokens, completion_tokens),
        routing: RoutingSummary::from_stats(
            routing.policy.as_str(),
            outputs.iter().map(|o| &o.finished.routing),
        ),
    };
    tracing::info!(completion_tokens, "chat request finished");
    Ok(Json(response).into_response())
}

/// Streamed chat chunks.
struct ChatChunks {
    id: String,
    created: u64,
    model: String,
    backend: Arc<dyn Backend>,
    choices: Vec<usize>,
    want_logprobs: bool,
    top_n: usize,
    /// Per choice, with a reasoning parser: the split of its streamed text.
    splitters: HashMap<usize, Option<ReasoningSplitter>>,
}

impl ChatChunks {
    /// A piece of a choice's text as a delta: all content, or split.
    fn text_delta(&mut self, choice: usize, text: &str, last: bool) -> ChatDelta {
        match self.splitters.get_mut(&choice).and_then(Option::as_mut) {
            None => ChatDelta {
                role: None,
                content: (!text.is_empty() || !last).then(|| text.to_string()),
                ..ChatDelta::default()
            },
            Some(splitter) => {
                let split = if last {
                    splitter.push_last(text)
                } else {
                    splitter.push(text)
                };
                let some = |s: String| (!s.is_empty()).then_some(s);
                ChatDelta {
                    role: None,
                    content: some(split.content),
                    reasoning: some(split.reasoning.clone()),
                    reasoning_content: some(split.reasoning),
                }
            }
        }
    }

    fn chunk(
        &self,
        choices: Vec<ChatChunkChoice>,
        usage: Option<UsageOut>,
        routing: Option<RoutingSummary>,
    ) -> String {
        to_json(&ChatChunk {
            id: self.id.clone(),
            object: CHAT_CHUNK_OBJECT,
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
            routing,
        })
    }
}

impl ChunkWriter for ChatChunks {
    fn opening(&mut self) -> Vec<String> {
        self.choices
            .iter()
            .map(|&index| {
                let delta = ChatDelta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                    ..ChatDelta::default()
                };
                self.chunk(
                    vec![ChatChunkChoice {
                        index,
                        delta,
                        logprobs: None,
                        finish_reason: None,
                        stop_reason: None,
                    }],
                    None,
                    None,
                )
            })
            .collect()
    }

    fn delta(&mut self, choice: usize, delta: &TokenDelta) -> Option<String> {
        let logprobs = match (&delta.logprobs, self.want_logprobs) {
            (Some(entries), true) if !entries.is_empty() => {
                let mut logprobs = ChatLogprobs::default();
                logprobs.extend(self.backend.codec(), entries, self.top_n);
                Some(logprobs)
            }
            _ => None,
        };
        if delta.text.is_empty() && logprobs.is_none() {
            return None;
        }
        let delta = self.text_delta(choice, &delta.text, false);
        if delta == ChatDelta::default() && logprobs.is_none() {
            return None; // all of it held back, as a possible marker
        }
        Some(self.chunk(
            vec![ChatChunkChoice {
                index: choice,
                delta,
                logprobs,
                finish_reason: None,
                stop_reason: None,
            }],
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
        // What a reasoning split still held back is final now.
        let last = ChatChunkChoice {
            index: choice,
            delta: self.text_delta(choice, "", true),
            logprobs: None,
            finish_reason: Some(finished.reason.as_str()),
            stop_reason: finished.stop_reason.clone(),
        };
        self.chunk(vec![last], None, routing)
    }

    fn usage(&mut self, usage: UsageOut, routing: RoutingSummary) -> String {
        self.chunk(Vec::new(), Some(usage), Some(routing))
    }
}
