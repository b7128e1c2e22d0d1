//! Validated, flattened view of a `ModelBatch`: what every layer of one forward needs.

use candle_core::{Device, Tensor};
use glimprouter_core::ModelBatch;

use crate::error::{ModelError, Result};

/// One row's new tokens inside the flattened [T] token axis.
#[derive(Debug, Clone)]
pub struct RowMeta {
    pub token_start: usize,
    pub num_tokens: usize,
    pub start_pos: usize,
    pub block_table: Vec<u32>,
}

impl RowMeta {
    pub fn context_len(&self) -> usize {
        self.start_pos + self.num_tokens
    }
}

pub struct BatchMeta {
    pub rows: Vec<RowMeta>,
    pub num_tokens: usize,
    /// Cache slot of each token.
    pub slots: Vec<usize>,
    /// Token ids, u32 [T].
    pub token_ids: Tensor,
    /// Positions, u32 [T].
    pub positions: Tensor,
    /// Indices into [T] of the tokens whose logits are wanted, in output order.
    pub logit_rows: Vec<u32>,
}

/// Limits a batch is checked against.
pub struct BatchLimits {
    pub vocab_size: usize,
    pub max_position: usize,
    pub block_size: usize,
    pub num_blocks: usize,
}

impl BatchMeta {
    pub fn new(batch: &ModelBatch, lim: &BatchLimits, device: &Device) -> Result<BatchMeta> {
        let mut rows = Vec::with_capacity(batch.rows.len());
        let mut ids = Vec::with_capacity(batch.num_tokens());
        let mut positions = Vec::with_capacity(batch.num_tokens());
        let mut slots = Vec::with_capacity(batch.num_tokens());
        let mut logit_rows = Vec::with_capacity(batch.num_logits());
        for (i, row) in batch.rows.iter().enumerate() {
            let n = row.token_ids.len();
            let bad = |what: String| ModelError::InvalidBatch(format!("row {i}: {what}"));
            if row.num_logits > n {
                return Err(bad(format!("num_logits {} > {n} tokens", row.num_logits)));
            }
            let ctx = row.context_len();
            if ctx > lim.max_position {
                return Err(bad(format!(
                    "context {ctx} exceeds max_position_embeddings {}",
                    lim.max_position
                )));
            }
            if row.block_table.len() * lim.block_size < ctx {
                return Err(bad(format!(
                    "block table of {} blocks cannot hold {ctx} positions",
                    row.block_table.len()
                )));
            }
            let blocks_used = ctx.div_ceil(lim.block_size);
            if let Some(b) = row.block_table[..blocks_used]
                .iter()
                .find(|&&b| b as usize >= lim.num_blocks)
            {
                return Err(bad(format!("block {b} >= pool size {}", lim.num_blocks)));
            }
            if let Some(t) = row
                .token_ids
                .iter()
                .find(|&&t| t as usize >= lim.vocab_size)
            {
                return Err(bad(format!("token {t} >= vocab size {}", lim.vocab_size)));
            }
            if n == 0 {
                continue;
            }
            let token_start = ids.len();
            for (j, &t) in row.token_ids.iter().enumerate() {
                let pos = row.start_pos + j;
                ids.push(t);
                positions.push(pos as u32);
                slots.push(row.slot(pos, lim.block_size));
            }
            logit_rows
                .extend((token_start + n - row.num_logits..token_start + n).map(|t| t as u32));
            rows.push(RowMeta {
                token_start,
                num_tokens: n,
                start_pos: row.start_pos,
                block_table: row.block_table[..blocks_used].to_vec(),
            });
        }
        let num_tokens = ids.len();
        Ok(BatchMeta {
            rows,
            num_tokens,
            slots,
            token_ids: Tensor::from_vec(ids, num_tokens, device)?,
            positions: Tensor::from_vec(positions, num_tokens, device)?,
            logit_rows,
        })
    }
}
