//! The bound on requests in the engine: each submitted request holds a slot from
//! submission until the engine forgets it (finished, aborted, refused), so a flood is
//! refused at the door instead of growing the queues until memory runs out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::api::EngineError;

#[derive(Debug, Clone)]
pub(crate) struct QueueSlots {
    taken: Arc<AtomicUsize>,
    limit: usize,
}

/// One request's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct QueueSlot {
    taken: Arc<AtomicUsize>,
}

impl QueueSlots {
    pub fn new(limit: usize) -> Self {
        Self {
            taken: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// A slot, or `Overloaded` when all `limit` are taken.
    pub fn try_take(&self) -> Result<QueueSlot, EngineError> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .map_err(|_| EngineError::Overloaded { limit: self.limit })?;
        Ok(QueueSlot {
            taken: self.taken.clone(),
        })
    }

    /// Requests in the engine now.
    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_limit_and_frees_on_drop() {
        let slots = QueueSlots::new(2);
        let a = slots.try_take().unwrap();
        let b = slots.try_take().unwrap();
        assert!(matches!(
            slots.try_take(),
            Err(EngineError::Overloaded { limit: 2 })
        ));
        drop(a);
        let c = slots.try_take().unwrap();
        assert_eq!(slots.taken(), 2);
        drop((b, c));
        assert_eq!(slots.taken(), 0);
    }
}
