//! The per-iteration plan handed to a model runner: one ragged batch.

use crate::{BlockId, SeqId, TokenId};

/// Why a row is in the batch. Runners treat all kinds alike (feed tokens,
/// return logits for the last `num_logits` of them); the engine uses the kind
/// to interpret the logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowKind {
    /// Prompt (or recompute-after-preemption) prefill; logits only on the last chunk.
    Prefill,
    /// The model catches up on tokens the other model wrote; logits on the last one
    /// when the model writes next.
    CatchUp,
    /// One new token of the writer model.
    Decode,
    /// SLM row of a sequence in the LLM queue: feed pending tokens, logits on the last
    /// one give the first draft token; the engine then runs `k - 1` single-token
    /// draft forwards for these rows.
    Draft { k: usize },
    /// LLM row verifying `k` draft tokens: `token_ids` holds the pending tokens; the
    /// engine appends the `k` drafts before running it; logits for the last `k + 1`.
    Verify { k: usize },
    /// LLM row scoring the step the SLM just wrote (judge-after-step policies):
    /// logits for every position that predicts a token of the step.
    Judge,
    /// LLM row planned beside an SLM glimpse: it catches the LLM up on every
    /// token, and its logits for the step's first token are used only if the
    /// glimpse sends the step to the LLM. Either way the KV it writes is of
    /// finalised tokens, so nothing is wasted, and an LLM step starts in the
    /// glimpse's iteration instead of one later.
    Shadow,
}

/// One sequence's slice of a ragged batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchRow {
    pub seq_id: SeqId,
    pub kind: RowKind,
    /// Tokens to feed, in order (for `Verify`, drafts are appended by the engine).
    pub token_ids: Vec<TokenId>,
    /// Position of `token_ids[0]`; equals the model's computed length before this row.
    pub start_pos: usize,
    /// Physical blocks of the sequence in this model's pool, covering at least
    /// `start_pos + token_ids.len()` positions (plus room for drafts).
    pub block_table: Vec<BlockId>,
    /// Logits are wanted for the last `num_logits` fed tokens (0 = none).
    pub num_logits: usize,
}

impl BatchRow {
    /// Number of positions this row's attention reads (cache + new tokens).
    pub fn context_len(&self) -> usize {
        self.start_pos + self.token_ids.len()
    }

    /// Cache slot of position `pos` (physical block * block_size + offset).
    pub fn slot(&self, pos: usize, block_size: usize) -> usize {
        self.block_table[pos / block_size] as usize * block_size + pos % block_size
    }
}

/// One model's ragged batch for one iteration. Rows never share a sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelBatch {
    pub rows: Vec<BatchRow>,
}

impl ModelBatch {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn num_tokens(&self) -> usize {
        self.rows.iter().map(|r| r.token_ids.len()).sum()
    }

    pub fn num_logits(&self) -> usize {
        self.rows.iter().map(|r| r.num_logits).sum()
    }
}
