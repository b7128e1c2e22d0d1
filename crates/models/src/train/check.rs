//! Checks on a written checkpoint through candle-transformers' own Qwen3:
//! the reference loss (to compare with the trainer's) and greedy accuracy on
//! the task.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::VarBuilder;
use candle_transformers::models::qwen3;
use tokenizers::Tokenizer;

use super::{masked_cross_entropy, TokenizedDoc, TrainError};
use crate::task::{check_answer, Problem, EOS_TOKEN, SOLUTION_MAX_TOKENS, STEP_SEPARATOR};

/// Area under the ROC curve of `score` for predicting `label` (ties count
/// half); `None` without both classes.
pub fn auc(rows: &[(f32, bool)]) -> Option<f64> {
    let pos: Vec<f32> = rows.iter().filter(|r| r.1).map(|r| r.0).collect();
    let neg: Vec<f32> = rows.iter().filter(|r| !r.1).map(|r| r.0).collect();
    if pos.is_empty() || neg.is_empty() {
        return None;
    }
    let mut wins = 0f64;
    for p in &pos {
        for n in &neg {
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(wins / (pos.len() * neg.len()) as f64)
}

pub struct LoadedCheckpoint {
    pub config: qwen3::Config,
    pub tokenizer: Tokenizer,
    vb: VarBuilder<'static>,
}

pub fn load_checkpoint(dir: &Path) -> Result<LoadedCheckpoint, TrainError> {
    let config: qwen3::Config =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json"))?)?;
    let tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    Ok(LoadedCheckpoint {
        config,
        tokenizer,
        vb,
    })
}

impl LoadedCheckpoint {
    /// Mean masked loss over `docs`, computed with candle-transformers' Qwen3
    /// (all positions' hidden states through the tied embedding).
    pub fn reference_loss(&self, docs: &[TokenizedDoc]) -> Result<f32, TrainError> {
        let embed = self.vb.get(
            (self.config.vocab_size, self.config.hidden_size),
            "model.embed_tokens.weight",
        )?;
        let (mut total, mut count) = (0f64, 0f64);
        for doc in docs {
            let mut model = qwen3::Model::new(&self.config, self.vb.clone())?;
            let n = doc.ids.len() - 1;
            let input = Tensor::new(&doc.ids[..n], &Device::Cpu)?.unsqueeze(0)?;
            let hidden = model.forward(&input, 0)?.squeeze(0)?;
            let logits = hidden.matmul(&embed.t()?)?;
            let targets = Tensor::new(&doc.ids[1..], &Device::Cpu)?;
            let mask: Vec<f32> = doc.trained[1..]
                .iter()
                .map(|&t| if t { 1.0 } else { 0.0 })
                .collect();
            let weight: f64 = mask.iter().map(|&m| m as f64).sum();
            let mask = Tensor::from_vec(mask, n, &Device::Cpu)?;
            let loss = masked_cross_entropy(&logits, &targets, &mask)?.to_scalar::<f32>()?;
            total += loss as f64 * weight;
            count += weight;
        }
        Ok((total / count.max(1.0)) as f32)
    }

    /// Greedy completion of `prompt`, up to `max_new` tokens or EOS.
    pub fn greedy(&self, prompt: &str, max_new: usize) -> Result<String, TrainError> {
        let mut model = qwen3::ModelForCausalLM::new(&self.config, self.vb.clone())?;
        let eos = self.tokenizer.token_to_id(EOS_TOKEN);
        let ids = self
            .tokenizer
            .encode(prompt, false)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec();
        let mut out = Vec::new();
        let mut input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let mut offset = 0;
        for _ in 0..max_new {
            if offset + input.dim(1)? > self.config.max_position_embeddings {
                break;
            }
            let logits = model.forward(&input, offset)?;
            offset += input.dim(1)?;
            let next = logits
                .flatten_all()?
                .argmax(D::Minus1)?
                .to_scalar::<u32>()?;
            if Some(next) == eos {
                break;
            }
            out.push(next);
            input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
        }
        self.tokenizer
            .decode(&out, false)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))
    }

    /// Greedy continuation of `prefix` up to the end of one step (the step
    /// separator or EOS), with the entropy (nats) of the step's first token.
    pub fn greedy_step(&self, prefix: &str, max_new: usize) -> Result<(String, f32), TrainError> {
        let mut model = qwen3::ModelForCausalLM::new(&self.config, self.vb.clone())?;
        let eos = self.tokenizer.token_to_id(EOS_TOKEN);
        let ids = self
            .tokenizer
            .encode(prefix, false)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?
            .get_ids()
            .to_vec();
        let mut out = Vec::new();
        let mut input = Tensor::new(ids.as_slice(), &Device::Cpu)?.unsqueeze(0)?;
        let (mut offset, mut entropy) = (0, 0f32);
        for i in 0..max_new {
            if offset + input.dim(1)? > self.config.max_position_embeddings {
                break;
            }
            let logits = model.forward(&input, offset)?.flatten_all()?;
            offset += input.dim(1)?;
            if i == 0 {
                let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
                entropy = -(logp.exp()? * &logp)?.sum_all()?.to_scalar::<f32>()?;
            }
            let next = logits.argmax(D::Minus1)?.to_scalar::<u32>()?;
            if Some(next) == eos {
                break;
            }
            out.push(next);
            let text = self
                .tokenizer
                .decode(&out, false)
                .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
            if let Some(step) = text.strip_suffix(STEP_SEPARATOR) {
                return Ok((step.to_string(), entropy));
            }
            input = Tensor::new(&[next], &Device::Cpu)?.unsqueeze(0)?;
        }
        let text = self
            .tokenizer
            .decode(&out, false)
            .map_err(|e| TrainError::Tokenizer(e.to_string()))?;
        Ok((text, entropy))
    }

    /// For every reference step of `problems`, the model's own version of
    /// it given the reference prefix. A quick stand-in for the router's
    /// disagreement signal.
    pub fn step_agreement(&self, problems: &[Problem]) -> Result<Vec<StepCheck>, TrainError> {
        let mut checks = Vec::new();
        for p in problems {
            let mut prefix = p.prompt.clone();
            for (index, step) in p.solution_steps.iter().enumerate() {
                let (mine, entropy) = self.greedy_step(&prefix, 40)?;
                checks.push(StepCheck {
                    index,
                    reference: step.clone(),
                    mine,
                    entropy,
                });
                prefix.push_str(step);
                prefix.push_str(STEP_SEPARATOR);
            }
        }
        Ok(checks)
    }

    /// The problems whose greedy completion does not check, with that
    /// completion.
    pub fn wrong_answers<'p>(
        &self,
        problems: &'p [Problem],
    ) -> Result<Vec<(&'p Problem, String)>, TrainError> {
        let mut wrong = Vec::new();
        for p in problems {
            let out = self.greedy(&p.prompt, SOLUTION_MAX_TOKENS)?;
            if !check_answer(p, &out) {
                wrong.push((p, out));
            }
        }
        Ok(wrong)
    }

    /// Fraction of `problems` whose greedy completion checks.
    pub fn greedy_accuracy(&self, problems: &[Problem]) -> Result<f64, TrainError> {
        let wrong = self.wrong_answers(problems)?.len();
        Ok((problems.len() - wrong) as f64 / problems.len().max(1) as f64)
    }
}

/// One reference step and the model's own version of it (`step_agreement`).
#[derive(Debug, Clone)]
pub struct StepCheck {
    /// The step's index in its solution.
    pub index: usize,
    pub reference: String,
    pub mine: String,
    /// Entropy of the model's first token (H_init), in nats.
    pub entropy: f32,
}

impl StepCheck {
    pub fn differs(&self) -> bool {
        self.mine != self.reference
    }

    pub fn first_word_differs(&self) -> bool {
        self.mine.split(' ').next() != self.reference.split(' ').next()
    }
}
