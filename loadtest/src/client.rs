//! One streamed request: POST, read the SSE stream, time every chunk.

use std::fmt;
use std::time::{Duration, Instant};

use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use serde_json::{Map, Value};

/// Why a request failed; the report counts failures per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// Could not connect.
    Connect,
    /// The whole request (including the stream) took longer than the timeout.
    Timeout,
    /// The server answered with this non-2xx status.
    Http(u16),
    /// The connection broke while reading the stream.
    Stream,
    /// A chunk was not valid SSE or JSON.
    Parse,
    /// The stream carried an `error` object.
    Server,
    /// The stream ended without `data: [DONE]`.
    Incomplete,
    /// The stream finished without any generated text.
    EmptyOutput,
    /// Anything else reqwest reports (building the request, redirects...).
    Request,
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailureKind::Connect => f.write_str("connect"),
            FailureKind::Timeout => f.write_str("timeout"),
            FailureKind::Http(code) => write!(f, "http_{code}"),
            FailureKind::Stream => f.write_str("stream"),
            FailureKind::Parse => f.write_str("parse"),
            FailureKind::Server => f.write_str("server_error"),
            FailureKind::Incomplete => f.write_str("incomplete"),
            FailureKind::EmptyOutput => f.write_str("empty_output"),
            FailureKind::Request => f.write_str("request"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RequestFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl RequestFailure {
    fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        let mut message: String = message.into();
        if message.len() > 300 {
            let cut = (0..=300)
                .rev()
                .find(|i| message.is_char_boundary(*i))
                .unwrap_or(0);
            message.truncate(cut);
        }
        RequestFailure { kind, message }
    }
}

/// What one successful request measured. Offsets are from the moment the
/// request was sent.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    /// When the request was sent, from the start of the measured phase.
    pub start: Duration,
    /// Arrival of each chunk that carried generated text; the first is the TTFT.
    pub chunk_offsets: Vec<Duration>,
    /// Until `[DONE]`.
    pub latency: Duration,
    /// `usage.completion_tokens`, or the number of text chunks if the server
    /// sent no usage.
    pub output_tokens: u64,
    pub prompt_tokens: Option<u64>,
    pub usage_reported: bool,
    pub finish_reason: Option<String>,
    /// The server's `routing` object (glimp only), if any chunk carried one.
    pub routing: Option<Map<String, Value>>,
    /// Sent a second time, on a new connection, because the pooled one was
    /// closed before any byte of a response came back.
    pub resent: bool,
}

impl RequestRecord {
    pub fn ttft(&self) -> Duration {
        self.chunk_offsets.first().copied().unwrap_or(self.latency)
    }
}

/// Where and how requests are sent.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: String,
    pub api_key: Option<String>,
    pub timeout: Duration,
}

/// Sends `body` and reads its stream to the end, within `target.timeout`.
/// `phase_start` dates [`RequestRecord::start`].
pub async fn send_streaming(
    client: &reqwest::Client,
    target: &Target,
    body: &Value,
    phase_start: Instant,
) -> Result<RequestRecord, RequestFailure> {
    let sent = Instant::now();
    let start = sent.saturating_duration_since(phase_start);
    match tokio::time::timeout(target.timeout, stream_request(client, target, body, sent)).await {
        Ok(Ok(mut record)) => {
            record.start = start;
            Ok(record)
        }
        Ok(Err(failure)) => Err(failure),
        Err(_) => Err(RequestFailure::new(
            FailureKind::Timeout,
            format!("no complete answer within {:?}", target.timeout),
        )),
    }
}

async fn stream_request(
    client: &reqwest::Client,
    target: &Target,
    body: &Value,
    sent: Instant,
) -> Result<RequestRecord, RequestFailure> {
    let post = |client: &reqwest::Client| {
        let mut request = client.post(&target.url).json(body);
        if let Some(key) = &target.api_key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let mut resent = false;
    let response = match post(client).await {
        // A keep-alive connection the server closed while it sat in the pool
        // (llama-server closes idle ones) fails before any response byte: the
        // server never answered this request, so it is not the server's
        // failure. Send it once more on a connection of its own; if the
        // server is really gone, that attempt fails to connect.
        Err(e) if closed_before_response(&e) => {
            resent = true;
            let fresh = reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .map_err(from_reqwest)?;
            post(&fresh).await.map_err(from_reqwest)?
        }
        other => other.map_err(from_reqwest)?,
    };
    let status = response.status();
    if !status.is_success() {
        let text = response.text().await.unwrap_or_default();
        return Err(RequestFailure::new(
            FailureKind::Http(status.as_u16()),
            text,
        ));
    }
    let mut events = response.bytes_stream().eventsource();
    let mut acc = StreamAccumulator::default();
    while let Some(event) = events.next().await {
        let event = event.map_err(|e| match e {
            EventStreamError::Transport(e) => from_reqwest(e),
            EventStreamError::Utf8(e) => RequestFailure::new(FailureKind::Parse, e.to_string()),
            EventStreamError::Parser(e) => RequestFailure::new(FailureKind::Parse, e.to_string()),
        })?;
        let at = sent.elapsed();
        if acc.on_data(&event.data, at)? == Flow::Done {
            break;
        }
    }
    let mut record = acc.finish(sent.elapsed())?;
    record.resent = resent;
    Ok(record)
}

/// Whether sending failed because the connection was closed before any
/// byte of a response arrived (hyper's "connection closed before message
/// completed", or a reset / broken pipe while writing the request).
fn closed_before_response(e: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return true;
            }
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) {
                return true;
            }
        }
        source = s.source();
    }
    false
}

fn from_reqwest(e: reqwest::Error) -> RequestFailure {
    let kind = if e.is_timeout() {
        FailureKind::Timeout
    } else if e.is_connect() {
        FailureKind::Connect
    } else if e.is_body() || e.is_decode() {
        FailureKind::Stream
    } else {
        FailureKind::Request
    };
    RequestFailure::new(kind, error_chain(&e))
}

/// The error and its sources on one line: the sources say why (refused,
/// reset...), the top line rarely does.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    message
}

#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    More,
    Done,
}

/// Folds SSE `data:` payloads of a completions or chat stream into a record.
#[derive(Debug, Default)]
pub struct StreamAccumulator {
    chunk_offsets: Vec<Duration>,
    done: bool,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    finish_reason: Option<String>,
    routing: Option<Map<String, Value>>,
}

impl StreamAccumulator {
    /// Takes one event's data, received `at` after the request was sent.
    pub fn on_data(&mut self, data: &str, at: Duration) -> Result<Flow, RequestFailure> {
        let data = data.trim();
        if data.is_empty() {
            return Ok(Flow::More);
        }
        if data == "[DONE]" {
            self.done = true;
            return Ok(Flow::Done);
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| RequestFailure::new(FailureKind::Parse, format!("{e}: {data}")))?;
        if let Some(error) = chunk.get("error") {
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| error.to_string());
            return Err(RequestFailure::new(FailureKind::Server, message));
        }
        let choices = chunk.get("choices").and_then(Value::as_array);
        let mut has_text = false;
        for choice in choices.into_iter().flatten() {
            has_text |= choice_text(choice).is_some_and(|t| !t.is_empty());
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                self.finish_reason = Some(reason.to_string());
            }
            if let Some(Value::Object(r)) = choice.get("routing") {
                self.routing = Some(r.clone());
            }
        }
        if has_text {
            self.chunk_offsets.push(at);
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.prompt_tokens = usage.get("prompt_tokens").and_then(Value::as_u64);
            self.completion_tokens = usage.get("completion_tokens").and_then(Value::as_u64);
        }
        if let Some(Value::Object(r)) = chunk.get("routing") {
            self.routing = Some(r.clone());
        }
        Ok(Flow::More)
    }

    /// Ends the stream `latency` after the request was sent.
    pub fn finish(self, latency: Duration) -> Result<RequestRecord, RequestFailure> {
        if !self.done {
            return Err(RequestFailure::new(
                FailureKind::Incomplete,
                "stream ended without data: [DONE]",
            ));
        }
        if self.chunk_offsets.is_empty() {
            return Err(RequestFailure::new(
                FailureKind::EmptyOutput,
                format!(
                    "no generated text (finish_reason {:?})",
                    self.finish_reason.as_deref().unwrap_or("none")
                ),
            ));
        }
        let chunks = self.chunk_offsets.len() as u64;
        Ok(RequestRecord {
            start: Duration::ZERO,
            output_tokens: self.completion_tokens.unwrap_or(chunks),
            usage_reported: self.completion_tokens.is_some(),
            prompt_tokens: self.prompt_tokens,
            chunk_offsets: self.chunk_offsets,
            latency,
            finish_reason: self.finish_reason,
            routing: self.routing,
            resent: false,
        })
    }
}

/// Generated text of a completions (`text`) or chat (`delta.content`, or a
/// reasoning model's `delta.reasoning_content` / `delta.reasoning`) choice.
fn choice_text(choice: &Value) -> Option<&str> {
    if let Some(t) = choice.get("text").and_then(Value::as_str) {
        return Some(t);
    }
    let delta = choice.get("delta")?;
    ["content", "reasoning_content", "reasoning"]
        .iter()
        .filter_map(|k| delta.get(*k).and_then(Value::as_str))
        .find(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn completions_stream_with_usage_and_routing() {
        let mut acc = StreamAccumulator::default();
        let feed = [
            r#"{"choices":[{"index":0,"text":"Hel","finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"text":"","finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"text":"lo","finish_reason":"length"}],"routing":{"steps":2,"llm_steps":1}}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":4,"completion_tokens":3,"total_tokens":7}}"#,
        ];
        for (i, data) in feed.iter().enumerate() {
            assert_eq!(
                acc.on_data(data, ms(10 * (i as u64 + 1))).unwrap(),
                Flow::More
            );
        }
        assert_eq!(acc.on_data("[DONE]", ms(50)).unwrap(), Flow::Done);
        let r = acc.finish(ms(55)).unwrap();
        assert_eq!(
            r.chunk_offsets,
            vec![ms(10), ms(30)],
            "empty text is not a token chunk"
        );
        assert_eq!(r.ttft(), ms(10));
        assert_eq!(r.output_tokens, 3, "usage wins over the chunk count");
        assert!(r.usage_reported);
        assert_eq!(r.prompt_tokens, Some(4));
        assert_eq!(r.finish_reason.as_deref(), Some("length"));
        assert_eq!(r.routing.unwrap()["llm_steps"], 1);
        assert_eq!(r.latency, ms(55));
    }

    #[test]
    fn chat_deltas_count_content_and_reasoning() {
        let mut acc = StreamAccumulator::default();
        let feed = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"think"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"ok"}}]}"#,
        ];
        for (i, data) in feed.iter().enumerate() {
            acc.on_data(data, ms(i as u64 + 1)).unwrap();
        }
        acc.on_data("[DONE]", ms(9)).unwrap();
        let r = acc.finish(ms(9)).unwrap();
        assert_eq!(r.chunk_offsets, vec![ms(2), ms(3)]);
        assert_eq!(r.output_tokens, 2, "no usage: fall back to chunks");
        assert!(!r.usage_reported);
    }

    #[test]
    fn failures_are_classified() {
        let mut acc = StreamAccumulator::default();
        let err = acc
            .on_data(r#"{"error":{"message":"boom","code":500}}"#, ms(1))
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Server);
        assert_eq!(err.message, "boom");

        let err = StreamAccumulator::default()
            .on_data("{nope", ms(1))
            .unwrap_err();
        assert_eq!(err.kind, FailureKind::Parse);

        let mut acc = StreamAccumulator::default();
        acc.on_data(r#"{"choices":[{"text":"a"}]}"#, ms(1)).unwrap();
        assert_eq!(acc.finish(ms(2)).unwrap_err().kind, FailureKind::Incomplete);

        let mut acc = StreamAccumulator::default();
        acc.on_data("[DONE]", ms(1)).unwrap();
        assert_eq!(
            acc.finish(ms(2)).unwrap_err().kind,
            FailureKind::EmptyOutput
        );

        assert_eq!(FailureKind::Http(503).to_string(), "http_503");
    }

    #[test]
    fn long_messages_are_cut_on_a_char_boundary() {
        let f = RequestFailure::new(FailureKind::Parse, "é".repeat(400));
        assert!(f.message.len() <= 300);
    }
}
