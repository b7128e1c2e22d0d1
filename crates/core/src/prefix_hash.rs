//! Content hashes of full KV blocks, chained like vLLM's prefix cache.
//!
//! A block's hash covers its parent's hash and its own tokens, so equal hashes
//! mean equal whole prefixes. The first block of every chain also covers the
//! tenant's salt, so no two tenants ever produce the same chain and one
//! tenant's cached blocks can never be found by another.

use xxhash_rust::xxh3::Xxh3;

use crate::TokenId;

/// 128 bits: collisions are not a practical concern at any cache size.
pub type BlockHash = u128;

/// Hash of one full block given its parent's hash (`None` for the first block).
pub fn hash_block(parent: Option<BlockHash>, tokens: &[TokenId], salt: &str) -> BlockHash {
    let mut h = Xxh3::new();
    match parent {
        Some(p) => {
            h.update(&[1]);
            h.update(&p.to_le_bytes());
        }
        None => {
            // Length-prefixed so that salt bytes cannot run into token bytes.
            h.update(&[0]);
            h.update(&(salt.len() as u64).to_le_bytes());
            h.update(salt.as_bytes());
        }
    }
    for t in tokens {
        h.update(&t.to_le_bytes());
    }
    h.digest128()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salt_and_parent_change_the_hash() {
        let a = hash_block(None, &[1, 2, 3], "alice");
        let b = hash_block(None, &[1, 2, 3], "bob");
        assert_ne!(a, b);
        assert_eq!(a, hash_block(None, &[1, 2, 3], "alice"));
        let child_a = hash_block(Some(a), &[4, 5, 6], "alice");
        let child_b = hash_block(Some(b), &[4, 5, 6], "alice");
        assert_ne!(
            child_a, child_b,
            "the salt must propagate through the chain"
        );
        assert_ne!(
            hash_block(None, &[1, 2, 3], ""),
            hash_block(None, &[1, 2, 4], "")
        );
    }
}
