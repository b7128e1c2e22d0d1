//! What the HTTP layer needs from the engine, as a trait so handlers can be
//! tested against a scripted engine as well as the real [`EngineHandle`].

use glimprouter_core::reasoning::ReasoningParser;
use glimprouter_core::RoutingParams;
use glimprouter_engine::{EngineError, EngineHandle, GenerateRequest, StreamEvent};
use prometheus::proto::MetricFamily;
use tokio::sync::mpsc::UnboundedReceiver;

/// One chat message, already flattened to text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTurn {
    pub role: String,
    pub content: String,
}

/// Tokenizer operations the server uses. Errors are messages for the client.
pub trait TextCodec: Send + Sync {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String>;
    fn decode(&self, ids: &[u32]) -> Result<String, String>;
    /// Renders the model's chat template with extra template variables
    /// (`chat_template_kwargs`). `None` when the model has none.
    fn apply_chat_template(
        &self,
        turns: &[ChatTurn],
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Result<String, String>>;
    fn vocab_size(&self) -> usize;
    /// The text a single token stands for (for logprobs).
    fn token_text(&self, id: u32) -> String {
        self.decode(&[id]).unwrap_or_default()
    }
}

pub trait Backend: Send + Sync + 'static {
    fn model_name(&self) -> &str;
    fn max_model_len(&self) -> usize;
    /// Routing for requests that name none (unless the server config overrides it).
    fn default_routing(&self) -> RoutingParams;
    fn codec(&self) -> &dyn TextCodec;
    /// Checks a request against every rule the engine applies at `submit`, without
    /// enqueueing it.
    fn validate(&self, request: &GenerateRequest) -> Result<(), EngineError>;
    /// Enqueues a request; dropping the receiver aborts it.
    fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<UnboundedReceiver<StreamEvent>, EngineError>;
    fn abort(&self, request_id: &str);
    /// The engine's metric families, exported next to the server's own.
    fn gather_metrics(&self) -> Vec<MetricFamily>;
    /// Whether the engine can still generate (`/health`).
    fn is_running(&self) -> bool;
    /// The models' reasoning format, if they think in a marked block.
    fn reasoning_parser(&self) -> Option<ReasoningParser> {
        None
    }
}

/// The real engine.
pub struct EngineBackend {
    engine: EngineHandle,
}

impl EngineBackend {
    pub fn new(engine: EngineHandle) -> Self {
        Self { engine }
    }
}

impl Backend for EngineBackend {
    fn model_name(&self) -> &str {
        &self.engine.info().served_model_name
    }

    fn max_model_len(&self) -> usize {
        self.engine.info().max_model_len
    }

    fn default_routing(&self) -> RoutingParams {
        self.engine.info().default_routing.clone()
    }

    fn codec(&self) -> &dyn TextCodec {
        self
    }

    fn validate(&self, request: &GenerateRequest) -> Result<(), EngineError> {
        self.engine.info().validate(request)
    }

    fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<UnboundedReceiver<StreamEvent>, EngineError> {
        self.engine.submit(request)
    }

    fn abort(&self, request_id: &str) {
        self.engine.abort(request_id);
    }

    fn gather_metrics(&self) -> Vec<MetricFamily> {
        self.engine.metrics().registry.gather()
    }

    fn is_running(&self) -> bool {
        self.engine.is_running()
    }

    fn reasoning_parser(&self) -> Option<ReasoningParser> {
        self.engine.info().reasoning_parser
    }
}

impl TextCodec for EngineBackend {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, String> {
        self.engine
            .info()
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| e.to_string())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, String> {
        self.engine
            .info()
            .tokenizer
            .decode(ids, false)
            .map_err(|e| e.to_string())
    }

    fn apply_chat_template(
        &self,
        turns: &[ChatTurn],
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Result<String, String>> {
        use glimprouter_models::tokenizer::ChatMessage;
        let tokenizer = &self.engine.info().tokenizer;
        if !tokenizer.has_chat_template() {
            return None;
        }
        let messages: Vec<ChatMessage> = turns
            .iter()
            .map(|t| ChatMessage {
                role: t.role.clone(),
                content: t.content.clone(),
            })
            .collect();
        Some(
            tokenizer
                .apply_chat_template_with(&messages, add_generation_prompt, kwargs)
                .map_err(|e| e.to_string()),
        )
    }

    fn vocab_size(&self) -> usize {
        self.engine.info().tokenizer.vocab_size()
    }

    fn token_text(&self, id: u32) -> String {
        let tokenizer = &self.engine.info().tokenizer;
        match tokenizer.decode(&[id], false) {
            Ok(text) => text,
            Err(_) => tokenizer.token_text(id).unwrap_or_default(),
        }
    }
}
