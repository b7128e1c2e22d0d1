//! The cloneable handle callers use to talk to the engine thread.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam::channel::Sender;
use tokio::sync::{mpsc, oneshot};

use crate::api::{EngineError, GenerateRequest, StreamEvent};
use crate::info::EngineInfo;
use crate::metrics::EngineMetrics;
use crate::queue_slots::{QueueSlot, QueueSlots};

/// Messages from callers to the engine thread.
pub(crate) enum Command {
    Submit {
        // Boxed: a request is far larger than the other messages.
        request: Box<GenerateRequest>,
        events: mpsc::UnboundedSender<StreamEvent>,
        /// Held by the request for as long as the engine knows it.
        slot: QueueSlot,
    },
    Abort {
        request_id: String,
    },
    /// Forget cached prefixes; the reply is how many blocks were forgotten.
    ResetPrefixCache {
        reply: oneshot::Sender<usize>,
    },
    Shutdown,
}

/// Cheap to clone; all clones talk to the same engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    pub(crate) commands: Sender<Command>,
    pub(crate) info: Arc<EngineInfo>,
    pub(crate) metrics: Arc<EngineMetrics>,
    pub(crate) slots: QueueSlots,
    /// The engine thread, never joined: kept to ask whether it has ended.
    pub(crate) thread: Arc<JoinHandle<()>>,
}

impl EngineHandle {
    /// Validates and enqueues a request. Events arrive on the returned receiver;
    /// dropping it aborts the request. `Overloaded` when the engine already holds
    /// `max_num_seqs + max_waiting_requests` requests.
    pub fn submit(
        &self,
        request: GenerateRequest,
    ) -> Result<mpsc::UnboundedReceiver<StreamEvent>, EngineError> {
        self.info.validate(&request)?;
        let slot = self.slots.try_take()?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.commands
            .send(Command::Submit {
                request: Box::new(request),
                events: tx,
                slot,
            })
            .map_err(|_| EngineError::Unavailable("engine thread has stopped".into()))?;
        Ok(rx)
    }

    /// Cancels a request wherever it is; its blocks are freed in the next iteration.
    pub fn abort(&self, request_id: &str) {
        let _ = self.commands.send(Command::Abort {
            request_id: request_id.to_string(),
        });
    }

    /// Forgets the cached prefixes of both models that no running request
    /// holds, between benchmark runs for instance, so that a run does not
    /// find the prompts of the one before it cached (vLLM's
    /// `reset_prefix_cache`). The receiver yields how many blocks were
    /// forgotten once the engine thread has done it.
    pub fn reset_prefix_cache(&self) -> Result<oneshot::Receiver<usize>, EngineError> {
        let (reply, rx) = oneshot::channel();
        self.commands
            .send(Command::ResetPrefixCache { reply })
            .map_err(|_| EngineError::Unavailable("engine thread has stopped".into()))?;
        Ok(rx)
    }

    /// Asks the engine thread to stop after aborting everything still running.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
    }

    /// Whether the engine thread still runs: false after `shutdown`, or
    /// after a panic killed it (`/health` reports it).
    pub fn is_running(&self) -> bool {
        !self.thread.is_finished()
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    pub fn metrics(&self) -> &Arc<EngineMetrics> {
        &self.metrics
    }

    /// Requests the engine holds now, waiting or running (or submitted and not yet
    /// seen by the engine thread).
    pub fn requests_in_engine(&self) -> usize {
        self.slots.taken()
    }
}
