//! Steps written by a model on an external OpenAI-compatible engine.
//!
//! A remote tier gets one `/v1/completions` call per step: the context so far
//! as token ids (the remote's own prefix cache makes re-sending it cheap),
//! `stop` = the step delimiter plus the request's stop strings, `max_tokens` =
//! what the request has left. The calls run on a small tokio runtime owned by
//! the engine; replies come back over a channel the engine loop drains.
//!
//! The engine takes the reply's token ids when the server returns them
//! (vLLM's `return_token_ids`, which glimprouter honours too); otherwise it
//! re-encodes the text with the shared tokenizer, adding back the stop string
//! the remote cut (read by [`parse_completion`]) or EOS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender};
use glimprouter_core::{Model, SamplingParams, SeqId, TokenId};
use serde_json::{json, Value};

use crate::config::{RemoteApi, RemoteSection};
use crate::metrics::EngineMetrics;

/// What one remote step call asks for.
#[derive(Debug, Clone)]
pub struct StepCall {
    pub seq_id: SeqId,
    /// Prompt and output so far.
    pub context: Vec<TokenId>,
    pub max_tokens: usize,
    /// The step delimiter (reasoning phase) and the request's stop strings.
    pub stop: Vec<String>,
    pub sampling: SamplingParams,
    /// Varies the remote's seed per step, so a seeded request stays
    /// reproducible without repeating one random stream every step.
    pub step_index: usize,
    /// A remote SLM's glimpse: one token, with this many top log-probabilities
    /// to estimate H_init from.
    pub glimpse_logprobs: Option<usize>,
}

/// Why the remote stopped writing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteFinish {
    /// `max_tokens` reached.
    Length,
    /// A stop string matched (cut from the text).
    StopString(String),
    /// The model's end-of-sequence token.
    Eos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepText {
    pub text: String,
    pub finish: RemoteFinish,
    /// The top log-probabilities at the first generated position, when asked.
    pub top_logprobs: Option<Vec<f32>>,
    /// Every generated token id, stop string and EOS included, from servers
    /// that honour vLLM's `return_token_ids`.
    pub token_ids: Option<Vec<u32>>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum RemoteError {
    #[error("timed out")]
    Timeout,
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("returned HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("sent a response that is not a completion: {0}")]
    Decode(String),
}

impl RemoteError {
    /// The `kind` label of `glimp:remote_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            RemoteError::Timeout => "timeout",
            RemoteError::Connect(_) => "connect",
            RemoteError::Status { status, .. } if *status >= 500 => "status_5xx",
            RemoteError::Status { .. } => "status_4xx",
            RemoteError::Decode(_) => "decode",
        }
    }

    /// Worth another attempt: the remote may be restarting or overloaded.
    /// A 4xx or a malformed answer will not change on retry.
    pub fn is_transient(&self) -> bool {
        match self {
            RemoteError::Timeout | RemoteError::Connect(_) => true,
            RemoteError::Status { status, .. } => *status >= 500 || *status == 429,
            RemoteError::Decode(_) => false,
        }
    }
}

/// One remote model endpoint.
pub struct RemoteTier {
    model: Model,
    api: RemoteApi,
    endpoint: String,
    served_model: String,
    api_key: Option<String>,
    max_retries: u32,
    backoff: Duration,
    client: reqwest::Client,
}

impl RemoteTier {
    pub fn new(model: Model, section: &RemoteSection) -> Result<Self, String> {
        let base = section.url.trim_end_matches('/');
        let base = base.strip_suffix("/v1").unwrap_or(base);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs_f64(
                section.connect_timeout_secs.max(0.001),
            ))
            .timeout(Duration::from_secs_f64(
                section.request_timeout_secs.max(0.001),
            ))
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        let endpoint = match section.api {
            RemoteApi::OpenAi => format!("{base}/v1/completions"),
            RemoteApi::LlamaCpp => format!("{base}/completion"),
        };
        Ok(Self {
            model,
            api: section.api,
            endpoint,
            served_model: section.model.clone(),
            api_key: section.api_key.clone(),
            max_retries: section.max_retries,
            backoff: Duration::from_millis(section.retry_backoff_ms),
            client,
        })
    }

    /// The request for one step, in the remote's API.
    pub fn body(&self, call: &StepCall) -> Value {
        match self.api {
            RemoteApi::OpenAi => self.openai_body(call),
            RemoteApi::LlamaCpp => llamacpp_body(call),
        }
    }

    /// The completions request for one step. Only parameters that differ from
    /// the OpenAI defaults are sent, so servers that lack an extension
    /// (`top_k`, `min_p`, `ignore_eos`) are not sent it needlessly.
    fn openai_body(&self, call: &StepCall) -> Value {
        let s = &call.sampling;
        let mut body = json!({
            "model": self.served_model,
            "prompt": call.context,
            "max_tokens": call.max_tokens,
            "temperature": s.temperature,
            "stream": false,
            // vLLM's extension (glimprouter honours it too): the exact ids
            // make re-encoding the text unnecessary.
            "return_token_ids": true,
        });
        let obj = body.as_object_mut().expect("object");
        if !call.stop.is_empty() {
            obj.insert("stop".into(), json!(call.stop));
        }
        if s.top_p < 1.0 {
            obj.insert("top_p".into(), json!(s.top_p));
        }
        if s.top_k > 0 {
            obj.insert("top_k".into(), json!(s.top_k));
        }
        if s.min_p > 0.0 {
            obj.insert("min_p".into(), json!(s.min_p));
        }
        if let Some(seed) = step_seed(call) {
            obj.insert("seed".into(), json!(seed));
        }
        if s.ignore_eos {
            obj.insert("ignore_eos".into(), json!(true));
        }
        if let Some(k) = call.glimpse_logprobs {
            obj.insert("logprobs".into(), json!(k));
        }
        body
    }

    /// Sends one step, retrying transient failures with doubling backoff.
    /// Every failed attempt is counted in `glimp:remote_errors_total`.
    pub async fn write_step(
        &self,
        call: &StepCall,
        metrics: &EngineMetrics,
    ) -> Result<StepText, RemoteError> {
        let body = self.body(call);
        let start = Instant::now();
        let mut attempt = 0;
        let result = loop {
            match self.attempt(&body).await {
                Ok(step) => break Ok(step),
                Err(e) => {
                    metrics
                        .remote_errors
                        .with_label_values(&[self.model.as_str(), e.kind()])
                        .inc();
                    if !e.is_transient() || attempt >= self.max_retries {
                        break Err(e);
                    }
                    tokio::time::sleep(self.backoff * 2u32.saturating_pow(attempt)).await;
                    attempt += 1;
                }
            }
        };
        let outcome = if result.is_ok() { "ok" } else { "error" };
        metrics
            .remote_requests
            .with_label_values(&[self.model.as_str(), outcome])
            .inc();
        metrics
            .remote_seconds
            .with_label_values(&[self.model.as_str()])
            .observe(start.elapsed().as_secs_f64());
        result
    }

    async fn attempt(&self, body: &Value) -> Result<StepText, RemoteError> {
        let mut request = self.client.post(&self.endpoint).json(body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(classify)?;
        let status = response.status();
        let text = response.text().await.map_err(classify)?;
        if !status.is_success() {
            let mut body = text;
            body.truncate(500);
            return Err(RemoteError::Status {
                status: status.as_u16(),
                body,
            });
        }
        match self.api {
            RemoteApi::OpenAi => parse_completion(
                &text,
                body["stop"].as_array().map_or(&[][..], Vec::as_slice),
            ),
            RemoteApi::LlamaCpp => parse_llamacpp(&text),
        }
    }
}

/// The request's seed varied per step; `None` for an unseeded request. Halved, since
/// many servers take the seed as a signed 64-bit integer.
fn step_seed(call: &StepCall) -> Option<u64> {
    let seed = call.sampling.seed?;
    Some((seed ^ (call.step_index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 1)
}

/// llama.cpp's native `/completion` request for one step. Its sampler defaults
/// (top_k 40, top_p 0.95, min_p 0.05, ...) differ from OpenAI's, so every value is
/// sent; `return_tokens` asks for the step's token ids.
fn llamacpp_body(call: &StepCall) -> Value {
    let s = &call.sampling;
    let mut body = json!({
        "prompt": call.context,
        "n_predict": call.max_tokens,
        "temperature": s.temperature,
        "top_k": s.top_k,
        "top_p": s.top_p,
        "min_p": s.min_p,
        "stop": call.stop,
        "stream": false,
        "return_tokens": true,
        "cache_prompt": true,
        "ignore_eos": s.ignore_eos,
    });
    if let Some(seed) = step_seed(call) {
        body["seed"] = json!(seed);
    }
    body
}

/// Reads llama.cpp's `/completion` reply: `content`, `tokens` (the step's ids, the
/// stop string's included), and `stop_type`: `"word"` (then `stopping_word` is the
/// stop string, cut from `content`), `"eos"` or `"limit"`.
pub fn parse_llamacpp(body: &str) -> Result<StepText, RemoteError> {
    let bad = |what: &str| RemoteError::Decode(what.to_string());
    let v: Value = serde_json::from_str(body).map_err(|e| bad(&format!("not JSON ({e})")))?;
    let text = v
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("content is missing"))?
        .to_string();
    let finish = match v.get("stop_type").and_then(Value::as_str) {
        Some("word") => match v.get("stopping_word").and_then(Value::as_str) {
            Some(word) if !word.is_empty() => RemoteFinish::StopString(word.to_string()),
            _ => return Err(bad("stop_type \"word\" without a stopping_word")),
        },
        Some("eos") => RemoteFinish::Eos,
        Some("limit") => RemoteFinish::Length,
        other => return Err(bad(&format!("stop_type {other:?}"))),
    };
    Ok(StepText {
        text,
        finish,
        top_logprobs: None,
        token_ids: token_ids(v.get("tokens"), "tokens")?,
    })
}

/// A reply's token id list, if it has one.
fn token_ids(ids: Option<&Value>, field: &str) -> Result<Option<Vec<u32>>, RemoteError> {
    ids.and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
                .collect::<Option<Vec<u32>>>()
                .ok_or_else(|| RemoteError::Decode(format!("{field} holds a non-token")))
        })
        .transpose()
}

fn classify(e: reqwest::Error) -> RemoteError {
    if e.is_timeout() {
        RemoteError::Timeout
    } else if e.is_connect() || e.is_request() {
        RemoteError::Connect(e.to_string())
    } else {
        RemoteError::Decode(e.to_string())
    }
}

/// Reads the first choice of a `/v1/completions` response. `sent_stops`:
/// the `stop` list of the request.
///
/// Which stop string ended the text (servers cut it) is read from vLLM's
/// `stop_reason`, SGLang's `matched_stop` or llama.cpp's `stopping_word`; an
/// integer there is a stop token, i.e. EOS. TGI says `eos_token` or
/// `stop_sequence` without naming it; that is taken to be the first stop
/// sent (the step delimiter, by far the most frequent). A plain `"stop"`
/// with none of these (llama.cpp's OpenAI endpoint) is read the same way
/// when stops were sent and text came back, since reading a step's end as the
/// end of the sequence would cut the request short; only an empty text is read
/// as EOS. The cost is at a real EOS: the delimiter is added and the next step
/// starts, and ends at once.
pub fn parse_completion(body: &str, sent_stops: &[Value]) -> Result<StepText, RemoteError> {
    let bad = |what: &str| RemoteError::Decode(what.to_string());
    let v: Value = serde_json::from_str(body).map_err(|e| bad(&format!("not JSON ({e})")))?;
    let choice = v
        .get("choices")
        .and_then(|c| c.get(0))
        .ok_or_else(|| bad("no choices"))?;
    let text = choice
        .get("text")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("choices[0].text is missing"))?
        .to_string();
    const MARKERS: [&str; 3] = ["stop_reason", "matched_stop", "stopping_word"];
    let matched = MARKERS.iter().find_map(|key| match choice.get(*key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        _ => None,
    });
    // A server that has the field says EOS with `null`, `""` or a token id.
    let says_which = MARKERS.iter().any(|key| choice.get(*key).is_some());
    let finish = match choice.get("finish_reason").and_then(Value::as_str) {
        Some("length") => RemoteFinish::Length,
        Some("eos_token") => RemoteFinish::Eos,
        Some("stop") | Some("stop_sequence") => match matched {
            Some(s) => RemoteFinish::StopString(s),
            None => match sent_stops {
                [Value::String(first), ..]
                    if choice["finish_reason"] == "stop_sequence"
                        || (!says_which && !text.is_empty()) =>
                {
                    RemoteFinish::StopString(first.clone())
                }
                _ => RemoteFinish::Eos,
            },
        },
        other => return Err(bad(&format!("finish_reason {other:?}"))),
    };
    // Legacy completions logprobs: `top_logprobs` is one {token: logprob}
    // object per generated position.
    let top_logprobs = choice
        .get("logprobs")
        .and_then(|l| l.get("top_logprobs"))
        .and_then(|t| t.get(0))
        .and_then(Value::as_object)
        .map(|top| {
            top.values()
                .filter_map(Value::as_f64)
                .map(|lp| lp as f32)
                .collect()
        });
    let token_ids = token_ids(choice.get("token_ids"), "choices[0].token_ids")?;
    Ok(StepText {
        text,
        finish,
        top_logprobs,
        token_ids,
    })
}

/// A remote call's result, back on the engine thread.
pub struct RemoteReply {
    pub seq_id: SeqId,
    /// The call was a glimpse (see [`StepCall::glimpse_logprobs`]).
    pub glimpse: bool,
    pub result: Result<StepText, RemoteError>,
}

/// Runs remote calls off the engine thread and hands their replies back.
pub struct RemoteDispatcher {
    runtime: tokio::runtime::Runtime,
    tiers: [Option<Arc<RemoteTier>>; 2],
    metrics: Arc<EngineMetrics>,
    reply_tx: Sender<RemoteReply>,
    pub replies: Receiver<RemoteReply>,
    in_flight: HashMap<SeqId, tokio::task::JoinHandle<()>>,
}

impl RemoteDispatcher {
    pub fn new(
        tiers: [Option<RemoteTier>; 2],
        metrics: Arc<EngineMetrics>,
    ) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("glimp-remote")
            .enable_all()
            .build()?;
        let (reply_tx, replies) = crossbeam::channel::unbounded();
        Ok(Self {
            runtime,
            tiers: tiers.map(|t| t.map(Arc::new)),
            metrics,
            reply_tx,
            replies,
            in_flight: HashMap::new(),
        })
    }

    pub fn has_in_flight(&self) -> bool {
        !self.in_flight.is_empty()
    }

    /// Starts a step call to `model`'s remote tier.
    pub fn dispatch(&mut self, model: Model, call: StepCall) {
        let seq_id = call.seq_id;
        let glimpse = call.glimpse_logprobs.is_some();
        let Some(tier) = self.tiers[model.idx()].clone() else {
            let _ = self.reply_tx.send(RemoteReply {
                seq_id,
                glimpse,
                result: Err(RemoteError::Connect(format!(
                    "the {} is not configured as remote",
                    model.as_str()
                ))),
            });
            return;
        };
        let tx = self.reply_tx.clone();
        let metrics = self.metrics.clone();
        let task = self.runtime.spawn(async move {
            let result = tier.write_step(&call, &metrics).await;
            let _ = tx.send(RemoteReply {
                seq_id,
                glimpse,
                result,
            });
        });
        self.in_flight.insert(seq_id, task);
    }

    /// Stops waiting for a sequence's call (aborted or finished request).
    pub fn cancel(&mut self, seq_id: SeqId) {
        if let Some(task) = self.in_flight.remove(&seq_id) {
            task.abort();
        }
    }

    /// Marks a reply as received; false if the call was cancelled meanwhile.
    pub fn settle(&mut self, seq_id: SeqId) -> bool {
        self.in_flight.remove(&seq_id).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_replies_are_read_the_vllm_way() {
        let stop = r#"{"choices":[{"text":"a b","finish_reason":"stop","stop_reason":"\n\n"}]}"#;
        assert_eq!(
            parse_completion(stop, &[]).unwrap(),
            StepText {
                text: "a b".into(),
                finish: RemoteFinish::StopString("\n\n".into()),
                top_logprobs: None,
                token_ids: None,
            }
        );
        let glimpse = r#"{"choices":[{"text":"a","finish_reason":"length",
            "logprobs":{"tokens":["a"],"token_logprobs":[-0.1],"top_logprobs":[{"a":-0.1,"b":-2.5}]}}]}"#;
        assert_eq!(
            parse_completion(glimpse, &[]).unwrap().top_logprobs,
            Some(vec![-0.1, -2.5])
        );
        let eos = r#"{"choices":[{"text":"a","finish_reason":"stop","stop_reason":null}]}"#;
        assert_eq!(
            parse_completion(eos, &[]).unwrap().finish,
            RemoteFinish::Eos
        );
        let eos_openai = r#"{"choices":[{"text":"a","finish_reason":"stop"}]}"#;
        assert_eq!(
            parse_completion(eos_openai, &[]).unwrap().finish,
            RemoteFinish::Eos
        );
        // vLLM's `null` says EOS even when stops were sent.
        let sent = [json!("\n\n")];
        assert_eq!(
            parse_completion(eos, &sent).unwrap().finish,
            RemoteFinish::Eos
        );
        let ids = r#"{"choices":[{"text":"","finish_reason":"length","token_ids":[0,0,7]}]}"#;
        assert_eq!(
            parse_completion(ids, &[]).unwrap().token_ids,
            Some(vec![0, 0, 7])
        );
        let bad_ids = r#"{"choices":[{"text":"","finish_reason":"length","token_ids":[-1]}]}"#;
        assert_eq!(parse_completion(bad_ids, &[]).unwrap_err().kind(), "decode");
        let len = r#"{"choices":[{"text":"abc","finish_reason":"length"}]}"#;
        assert_eq!(
            parse_completion(len, &[]).unwrap().finish,
            RemoteFinish::Length
        );
        for bad in ["nope", "{}", r#"{"choices":[{"finish_reason":"stop"}]}"#] {
            assert_eq!(parse_completion(bad, &[]).unwrap_err().kind(), "decode");
        }
    }

    #[test]
    fn other_servers_say_which_stop_matched_their_own_way() {
        let finish = |body: &str, sent: &[Value]| parse_completion(body, sent).unwrap().finish;
        let stop = |s: &str| RemoteFinish::StopString(s.into());
        let sglang = r#"{"choices":[{"text":"a","finish_reason":"stop","matched_stop":"\n\n"}]}"#;
        assert_eq!(finish(sglang, &[]), stop("\n\n"));
        let sglang_eos = r#"{"choices":[{"text":"a","finish_reason":"stop","matched_stop":2}]}"#;
        assert_eq!(finish(sglang_eos, &[]), RemoteFinish::Eos);
        let llama = r#"{"choices":[{"text":"a","finish_reason":"stop","stopping_word":"\n\n"}]}"#;
        assert_eq!(finish(llama, &[]), stop("\n\n"));
        let llama_eos = r#"{"choices":[{"text":"a","finish_reason":"stop","stopping_word":""}]}"#;
        assert_eq!(finish(llama_eos, &[]), RemoteFinish::Eos);
        let tgi = r#"{"choices":[{"text":"a","finish_reason":"stop_sequence"}]}"#;
        assert_eq!(finish(tgi, &[json!("\n\n")]), stop("\n\n"));
        let tgi_eos = r#"{"choices":[{"text":"a","finish_reason":"eos_token"}]}"#;
        assert_eq!(finish(tgi_eos, &[json!("\n\n")]), RemoteFinish::Eos);
    }

    /// llama.cpp's `llama-server` as it answers (the bundled LLM as GGUF, one step):
    /// its OpenAI endpoint says only `"stop"`, its native one says which stop.
    #[test]
    fn llama_server_replies_never_end_the_sequence_at_a_step_end() {
        let sent = [json!("\n\n")];
        let openai = r#"{"choices":[{"text":"hold 5 4 : 5 9 max 5 4 = 5 9","index":0,
            "logprobs":null,"finish_reason":"stop"}],"object":"text_completion"}"#;
        let step = parse_completion(openai, &sent).unwrap();
        assert_eq!(step.finish, RemoteFinish::StopString("\n\n".into()));
        assert_eq!(step.text, "hold 5 4 : 5 9 max 5 4 = 5 9");
        // Nothing written before the stop: only EOS can say that.
        let empty = r#"{"choices":[{"text":"","index":0,"finish_reason":"stop"}]}"#;
        assert_eq!(
            parse_completion(empty, &sent).unwrap().finish,
            RemoteFinish::Eos
        );
        let native = r#"{"content":"hold 5 4 : 5 9 max 5 4 = 5 9","tokens":[11,24,5,4,14,14],
            "stop":true,"stop_type":"word","stopping_word":"\n\n","tokens_predicted":6}"#;
        assert_eq!(
            parse_llamacpp(native).unwrap(),
            StepText {
                text: "hold 5 4 : 5 9 max 5 4 = 5 9".into(),
                finish: RemoteFinish::StopString("\n\n".into()),
                top_logprobs: None,
                token_ids: Some(vec![11, 24, 5, 4, 14, 14]),
            }
        );
        for (stop_type, finish) in [("eos", RemoteFinish::Eos), ("limit", RemoteFinish::Length)] {
            let reply = format!(
                r#"{{"content":"a","tokens":[7],"stop_type":"{stop_type}","stopping_word":""}}"#
            );
            assert_eq!(
                parse_llamacpp(&reply).unwrap().finish,
                finish,
                "{stop_type}"
            );
        }
        for bad in [
            "{}",
            r#"{"content":"a","stop_type":"word","stopping_word":""}"#,
            r#"{"content":"a","stop_type":"none"}"#,
            r#"{"content":"a","stop_type":"eos","tokens":[-3]}"#,
        ] {
            assert_eq!(parse_llamacpp(bad).unwrap_err().kind(), "decode", "{bad}");
        }
    }

    #[test]
    fn the_llamacpp_body_sends_every_sampler_value_and_asks_for_tokens() {
        let mut section = test_section();
        section.api = RemoteApi::LlamaCpp;
        let tier = RemoteTier::new(Model::Llm, &section).unwrap();
        assert_eq!(tier.endpoint, "http://127.0.0.1:9/completion");
        let body = tier.body(&test_call());
        assert_eq!(body["prompt"], json!([3, 4, 5]));
        assert_eq!(body["n_predict"], json!(7));
        assert_eq!(body["stop"], json!(["\n\n"]));
        assert_eq!(body["return_tokens"], json!(true));
        // llama.cpp's own defaults would sample with top_k 40 and min_p 0.05.
        assert_eq!(
            (body["top_k"].clone(), body["min_p"].clone()),
            (json!(0), json!(0.0))
        );
        assert_eq!(body["top_p"], json!(1.0));
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(RemoteError::Timeout.is_transient());
        assert!(RemoteError::Connect("refused".into()).is_transient());
        let status = |s| RemoteError::Status {
            status: s,
            body: String::new(),
        };
        assert!(status(503).is_transient());
        assert!(status(429).is_transient());
        assert!(!status(400).is_transient());
        assert!(!RemoteError::Decode("x".into()).is_transient());
    }

    #[test]
    fn the_body_sends_token_ids_and_only_non_default_sampling() {
        let tier = RemoteTier::new(Model::Llm, &test_section()).unwrap();
        assert_eq!(tier.endpoint, "http://127.0.0.1:9/v1/completions");
        let body = tier.body(&test_call());
        assert_eq!(body["prompt"], json!([3, 4, 5]));
        assert_eq!(body["max_tokens"], json!(7));
        assert_eq!(body["stop"], json!(["\n\n"]));
        assert_eq!(body["model"], json!("big"));
        for absent in ["top_p", "top_k", "min_p", "seed", "ignore_eos", "logprobs"] {
            assert!(body.get(absent).is_none(), "{absent} sent");
        }
    }

    fn test_section() -> RemoteSection {
        RemoteSection {
            url: "http://127.0.0.1:9/v1/".into(),
            api: RemoteApi::OpenAi,
            model: "big".into(),
            api_key: None,
            connect_timeout_secs: 1.0,
            request_timeout_secs: 1.0,
            max_retries: 0,
            retry_backoff_ms: 1,
            max_model_len: None,
        }
    }

    fn test_call() -> StepCall {
        StepCall {
            seq_id: 1,
            context: vec![3, 4, 5],
            max_tokens: 7,
            stop: vec!["\n\n".into()],
            sampling: SamplingParams::greedy(7),
            step_index: 2,
            glimpse_logprobs: None,
        }
    }
}
