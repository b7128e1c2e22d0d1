//! One sequence's view of one model's KV cache: its physical blocks and how
//! many positions of them hold computed KV.

use crate::block_pool::BlockPool;
use crate::prefix_hash::{hash_block, BlockHash};
use crate::{BlockId, TokenId};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BlockTable {
    pub blocks: Vec<BlockId>,
    /// Positions whose KV this model has computed (or will have, once the
    /// iteration that scheduled them ran).
    pub computed_len: usize,
    /// Chained hashes of the leading full blocks that are in the prefix cache
    /// (or were found there). Always a prefix of `blocks`.
    hashes: Vec<BlockHash>,
}

impl BlockTable {
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    pub fn capacity(&self, block_size: usize) -> usize {
        self.blocks.len() * block_size
    }

    /// Blocks still to allocate so that `len` positions fit.
    pub fn blocks_needed(&self, len: usize, block_size: usize) -> usize {
        len.div_ceil(block_size).saturating_sub(self.blocks.len())
    }

    /// For an empty table: reuses every cached full block of `tokens`'s
    /// prefix, leaving at least the last token to compute (its logits are
    /// needed). Returns the number of tokens found cached.
    pub fn match_prefix(&mut self, pool: &mut BlockPool, tokens: &[TokenId], salt: &str) -> usize {
        debug_assert!(self.blocks.is_empty() && self.computed_len == 0);
        let bs = pool.block_size();
        let cacheable = tokens.len().saturating_sub(1) / bs;
        let mut parent = None;
        for chunk in tokens.chunks_exact(bs).take(cacheable) {
            let h = hash_block(parent, chunk, salt);
            let Some(block) = pool.lookup(h) else { break };
            pool.acquire(block);
            self.blocks.push(block);
            self.hashes.push(h);
            parent = Some(h);
        }
        let hit = self.blocks.len() * bs;
        pool.record_query(tokens.len(), hit);
        self.computed_len = hit;
        hit
    }

    /// Allocates blocks until `len` positions fit. All or nothing.
    pub fn reserve(&mut self, pool: &mut BlockPool, len: usize) -> bool {
        let need = self.blocks_needed(len, pool.block_size());
        if need > pool.num_free() {
            return false;
        }
        for _ in 0..need {
            match pool.allocate() {
                Some(b) => self.blocks.push(b),
                None => unreachable!("free count said {need} blocks were available"),
            }
        }
        true
    }

    /// Registers in the prefix cache every full block of finalised tokens
    /// this model has computed. `tokens` must be the sequence's finalised
    /// tokens (never drafts).
    pub fn cache_full_blocks(&mut self, pool: &mut BlockPool, tokens: &[TokenId], salt: &str) {
        let bs = pool.block_size();
        let full = self.computed_len.min(tokens.len()) / bs;
        while self.hashes.len() < full {
            let i = self.hashes.len();
            let h = hash_block(
                self.hashes.last().copied(),
                &tokens[i * bs..(i + 1) * bs],
                salt,
            );
            pool.register(self.blocks[i], h);
            self.hashes.push(h);
        }
    }

    /// Forgets KV past `len` (rejected drafts, a rewritten step) and gives
    /// back the blocks that no longer hold any needed position.
    pub fn truncate(&mut self, pool: &mut BlockPool, len: usize) {
        let bs = pool.block_size();
        self.computed_len = self.computed_len.min(len);
        let keep = len.div_ceil(bs);
        // A cached block is full of finalised tokens; cutting into it would
        // let later writes corrupt a block other sequences may share.
        let keep_hashes = len / bs;
        self.hashes.truncate(keep_hashes);
        while self.blocks.len() > keep {
            if let Some(b) = self.blocks.pop() {
                pool.release(b);
            }
        }
    }

    /// Returns every block, tail first so that a sequence's last blocks are
    /// evicted before its (more shareable) first ones.
    pub fn free(&mut self, pool: &mut BlockPool) {
        while let Some(b) = self.blocks.pop() {
            pool.release(b);
        }
        self.hashes.clear();
        self.computed_len = 0;
    }

    pub fn num_cached_blocks(&self) -> usize {
        self.hashes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(n: usize, base: u32) -> Vec<TokenId> {
        (0..n as u32).map(|i| base + i).collect()
    }

    #[test]
    fn full_and_partial_prefix_hits() {
        let mut pool = BlockPool::new(16, 4);
        let prompt = toks(10, 100);
        let mut a = BlockTable::default();
        assert_eq!(a.match_prefix(&mut pool, &prompt, "t"), 0);
        assert!(a.reserve(&mut pool, 10));
        a.computed_len = 10;
        a.cache_full_blocks(&mut pool, &prompt, "t");
        assert_eq!(a.num_cached_blocks(), 2);

        // Same prompt: both full blocks hit.
        let mut b = BlockTable::default();
        assert_eq!(b.match_prefix(&mut pool, &prompt, "t"), 8);
        assert_eq!(&b.blocks[..], &a.blocks[..2]);
        assert_eq!(pool.ref_count(a.blocks[0]), 2);

        // Diverging in the second block: only the first hits.
        let mut other = prompt.clone();
        other[5] = 9999;
        let mut c = BlockTable::default();
        assert_eq!(c.match_prefix(&mut pool, &other, "t"), 4);

        // Another tenant: nothing.
        let mut d = BlockTable::default();
        assert_eq!(d.match_prefix(&mut pool, &prompt, "u"), 0);

        let stats = pool.stats();
        assert_eq!(stats.hits, 12);
        assert_eq!(stats.queries, 40);
    }

    #[test]
    fn hit_leaves_the_last_token_to_compute() {
        let mut pool = BlockPool::new(8, 4);
        let prompt = toks(8, 1);
        let mut a = BlockTable::default();
        a.match_prefix(&mut pool, &prompt, "");
        assert!(a.reserve(&mut pool, 8));
        a.computed_len = 8;
        a.cache_full_blocks(&mut pool, &prompt, "");
        let mut b = BlockTable::default();
        // 8 tokens = 2 full blocks, but the last token must be recomputed, so
        // only the first block can be reused.
        assert_eq!(b.match_prefix(&mut pool, &prompt, ""), 4);
    }

    #[test]
    fn truncate_frees_blocks_past_the_new_length() {
        let mut pool = BlockPool::new(8, 4);
        let mut t = BlockTable::default();
        assert!(t.reserve(&mut pool, 13));
        assert_eq!(t.blocks.len(), 4);
        t.computed_len = 13;
        t.truncate(&mut pool, 9);
        assert_eq!(t.blocks.len(), 3);
        assert_eq!(t.computed_len, 9);
        assert_eq!(pool.num_free(), 5);
        t.free(&mut pool);
        assert_eq!(pool.num_free(), 8);
        pool.check_consistency().unwrap();
    }

    #[test]
    fn reserve_is_all_or_nothing() {
        let mut pool = BlockPool::new(2, 4);
        let mut t = BlockTable::default();
        assert!(!t.reserve(&mut pool, 9));
        assert!(t.blocks.is_empty());
        assert_eq!(pool.num_free(), 2);
    }
}
