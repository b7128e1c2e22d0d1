//! Server-sent events: the choices' engine events turned into OpenAI chunks,
//! ending with an optional usage chunk and `data: [DONE]`.
//!
//! The stream owns the jobs: when the client goes away the body stream is
//! dropped, which drops the jobs and so aborts their engine requests.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use glimprouter_engine::{Finished, StreamEvent, TokenDelta};
use serde::Serialize;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamMap;
use tracing::Instrument;

use crate::error::ApiError;
use crate::generation::{
    completion_tokens, ended_early, timed_out, AbortGuard, Admission, Deadline, Job,
};
use crate::protocol::{RoutingSummary, UsageOut};

/// Writes one endpoint's chunk shapes.
pub trait ChunkWriter: Send + 'static {
    /// Chunks sent before any token (chat: the assistant role; completions: echoed prompts).
    fn opening(&mut self) -> Vec<String>;
    /// A choice's new tokens; `None` when there is nothing to send yet.
    fn delta(&mut self, choice: usize, delta: &TokenDelta) -> Option<String>;
    /// A choice's last chunk; `routing` is set on the last choice to finish
    /// when no usage chunk follows.
    fn finish(
        &mut self,
        choice: usize,
        finished: &Finished,
        routing: Option<RoutingSummary>,
    ) -> String;
    /// The extra chunk of `stream_options.include_usage`.
    fn usage(&mut self, usage: UsageOut, routing: RoutingSummary) -> String;
}

/// Serializes a chunk; our chunk types always serialize.
pub fn to_json(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|e| {
        format!("{{\"error\":{{\"message\":\"serializing a chunk failed: {e}\"}}}}")
    })
}

pub struct StreamSpec<W> {
    pub writer: W,
    pub jobs: Vec<Job>,
    pub admission: Admission,
    pub include_usage: bool,
    /// Prompt tokens of the request (each prompt counted once).
    pub prompt_tokens: usize,
    pub policy: String,
    pub deadline: Option<Deadline>,
    pub span: tracing::Span,
}

struct Driver<W> {
    writer: W,
    events: StreamMap<usize, UnboundedReceiverStream<StreamEvent>>,
    /// (choice, guard) of every choice.
    guards: Vec<(usize, AbortGuard)>,
    finished: Vec<Option<Finished>>,
    pending: VecDeque<String>,
    done: bool,
    include_usage: bool,
    prompt_tokens: usize,
    policy: String,
    deadline: Option<Deadline>,
    admission: Admission,
}

pub fn stream_response<W: ChunkWriter>(spec: StreamSpec<W>) -> Response {
    let StreamSpec {
        mut writer,
        jobs,
        admission,
        include_usage,
        prompt_tokens,
        policy,
        deadline,
        span,
    } = spec;
    let slots = jobs.iter().map(|j| j.choice + 1).max().unwrap_or(0);
    let mut events = StreamMap::new();
    let mut guards = Vec::with_capacity(jobs.len());
    for job in jobs {
        events.insert(job.choice, UnboundedReceiverStream::new(job.events));
        guards.push((job.choice, job.guard));
    }
    let driver = Driver {
        pending: writer.opening().into(),
        writer,
        events,
        guards,
        finished: vec![None; slots],
        done: false,
        include_usage,
        prompt_tokens,
        policy,
        deadline,
        admission,
    };
    let stream = futures::stream::unfold(driver, move |mut driver| {
        let span = span.clone();
        async move {
            driver
                .next_chunk()
                .await
                .map(|data| (Ok::<_, Infallible>(Event::default().data(data)), driver))
        }
        .instrument(span)
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

impl<W: ChunkWriter> Driver<W> {
    async fn next_chunk(&mut self) -> Option<String> {
        loop {
            if let Some(chunk) = self.pending.pop_front() {
                return Some(chunk);
            }
            if self.done {
                return None;
            }
            let next = match self.deadline {
                None => Ok(self.events.next().await),
                Some(d) => tokio::time::timeout_at(d.at, self.events.next())
                    .await
                    .map_err(|_| d.limit),
            };
            match next {
                Err(limit) => self.fail(timed_out(limit)),
                Ok(None) => self.fail(ended_early()),
                Ok(Some((choice, StreamEvent::Token(delta)))) => {
                    if let Some(chunk) = self.writer.delta(choice, &delta) {
                        self.pending.push_back(chunk);
                    }
                }
                Ok(Some((choice, StreamEvent::Finished(finished)))) => {
                    self.finish(choice, finished)
                }
                Ok(Some((_, StreamEvent::Error(error)))) => self.fail(error.into()),
            }
        }
    }

    fn finish(&mut self, choice: usize, finished: Finished) {
        if let Some((_, guard)) = self.guards.iter_mut().find(|(c, _)| *c == choice) {
            guard.finish();
        }
        self.events.remove(&choice);
        if let Some(slot) = self.finished.get_mut(choice) {
            *slot = Some(finished.clone());
        }
        let all_done = self
            .guards
            .iter()
            .all(|(c, _)| self.finished.get(*c).is_some_and(Option::is_some));
        let completion = all_done.then(|| completion_tokens(self.finished.iter().flatten()));
        if let Some(completion) = completion {
            self.admission
                .settle((self.prompt_tokens + completion) as u64);
        }
        let summary = all_done.then(|| {
            RoutingSummary::from_stats(
                &self.policy,
                self.finished.iter().flatten().map(|f| &f.routing),
            )
        });
        if self.include_usage {
            self.pending
                .push_back(self.writer.finish(choice, &finished, None));
            if let (Some(summary), Some(completion)) = (summary.clone(), completion) {
                self.pending.push_back(
                    self.writer
                        .usage(UsageOut::new(self.prompt_tokens, completion), summary),
                );
            }
        } else {
            self.pending
                .push_back(self.writer.finish(choice, &finished, summary.clone()));
        }
        if all_done {
            self.end();
        }
    }

    /// Sends the error as a chunk and ends the stream; unfinished choices are aborted.
    fn fail(&mut self, error: ApiError) {
        tracing::warn!(error = %error, "stream ended by an error");
        self.pending.push_back(to_json(&error.body()));
        self.events.clear();
        self.guards.clear();
        self.end();
    }

    fn end(&mut self) {
        self.pending.push_back("[DONE]".to_string());
        self.done = true;
    }
}
