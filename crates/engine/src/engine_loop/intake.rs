//! Commands from the handles, and the registry of requests: submitting (checked by
//! `EngineHandle::submit` already), aborting, forgetting, failing.

use glimprouter_core::sequence::Sequence;
use glimprouter_core::SeqId;

use crate::api::{EngineError, FinishReason, GenerateRequest, StreamEvent};
use crate::handle::Command;
use crate::queue_slots::QueueSlot;
use crate::request::RequestState;

use super::EngineCore;

impl EngineCore {
    /// Returns false on shutdown.
    pub(super) fn handle(&mut self, cmd: Command) -> bool {
        match cmd {
            Command::Submit {
                request,
                events,
                slot,
            } => self.submit(*request, events, slot),
            Command::Abort { request_id } => {
                if let Some(&id) = self.ids.get(&request_id) {
                    self.abort(id);
                }
            }
            Command::ResetPrefixCache { reply } => {
                let _ = reply.send(self.sched.reset_prefix_cache());
            }
            Command::Shutdown => {
                let ids: Vec<SeqId> = self.requests.keys().copied().collect();
                for id in ids {
                    self.abort(id);
                }
                return false;
            }
        }
        true
    }

    pub(super) fn submit(
        &mut self,
        req: GenerateRequest,
        events: tokio::sync::mpsc::UnboundedSender<StreamEvent>,
        slot: QueueSlot,
    ) {
        if self.ids.contains_key(&req.request_id) {
            let _ = events.send(StreamEvent::Error(EngineError::InvalidRequest(format!(
                "request id {} is already in flight",
                req.request_id
            ))));
            return;
        }
        let id = self.next_seq;
        self.next_seq += 1;
        let writer = req.routing.policy.rules().initial_writer();
        let seq = Sequence::new(
            id,
            req.tenant.clone(),
            req.prompt_ids.clone(),
            req.sampling.clone(),
            req.routing.clone(),
            writer,
        );
        if let Err(e) = self.sched.add(seq) {
            let _ = events.send(StreamEvent::Error(EngineError::InvalidRequest(
                e.to_string(),
            )));
            return;
        }
        self.metrics
            .prompt_tokens
            .inc_by(req.prompt_ids.len() as u64);
        let tenant_label = self.metrics.tenant_label(&req.tenant);
        let eos = self.tokenizer.eos_token_ids().to_vec();
        let mut state = RequestState::new(
            req.request_id.clone(),
            tenant_label,
            events,
            req.sampling,
            req.routing,
            req.prompt_ids.len(),
            eos,
            req.arrival,
        );
        state.queue_slot = Some(slot);
        self.ids.insert(req.request_id, id);
        self.requests.insert(id, state);
    }

    pub(super) fn abort(&mut self, id: SeqId) {
        let counters = self.sched.seq(id).map(|seq| seq.route.counters);
        if let Some(mut state) = self.release(id) {
            let counters = counters.unwrap_or_default();
            state.finish(FinishReason::Abort, None, counters, &self.metrics);
        }
    }

    /// Frees everything a request holds (blocks, a remote call in flight,
    /// its id) and hands back its state, if it was still known.
    pub(super) fn release(&mut self, id: SeqId) -> Option<RequestState> {
        self.sched.abort(id);
        if let Some(remote) = self.remote.as_mut() {
            remote.cancel(id);
        }
        let state = self.requests.remove(&id)?;
        self.ids.remove(&state.request_id);
        Some(state)
    }

    /// A caller that dropped its receiver (client gone) aborts its request.
    pub(super) fn reap_disconnected(&mut self) {
        let gone: Vec<SeqId> = self
            .requests
            .iter()
            .filter(|(_, s)| s.events.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.abort(id);
        }
    }

    pub(super) fn fail_all(&mut self, e: EngineError) {
        let ids: Vec<SeqId> = self.requests.keys().copied().collect();
        for id in ids {
            self.fail_request(id, e.clone());
        }
    }

    /// Ends one request with an error and frees what it held.
    pub(super) fn fail_request(&mut self, id: SeqId, e: EngineError) {
        if let Some(state) = self.release(id) {
            let _ = state.events.send(StreamEvent::Error(e));
        }
    }
}
