//! Turning training documents into padded id/target/mask tensors.

use candle_core::{Device, Tensor};
use rand::Rng;
use tokenizers::Tokenizer;

use super::TrainError;
use crate::task::{training_text, TaskMix, TrainingText};

/// One tokenized document: ids (ending in EOS) and, per id, whether the
/// loss is taken on predicting it.
#[derive(Debug, Clone)]
pub struct TokenizedDoc {
    pub ids: Vec<u32>,
    pub trained: Vec<bool>,
}

pub fn tokenize_doc(
    tokenizer: &Tokenizer,
    doc: &TrainingText,
    eos_id: u32,
) -> Result<TokenizedDoc, TrainError> {
    let enc = tokenizer
        .encode(doc.text.as_str(), false)
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    let mut ids = enc.get_ids().to_vec();
    let mut trained: Vec<bool> = enc
        .get_offsets()
        .iter()
        .map(|(start, _)| doc.is_trained(*start))
        .collect();
    ids.push(eos_id);
    trained.push(true);
    Ok(TokenizedDoc { ids, trained })
}

/// Inputs `(b, len)`, targets `(b * len,)` and loss mask `(b * len,)`.
pub struct Batch {
    pub inputs: Tensor,
    pub targets: Tensor,
    pub mask: Tensor,
    /// Tokens that went through the model (padding included).
    pub tokens: usize,
}

/// Pads the documents (with EOS, masked out) to the longest one.
pub fn make_batch(
    docs: &[TokenizedDoc],
    pad_id: u32,
    device: &Device,
) -> Result<Batch, TrainError> {
    let len = docs.iter().map(|d| d.ids.len() - 1).max().unwrap_or(0);
    let mut inputs = Vec::with_capacity(docs.len() * len);
    let mut targets = Vec::with_capacity(docs.len() * len);
    let mut mask = Vec::with_capacity(docs.len() * len);
    for doc in docs {
        let n = doc.ids.len() - 1;
        for i in 0..len {
            if i < n {
                inputs.push(doc.ids[i]);
                targets.push(doc.ids[i + 1]);
                mask.push(if doc.trained[i + 1] { 1f32 } else { 0f32 });
            } else {
                inputs.push(pad_id);
                targets.push(pad_id);
                mask.push(0f32);
            }
        }
    }
    let b = docs.len();
    Ok(Batch {
        inputs: Tensor::from_vec(inputs, (b, len), device)?,
        targets: Tensor::from_vec(targets, b * len, device)?,
        mask: Tensor::from_vec(mask, b * len, device)?,
        tokens: b * len,
    })
}

/// A fresh random batch of `size` documents of `mix`.
pub fn random_batch(
    rng: &mut impl Rng,
    tokenizer: &Tokenizer,
    size: usize,
    slip_probability: f64,
    mix: &TaskMix,
    eos_id: u32,
    device: &Device,
) -> Result<Batch, TrainError> {
    let docs = (0..size)
        .map(|_| {
            tokenize_doc(
                tokenizer,
                &training_text(rng, slip_probability, mix),
                eos_id,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
    make_batch(&docs, eos_id, device)
}
