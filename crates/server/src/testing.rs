//! A scripted stand-in for the engine, to test the HTTP layer without models
//! (this crate's tests, and anyone embedding the router).
//!
//! [`ByteCodec`] tokenizes by bytes. [`ScriptedBackend`] answers every request
//! with the bytes of its `reply`, one token per `token_delay`, honouring
//! max_tokens, stop strings, ignore_eos and logprobs, and it keeps a
//! `glimp:kv_cache_usage_perc` gauge of the requests it is running so tests
//! can watch aborted requests being freed.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use glimprouter_core::params::Policy;
use glimprouter_core::{Model, RoutingParams};
use glimprouter_engine::{
    EngineError, FinishReason, Finished, GenerateRequest, RoutingStats, StopReason, StreamEvent,
    TokenDelta, TokenLogprob, Usage,
};
use parking_lot::Mutex;
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, Registry};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use crate::backend::{Backend, ChatTurn, TextCodec};

/// Bytes are tokens 0..=255; then BOS and EOS.
pub struct ByteCodec;

impl ByteCodec {
    pub const BOS: u32 = 256;
    pub const EOS: u32 = 257;
}

impl TextCodec for ByteCodec {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String> {
        let bos = add_special_tokens.then_some(Self::BOS);
        Ok(bos.into_iter().chain(text.bytes().map(u32::from)).collect())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, String> {
        let bytes: Vec<u8> = ids.iter().filter_map(|&id| u8::try_from(id).ok()).collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `<|role|>` lines; like Qwen3's template, `enable_thinking: false`
    /// closes an empty thinking block after the generation prompt.
    fn apply_chat_template(
        &self,
        turns: &[ChatTurn],
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Result<String, String>> {
        let mut text: String = turns
            .iter()
            .map(|t| format!("<|{}|>\n{}\n", t.role, t.content))
            .collect();
        if add_generation_prompt {
            text.push_str("<|assistant|>\n");
            if kwargs.get("enable_thinking") == Some(&serde_json::Value::Bool(false)) {
                text.push_str("<think>\n\n</think>\n\n");
            }
        }
        Some(Ok(text))
    }

    fn vocab_size(&self) -> usize {
        258
    }
}

/// Requests the scripted engine can hold before its "KV cache" is full.
const CAPACITY: f64 = 8.0;

struct Shared {
    running: Mutex<HashSet<String>>,
    aborted: Mutex<Vec<String>>,
    submitted: Mutex<Vec<GenerateRequest>>,
    kv_usage: Gauge,
}

impl Shared {
    fn stop_running(&self, id: &str) {
        let mut running = self.running.lock();
        running.remove(id);
        self.kv_usage.set(running.len() as f64 / CAPACITY);
    }
}

pub struct ScriptedBackend {
    pub model: String,
    pub max_model_len: usize,
    pub default_routing: RoutingParams,
    /// The reasoning format it claims (none unless a test sets one).
    pub reasoning_parser: Option<glimprouter_core::reasoning::ReasoningParser>,
    reply: String,
    token_delay: Duration,
    codec: ByteCodec,
    registry: Registry,
    shared: Arc<Shared>,
}

impl ScriptedBackend {
    pub fn new(reply: &str, token_delay: Duration) -> Self {
        let registry = Registry::new();
        let kv_usage = Gauge::new(
            "glimp:kv_cache_usage_perc",
            "Fraction of the scripted KV cache in use.",
        )
        .unwrap_or_else(|_| unreachable!("the metric name is valid"));
        // The name is valid and the registry new: registering cannot fail.
        let _ = registry.register(Box::new(kv_usage.clone()));
        Self {
            model: "scripted".to_string(),
            max_model_len: 256,
            default_routing: RoutingParams::default(),
            reasoning_parser: None,
            reply: reply.to_string(),
            token_delay,
            codec: ByteCodec,
            registry,
            shared: Arc::new(Shared {
                running: Mutex::new(HashSet::new()),
                aborted: Mutex::new(Vec::new()),
                submitted: Mutex::new(Vec::new()),
                kv_usage,
            }),
        }
    }

    /// Requests currently generating.
    pub fn running(&self) -> usize {
        self.shared.running.lock().len()
    }

    /// Ids passed to `abort`, in order.
    pub fn aborted(&self) -> Vec<String> {
        self.shared.aborted.lock().clone()
    }

    /// Every request submitted so far.
    pub fn submitted(&self) -> Vec<GenerateRequest> {
        self.shared.submitted.lock().clone()
    }
}

impl Backend for ScriptedBackend {
    fn reasoning_parser(&self) -> Option<glimprouter_core::reasoning::ReasoningParser> {
        self.reasoning_parser
    }

    fn model_name(&self) -> &str {
        &self.model
    }

    fn max_model_len(&self) -> usize {
        self.max_model_len
    }

    fn default_routing(&self) -> RoutingParams {
        self.default_routing.clone()
    }

    fn codec(&self) -> &dyn TextCodec {
        &self.codec
    }

    fn validate(&self, request: &GenerateRequest) -> Result<(), EngineError> {
        let limits = glimprouter_engine::validate::Limits {
            max_model_len: self.max_model_len,
            vocab_size: self.codec.vocab_size(),
            remote: [false, false],
        };
        glimprouter_engine::validate::check_request(request, &limits)
    }

    fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<UnboundedReceiver<StreamEvent>, EngineError> {
        // A prompt containing "PANIC" panics in the handler's task, to test
        // the server's guard against a panicking request.
        if prompt_contains(&request, "PANIC") {
            panic!("scripted panic");
        }
        self.validate(&request)?;
        let (events, receiver) = mpsc::unbounded_channel();
        {
            let mut running = self.shared.running.lock();
            running.insert(request.request_id.clone());
            self.shared.kv_usage.set(running.len() as f64 / CAPACITY);
        }
        self.shared.submitted.lock().push(request.clone());
        let shared = self.shared.clone();
        let reply = self.reply.clone().into_bytes();
        let delay = self.token_delay;
        tokio::spawn(async move {
            let id = request.request_id.clone();
            generate(request, reply, delay, &shared, events).await;
            shared.stop_running(&id);
        });
        Ok(receiver)
    }

    fn abort(&self, request_id: &str) {
        self.shared.aborted.lock().push(request_id.to_string());
        self.shared.stop_running(request_id);
    }

    fn gather_metrics(&self) -> Vec<MetricFamily> {
        self.registry.gather()
    }

    fn is_running(&self) -> bool {
        true
    }
}

/// Whether the request's prompt has `word` in it: the scripted failures'
/// triggers.
fn prompt_contains(request: &GenerateRequest, word: &str) -> bool {
    ByteCodec
        .decode(&request.prompt_ids)
        .is_ok_and(|text| text.contains(word))
}

/// Emits the reply byte by byte until a limit, a stop string, an abort or a
/// gone receiver. A prompt containing "FAIL" gets an engine error after one token.
async fn generate(
    request: GenerateRequest,
    reply: Vec<u8>,
    delay: Duration,
    shared: &Shared,
    events: mpsc::UnboundedSender<StreamEvent>,
) {
    let sampling = &request.sampling;
    let fail = prompt_contains(&request, "FAIL");
    let writer = if request.routing.policy == Policy::Llm {
        Model::Llm
    } else {
        Model::Slm
    };
    let mut text = String::new();
    let mut produced = 0;
    let mut finish = (FinishReason::Length, None);
    while produced < sampling.max_tokens {
        tokio::time::sleep(delay).await;
        if !shared.running.lock().contains(&request.request_id) {
            return; // aborted
        }
        if produced == reply.len() && !sampling.ignore_eos {
            finish = (FinishReason::Stop, None);
            break;
        }
        let Some(&byte) = reply.get(produced % reply.len().max(1)) else {
            finish = (FinishReason::Stop, None);
            break;
        };
        produced += 1;
        text.push(char::from(byte));
        if let Some(stop) = sampling.stop.iter().find(|s| text.ends_with(s.as_str())) {
            finish = (FinishReason::Stop, Some(StopReason::String(stop.clone())));
            break;
        }
        let logprobs = sampling.logprobs.map(|k| {
            let top = (0..k)
                .map(|j| (u32::from(b'a') + j as u32, -0.5 - j as f32))
                .collect();
            vec![TokenLogprob {
                token_id: u32::from(byte),
                logprob: -0.25,
                top,
            }]
        });
        let delta = TokenDelta {
            token_ids: vec![u32::from(byte)],
            text: char::from(byte).to_string(),
            writer,
            logprobs,
        };
        if events.send(StreamEvent::Token(delta)).is_err() {
            return; // receiver dropped: the engine treats this as an abort
        }
        if fail {
            let _ = events.send(StreamEvent::Error(EngineError::Internal(
                "scripted failure".into(),
            )));
            return;
        }
    }
    let tokens = produced;
    let routing = RoutingStats {
        policy: request.routing.policy.as_str().to_string(),
        steps: 1,
        llm_steps: usize::from(writer == Model::Llm),
        llm_step_ratio: if writer == Model::Llm { 1.0 } else { 0.0 },
        slm_tokens: if writer == Model::Slm { tokens } else { 0 },
        llm_tokens: if writer == Model::Llm { tokens } else { 0 },
        h_init: vec![0.5],
        draft_tokens: 0,
        accepted_draft_tokens: 0,
    };
    let _ = events.send(StreamEvent::Finished(Finished {
        reason: finish.0,
        stop_reason: finish.1,
        usage: Usage {
            prompt_tokens: request.prompt_ids.len(),
            completion_tokens: tokens,
        },
        routing,
    }));
}
