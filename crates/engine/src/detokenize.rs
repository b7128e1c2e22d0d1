//! Incremental detokenization: the text each new token adds.
//!
//! Decoding token by token is wrong for byte-level and word-level tokenizers
//! alike (spaces and multi-byte characters depend on neighbours), so each step
//! decodes a short window and emits only the new suffix, holding text back
//! while it ends in an incomplete character (the same scheme as vLLM and TGI).

use glimprouter_models::{ModelError, ModelTokenizer};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IncrementalDecoder {
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// The first output index the next call reads: callers need to pass only
    /// the output from there on, not all of it.
    pub fn window_start(&self) -> usize {
        self.prefix_offset
    }

    /// `window` holds the output tokens from index `start` (at most
    /// [`Self::window_start`]) on, the newest last. Returns the text that
    /// token completes (possibly empty).
    pub fn next_text(
        &mut self,
        tokenizer: &ModelTokenizer,
        window: &[u32],
        start: usize,
    ) -> Result<String, ModelError> {
        let from = self.prefix_offset - start;
        let read = self.read_offset - start;
        let prefix = tokenizer.decode(&window[from..read], true)?;
        let full = tokenizer.decode(&window[from..], true)?;
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            let delta = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = start + window.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }
}
