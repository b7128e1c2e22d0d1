//! Waiting sequences, queued per tenant, admitted by weighted fair share.
//!
//! Stride scheduling: each tenant accumulates `1 / weight` per admitted
//! request; the non-empty tenant with the least accumulated share goes next
//! (FCFS within a tenant). A tenant that was idle re-enters at the current
//! minimum, so it cannot bank credit while idle, and a burst from one tenant
//! cannot starve another.

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::SeqId;

#[derive(Debug, Default)]
struct TenantQueue {
    seqs: VecDeque<SeqId>,
    share: f64,
    /// Tie-breaker among equal shares: least recently served first.
    last_served: u64,
}

#[derive(Debug, Default)]
pub struct TenantQueues {
    queues: BTreeMap<String, TenantQueue>,
    weights: HashMap<String, f64>,
    clock: u64,
    len: usize,
}

impl TenantQueues {
    pub fn new(weights: HashMap<String, f64>) -> Self {
        Self {
            weights,
            ..Self::default()
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn min_active_share(&self) -> Option<f64> {
        self.queues
            .values()
            .filter(|q| !q.seqs.is_empty())
            .map(|q| q.share)
            .min_by(f64::total_cmp)
    }

    fn entry(&mut self, tenant: &str) -> &mut TenantQueue {
        let floor = self.min_active_share();
        let q = self.queues.entry(tenant.to_string()).or_default();
        if q.seqs.is_empty() {
            if let Some(floor) = floor {
                q.share = q.share.max(floor);
            }
        }
        q
    }

    /// A new request joins the back of its tenant's queue.
    pub fn push_back(&mut self, tenant: &str, id: SeqId) {
        self.entry(tenant).seqs.push_back(id);
        self.len += 1;
    }

    /// A preempted request goes back to the front of its tenant's queue.
    pub fn push_front(&mut self, tenant: &str, id: SeqId) {
        self.entry(tenant).seqs.push_front(id);
        self.len += 1;
    }

    /// The request that should be admitted next, without removing it.
    pub fn peek(&self) -> Option<(&str, SeqId)> {
        self.queues
            .iter()
            .filter(|(_, q)| !q.seqs.is_empty())
            .min_by(|(_, a), (_, b)| {
                a.share
                    .total_cmp(&b.share)
                    .then(a.last_served.cmp(&b.last_served))
            })
            .and_then(|(t, q)| q.seqs.front().map(|&id| (t.as_str(), id)))
    }

    /// Removes the front request of `tenant` (the one `peek` returned) and
    /// charges the tenant its share.
    pub fn pop(&mut self, tenant: &str) -> Option<SeqId> {
        let weight = self
            .weights
            .get(tenant)
            .copied()
            .filter(|w| *w > 0.0)
            .unwrap_or(1.0);
        self.clock += 1;
        let clock = self.clock;
        let q = self.queues.get_mut(tenant)?;
        let id = q.seqs.pop_front()?;
        q.share += 1.0 / weight;
        q.last_served = clock;
        self.len -= 1;
        Some(id)
    }

    /// Removes a request wherever it waits (abort).
    pub fn remove(&mut self, tenant: &str, id: SeqId) -> bool {
        let Some(q) = self.queues.get_mut(tenant) else {
            return false;
        };
        let Some(pos) = q.seqs.iter().position(|&s| s == id) else {
            return false;
        };
        q.seqs.remove(pos);
        self.len -= 1;
        true
    }

    pub fn iter(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.queues.values().flat_map(|q| q.seqs.iter().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_does_not_starve_another_tenant() {
        let mut q = TenantQueues::new(HashMap::new());
        for i in 0..100 {
            q.push_back("burst", i);
        }
        q.push_back("quiet", 1000);
        let mut order = vec![];
        while let Some((t, _)) = q.peek() {
            let t = t.to_string();
            order.push(q.pop(&t).unwrap());
        }
        let pos = order.iter().position(|&id| id == 1000).unwrap();
        assert!(pos <= 1, "quiet tenant admitted at position {pos}");
    }

    #[test]
    fn weights_share_admissions() {
        let mut q = TenantQueues::new(HashMap::from([
            ("gold".to_string(), 3.0),
            ("free".to_string(), 1.0),
        ]));
        for i in 0..40 {
            q.push_back("gold", i);
            q.push_back("free", 100 + i);
        }
        let mut gold = 0;
        for _ in 0..20 {
            let (t, _) = q.peek().unwrap();
            let t = t.to_string();
            if t == "gold" {
                gold += 1;
            }
            q.pop(&t);
        }
        assert_eq!(gold, 15, "3:1 weights give 15 of 20 admissions");
    }

    #[test]
    fn idle_tenant_cannot_bank_credit() {
        let mut q = TenantQueues::new(HashMap::new());
        for i in 0..10 {
            q.push_back("a", i);
        }
        for _ in 0..10 {
            q.pop("a");
        }
        // "b" was idle all along; it re-enters at a's share, not at zero.
        for i in 0..4 {
            q.push_back("a", 100 + i);
            q.push_back("b", 200 + i);
        }
        let mut b_first = 0;
        for _ in 0..4 {
            let (t, _) = q.peek().unwrap();
            let t = t.to_string();
            if t == "b" {
                b_first += 1;
            }
            q.pop(&t);
        }
        assert_eq!(b_first, 2);
    }
}
