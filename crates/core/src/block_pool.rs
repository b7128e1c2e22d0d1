//! One model's pool of physical KV blocks: reference counts, an LRU free
//! list, and the prefix-cache index.
//!
//! As in vLLM, a freed block that holds a cached full prefix stays findable
//! in the index while it sits on the free list; it is only evicted (its hash
//! dropped) when the free list hands it out again. Free blocks are popped from
//! the head and pushed to the tail, so the least recently freed go first.

use std::collections::HashMap;

use crate::prefix_hash::BlockHash;
use crate::BlockId;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixCacheStats {
    /// Tokens looked up in the cache: a prompt at admission, or all a
    /// request holds when a model joins it later.
    pub queries: u64,
    /// Of those, tokens found cached.
    pub hits: u64,
}

#[derive(Debug, Clone)]
struct BlockMeta {
    ref_count: u32,
    hash: Option<BlockHash>,
    prev: u32,
    next: u32,
    on_free_list: bool,
}

#[derive(Debug, Clone)]
pub struct BlockPool {
    block_size: usize,
    blocks: Vec<BlockMeta>,
    head: u32,
    tail: u32,
    num_free: usize,
    cached: HashMap<BlockHash, BlockId>,
    stats: PrefixCacheStats,
    evictions: u64,
}

impl BlockPool {
    pub fn new(num_blocks: usize, block_size: usize) -> Self {
        assert!(block_size > 0, "block_size must be positive");
        assert!(num_blocks < NIL as usize, "too many blocks");
        let mut pool = Self {
            block_size,
            blocks: vec![
                BlockMeta {
                    ref_count: 0,
                    hash: None,
                    prev: NIL,
                    next: NIL,
                    on_free_list: false
                };
                num_blocks
            ],
            head: NIL,
            tail: NIL,
            num_free: 0,
            cached: HashMap::new(),
            stats: PrefixCacheStats::default(),
            evictions: 0,
        };
        for b in 0..num_blocks as u32 {
            pool.push_tail(b);
        }
        pool
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn num_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// Blocks that can be handed out now (unreferenced, cached or not).
    pub fn num_free(&self) -> usize {
        self.num_free
    }

    /// vLLM's `kv_cache_usage_perc`: 1 - free / usable.
    pub fn usage(&self) -> f64 {
        if self.blocks.is_empty() {
            return 0.0;
        }
        1.0 - self.num_free as f64 / self.blocks.len() as f64
    }

    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.blocks[block as usize].ref_count
    }

    pub fn stats(&self) -> PrefixCacheStats {
        self.stats
    }

    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    pub fn num_cached(&self) -> usize {
        self.cached.len()
    }

    pub(crate) fn record_query(&mut self, queried_tokens: usize, hit_tokens: usize) {
        self.stats.queries += queried_tokens as u64;
        self.stats.hits += hit_tokens as u64;
    }

    /// Takes the least recently freed block, evicting its cached hash if any.
    pub fn allocate(&mut self) -> Option<BlockId> {
        let b = self.head;
        if b == NIL {
            return None;
        }
        self.unlink(b);
        let meta = &mut self.blocks[b as usize];
        meta.ref_count = 1;
        if let Some(h) = meta.hash.take() {
            self.cached.remove(&h);
            self.evictions += 1;
        }
        Some(b)
    }

    /// The cached block holding this exact prefix, if still present.
    pub fn lookup(&self, hash: BlockHash) -> Option<BlockId> {
        self.cached.get(&hash).copied()
    }

    /// Adds a holder to a block (a prefix hit). Revives it from the free list.
    pub fn acquire(&mut self, block: BlockId) {
        if self.blocks[block as usize].on_free_list {
            self.unlink(block);
        }
        self.blocks[block as usize].ref_count += 1;
    }

    /// Drops a holder; at zero the block joins the free list tail (its cached
    /// hash, if any, stays findable until the block is reused).
    pub fn release(&mut self, block: BlockId) {
        let meta = &mut self.blocks[block as usize];
        assert!(
            meta.ref_count > 0,
            "release of an unreferenced block {block}"
        );
        meta.ref_count -= 1;
        if meta.ref_count == 0 {
            self.push_tail(block);
        }
    }

    /// Makes a full, computed block findable under `hash`. If another block
    /// already holds that prefix, this one simply stays uncached.
    pub fn register(&mut self, block: BlockId, hash: BlockHash) {
        if self.blocks[block as usize].hash.is_some() || self.cached.contains_key(&hash) {
            return;
        }
        self.blocks[block as usize].hash = Some(hash);
        self.cached.insert(hash, block);
    }

    /// Forgets every cached prefix no running sequence holds (vLLM's
    /// `reset_prefix_cache`), so the next requests start cold; blocks in use
    /// stay findable. Returns how many cached blocks were forgotten.
    pub fn reset_prefix_cache(&mut self) -> usize {
        let mut forgotten = 0;
        for meta in self.blocks.iter_mut().filter(|m| m.ref_count == 0) {
            if let Some(h) = meta.hash.take() {
                self.cached.remove(&h);
                forgotten += 1;
            }
        }
        forgotten
    }

    /// The hash a block is cached under, if any.
    pub fn hash_of(&self, block: BlockId) -> Option<BlockHash> {
        self.blocks[block as usize].hash
    }

    fn push_tail(&mut self, b: u32) {
        let meta = &mut self.blocks[b as usize];
        debug_assert!(!meta.on_free_list);
        meta.on_free_list = true;
        meta.prev = self.tail;
        meta.next = NIL;
        if self.tail == NIL {
            self.head = b;
        } else {
            self.blocks[self.tail as usize].next = b;
        }
        self.tail = b;
        self.num_free += 1;
    }

    fn unlink(&mut self, b: u32) {
        let BlockMeta {
            prev,
            next,
            on_free_list,
            ..
        } = self.blocks[b as usize];
        debug_assert!(on_free_list);
        if prev == NIL {
            self.head = next;
        } else {
            self.blocks[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.blocks[next as usize].prev = prev;
        }
        let meta = &mut self.blocks[b as usize];
        meta.prev = NIL;
        meta.next = NIL;
        meta.on_free_list = false;
        self.num_free -= 1;
    }

    /// Free-list order, head first (for tests).
    pub fn free_list(&self) -> Vec<BlockId> {
        let mut out = Vec::with_capacity(self.num_free);
        let mut b = self.head;
        while b != NIL {
            out.push(b);
            b = self.blocks[b as usize].next;
        }
        out
    }

    /// Checks the pool's own bookkeeping: the free list holds exactly the
    /// unreferenced blocks, and the index points at blocks carrying that hash.
    pub fn check_consistency(&self) -> Result<(), String> {
        let list = self.free_list();
        if list.len() != self.num_free {
            return Err(format!(
                "free list has {} entries, counter says {}",
                list.len(),
                self.num_free
            ));
        }
        for (i, m) in self.blocks.iter().enumerate() {
            if (m.ref_count == 0) != m.on_free_list {
                return Err(format!(
                    "block {i}: ref_count {} but on_free_list {}",
                    m.ref_count, m.on_free_list
                ));
            }
        }
        for (h, &b) in &self.cached {
            if self.blocks[b as usize].hash != Some(*h) {
                return Err(format!(
                    "cache index points at block {b} which does not carry that hash"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_until_empty_then_release_in_lru_order() {
        let mut pool = BlockPool::new(3, 16);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        let c = pool.allocate().unwrap();
        assert_eq!(pool.allocate(), None);
        assert_eq!(pool.usage(), 1.0);
        pool.release(b);
        pool.release(a);
        pool.release(c);
        assert_eq!(pool.free_list(), vec![b, a, c]);
        assert_eq!(pool.allocate(), Some(b), "least recently freed goes first");
        pool.check_consistency().unwrap();
    }

    #[test]
    fn cached_block_stays_findable_until_reused() {
        let mut pool = BlockPool::new(2, 4);
        let a = pool.allocate().unwrap();
        pool.register(a, 42);
        pool.release(a);
        assert_eq!(
            pool.lookup(42),
            Some(a),
            "freed cached block is still a hit"
        );
        pool.acquire(a);
        assert_eq!(pool.ref_count(a), 1);
        assert_eq!(pool.num_free(), 1);
        pool.release(a);
        // Reuse: the other (never cached) block is older on the list, then `a`.
        let first = pool.allocate().unwrap();
        assert_ne!(first, a);
        assert_eq!(pool.lookup(42), Some(a));
        let second = pool.allocate().unwrap();
        assert_eq!(second, a);
        assert_eq!(pool.lookup(42), None, "reuse evicts the hash");
        assert_eq!(pool.evictions(), 1);
        pool.check_consistency().unwrap();
    }

    #[test]
    fn reset_forgets_free_cached_blocks_and_keeps_held_ones() {
        let mut pool = BlockPool::new(4, 16);
        let held = pool.allocate().unwrap();
        let freed = pool.allocate().unwrap();
        pool.register(held, 1);
        pool.register(freed, 2);
        pool.release(freed);
        assert_eq!(pool.reset_prefix_cache(), 1);
        assert_eq!(pool.lookup(2), None, "a freed prefix is forgotten");
        assert_eq!(pool.lookup(1), Some(held), "a held prefix stays");
        assert_eq!(pool.num_free(), 3, "no block changes hands");
        pool.check_consistency().unwrap();
        assert_eq!(pool.reset_prefix_cache(), 0);
    }

    #[test]
    fn duplicate_hash_is_not_registered_twice() {
        let mut pool = BlockPool::new(2, 4);
        let a = pool.allocate().unwrap();
        let b = pool.allocate().unwrap();
        pool.register(a, 7);
        pool.register(b, 7);
        assert_eq!(pool.lookup(7), Some(a));
        assert_eq!(pool.hash_of(b), None);
        pool.check_consistency().unwrap();
    }
}
