//! One request's state as the scheduler sees it.

use crate::block_table::BlockTable;
use crate::params::{RoutingParams, SamplingParams};
use crate::route_state::RouteState;
use crate::{Model, SeqId, TokenId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqStatus {
    /// New, or preempted (keeps its generated tokens, holds no blocks).
    Waiting,
    /// In the running queue of its current writer.
    Running,
}

#[derive(Debug, Clone)]
pub struct Sequence {
    pub id: SeqId,
    pub tenant: String,
    /// Prompt followed by every finalised output token (never drafts).
    pub tokens: Vec<TokenId>,
    pub prompt_len: usize,
    pub sampling: SamplingParams,
    pub routing: RoutingParams,
    /// The model writing the current step; also the running queue it is in.
    pub writer: Model,
    /// Phase, step start and routing counters: this sequence owns them.
    pub route: RouteState,
    /// One KV block table per model, indexed by `Model::idx`.
    pub tables: [BlockTable; 2],
    /// The SLM finished a step that the LLM must score before it is kept.
    pub awaiting_judge: bool,
    /// Its writer is a remote tier and the engine has sent it the current
    /// step; the sequence is parked until the reply is applied.
    pub awaiting_remote: bool,
    pub num_preemptions: usize,
    pub(crate) status: SeqStatus,
    /// Admission stamp; the most recently admitted running sequence is the
    /// preemption victim (vLLM's FCFS policy).
    pub(crate) admitted_at: u64,
}

impl Sequence {
    pub fn new(
        id: SeqId,
        tenant: impl Into<String>,
        prompt: Vec<TokenId>,
        sampling: SamplingParams,
        routing: RoutingParams,
        writer: Model,
    ) -> Self {
        let prompt_len = prompt.len();
        Self {
            id,
            tenant: tenant.into(),
            tokens: prompt,
            prompt_len,
            sampling,
            routing,
            writer,
            route: RouteState::new(prompt_len),
            tables: Default::default(),
            awaiting_judge: false,
            awaiting_remote: false,
            num_preemptions: 0,
            status: SeqStatus::Waiting,
            admitted_at: 0,
        }
    }

    pub fn status(&self) -> SeqStatus {
        self.status
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn output(&self) -> &[TokenId] {
        &self.tokens[self.prompt_len..]
    }

    pub fn output_len(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens `model` has not yet computed KV for.
    pub fn pending(&self, model: Model) -> usize {
        self.tokens.len() - self.tables[model.idx()].computed_len.min(self.tokens.len())
    }

    /// How many more tokens may still be generated.
    pub fn remaining_tokens(&self) -> usize {
        self.sampling.max_tokens.saturating_sub(self.output_len())
    }

    pub fn table(&self, model: Model) -> &BlockTable {
        &self.tables[model.idx()]
    }
}
