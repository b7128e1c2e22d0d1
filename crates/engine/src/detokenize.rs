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
    /// `output` holds every output token so far, the newest last. Returns the
    /// text that token completes (possibly empty).
    pub fn next_text(
        &mut self,
        tokenizer: &ModelTokenizer,
        output: &[u32],
    ) -> Result<String, ModelError> {
        let prefix = tokenizer.decode(&output[self.prefix_offset..self.read_offset], true)?;
        let full = tokenizer.decode(&output[self.prefix_offset..], true)?;
        if full.len() > prefix.len()
            && !full.ends_with('\u{FFFD}')
            && full.is_char_boundary(prefix.len())
        {
            let delta = full[prefix.len()..].to_string();
            self.prefix_offset = self.read_offset;
            self.read_offset = output.len();
            Ok(delta)
        } else {
            Ok(String::new())
        }
    }
}
