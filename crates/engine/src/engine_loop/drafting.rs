//! The SLM's drafts for speculative decoding inside LLM-written steps.

use std::collections::HashMap;

use glimprouter_core::sampling::{sample, sample_from_probs, sampling_probs};
use glimprouter_core::{BatchRow, Model, ModelBatch, RowKind, SeqId, TokenId};

use crate::api::EngineError;

use super::EngineCore;

/// Draft tokens the SLM proposed for one LLM-queue sequence this iteration.
pub(super) struct Drafted {
    pub(super) tokens: Vec<TokenId>,
    /// The distributions they were drawn from (random sampling only).
    pub(super) probs: Vec<Vec<f32>>,
}

impl EngineCore {
    /// The SLM drafts k tokens for each LLM-queue sequence: the first from
    /// the forward of the draft rows (which also feed the SLM the tokens it
    /// has not seen), the rest in k - 1 single-token batched forwards.
    pub(super) fn run_drafts(
        &mut self,
        batch: ModelBatch,
    ) -> Result<HashMap<SeqId, Drafted>, EngineError> {
        let mut drafts: HashMap<SeqId, Drafted> = HashMap::new();
        if batch.is_empty() {
            return Ok(drafts);
        }
        let logits = self.forward(Model::Slm, &batch)?;
        let mut templates: Vec<(&BatchRow, usize)> = Vec::new();
        let mut offset = 0;
        for row in &batch.rows {
            if let RowKind::Draft { k } = row.kind {
                let d = self.draw_draft(row.seq_id, logits.row(offset), &[]);
                drafts.insert(row.seq_id, d);
                templates.push((row, k));
            }
            offset += row.num_logits;
        }
        let max_k = templates.iter().map(|&(_, k)| k).max().unwrap_or(0);
        for j in 1..max_k {
            let rows: Vec<BatchRow> = templates
                .iter()
                .filter(|(_, k)| *k > j)
                .map(|(t, _)| BatchRow {
                    seq_id: t.seq_id,
                    kind: RowKind::Decode,
                    token_ids: vec![*drafts[&t.seq_id].tokens.last().expect("one draft per row")],
                    start_pos: t.start_pos + t.token_ids.len() + j - 1,
                    block_table: t.block_table.clone(),
                    num_logits: 1,
                })
                .collect();
            let batch = ModelBatch { rows };
            let out = self.forward(Model::Slm, &batch)?;
            for (i, row) in batch.rows.iter().enumerate() {
                let earlier = drafts.get(&row.seq_id).map_or(&[][..], |d| &d.tokens[..]);
                let next = self.draw_draft(row.seq_id, out.row(i), earlier);
                if let Some(d) = drafts.get_mut(&row.seq_id) {
                    d.tokens.extend(next.tokens);
                    d.probs.extend(next.probs);
                }
            }
        }
        Ok(drafts)
    }

    /// One draft token from the SLM's `logits` at the position after the
    /// sequence's tokens and the drafts `earlier` in this round, under the
    /// request's logits processors (so the LLM verifies against the same rules).
    pub(super) fn draw_draft(&mut self, id: SeqId, logits: &[f32], earlier: &[TokenId]) -> Drafted {
        let processed = self.processed_logits(id, logits, earlier);
        let logits = &processed[..];
        let Some(state) = self.requests.get_mut(&id) else {
            return Drafted {
                tokens: vec![0],
                probs: vec![],
            };
        };
        if state.sampling.is_greedy() {
            return Drafted {
                tokens: vec![sample(logits, &state.sampling, &mut state.rng)],
                probs: vec![],
            };
        }
        let probs = sampling_probs(logits, &state.sampling);
        let token = sample_from_probs(&probs, &mut state.rng);
        Drafted {
            tokens: vec![token],
            probs: vec![probs],
        }
    }
}

#[cfg(test)]
mod tests {
    use glimprouter_core::RoutingParams;

    use super::super::testing::{add_request, core, peaked};

    #[test]
    fn a_greedy_draft_is_the_argmax_and_a_sampled_one_keeps_its_distribution() {
        let mut core = core();
        let _e = (
            add_request(&mut core, 1, RoutingParams::default()),
            add_request(&mut core, 2, RoutingParams::default()),
        );
        let logits = peaked(&core, 7);
        let greedy = core.draw_draft(1, &logits, &[]);
        assert_eq!((greedy.tokens, greedy.probs.len()), (vec![7], 0));
        core.requests.get_mut(&2).unwrap().sampling.temperature = 1.0;
        let mut spread = vec![0f32; logits.len()];
        spread[3] = 1.0;
        let sampled = core.draw_draft(2, &spread, &[]);
        let probs = &sampled.probs[0];
        assert!((probs.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!(probs[sampled.tokens[0] as usize] > 0.0);
        assert!(
            probs[3] > probs[4],
            "the distribution drawn from is the one given"
        );
    }
}
