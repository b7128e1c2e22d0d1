//! Writing a Hugging Face-format model folder (Qwen3 family).

use std::path::Path;

use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use tokenizers::Tokenizer;

use super::{ModelShape, TrainError};
use crate::task::{write_tokenizer_files, EOS_TOKEN};

/// The `config.json` of a Qwen3ForCausalLM with this shape.
pub fn qwen3_config_json(shape: &ModelShape, eos_id: u32) -> serde_json::Value {
    serde_json::json!({
        "architectures": ["Qwen3ForCausalLM"],
        "model_type": "qwen3",
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers,
        "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.heads,
        "head_dim": shape.head_dim,
        "attention_bias": false,
        "hidden_act": "silu",
        "max_position_embeddings": shape.max_positions,
        "max_window_layers": shape.layers,
        "use_sliding_window": false,
        "sliding_window": null,
        "rope_theta": shape.rope_theta,
        "rope_scaling": null,
        "rms_norm_eps": shape.rms_norm_eps,
        "tie_word_embeddings": true,
        "bos_token_id": eos_id,
        "eos_token_id": eos_id,
        "torch_dtype": "float32",
    })
}

/// Writes config.json, generation_config.json, tokenizer files and
/// model.safetensors into `dir`. The weights go to a temporary file first and
/// are renamed, so a reader never sees a half-written checkpoint.
pub fn write_hf_folder(
    dir: &Path,
    varmap: &VarMap,
    shape: &ModelShape,
    tokenizer: &Tokenizer,
    extra: &serde_json::Value,
) -> Result<(), TrainError> {
    std::fs::create_dir_all(dir)?;
    let eos_id = tokenizer
        .token_to_id(EOS_TOKEN)
        .ok_or_else(|| TrainError::Tokenizer("no EOS token".into()))?;
    let tmp = dir.join("model.safetensors.tmp");
    varmap.save(&tmp)?;
    std::fs::rename(&tmp, dir.join("model.safetensors"))?;
    let write_json = |name: &str, value: &serde_json::Value| -> Result<(), TrainError> {
        std::fs::write(dir.join(name), serde_json::to_string_pretty(value)?)?;
        Ok(())
    };
    write_json("config.json", &qwen3_config_json(shape, eos_id))?;
    write_json(
        "generation_config.json",
        &serde_json::json!({
            "bos_token_id": eos_id,
            "eos_token_id": eos_id,
            "pad_token_id": eos_id,
            "do_sample": false,
            "max_new_tokens": shape.max_positions,
        }),
    )?;
    write_json("training_state.json", extra)?;
    write_tokenizer_files(dir, tokenizer, shape.max_positions)?;
    Ok(())
}

/// Name of the embedding table, whose rows follow the vocabulary.
const EMBED: &str = "model.embed_tokens.weight";

/// Loads the weights of the checkpoint folder `dir` into `varmap`, for
/// continued training. Every tensor must have its variable's shape, except
/// the embedding: its rows are matched by token text against `dir`'s own
/// tokenizer.json, so a checkpoint trained before the vocabulary grew
/// still loads; rows of new tokens keep their seeded initial values.
pub fn load_into(varmap: &VarMap, dir: &Path, tokenizer: &Tokenizer) -> Result<(), TrainError> {
    let tensors = candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu)?;
    let old_tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
        .map_err(|e| TrainError::Tokenizer(format!("{}: {e}", dir.display())))?;
    let vars = super::lock_vars(varmap)?;
    for (name, var) in vars.iter() {
        let old = tensors.get(name).ok_or_else(|| {
            TrainError::Invalid(format!("{} has no tensor {name}", dir.display()))
        })?;
        let value = if name == EMBED {
            embedding_by_token(old, var.as_tensor(), &old_tokenizer, tokenizer)?
        } else {
            old.clone()
        };
        if value.shape() != var.shape() {
            return Err(TrainError::Invalid(format!(
                "{name}: {} has shape {:?}, the model {:?}",
                dir.display(),
                value.shape(),
                var.shape()
            )));
        }
        var.set(&value)?;
    }
    Ok(())
}

/// `current` with each row of a token that `old_tokenizer` also has
/// replaced by that token's row of `old`.
pub(super) fn embedding_by_token(
    old: &Tensor,
    current: &Tensor,
    old_tokenizer: &Tokenizer,
    tokenizer: &Tokenizer,
) -> Result<Tensor, TrainError> {
    if old.dim(1)? != current.dim(1)? {
        return Err(TrainError::Invalid(format!(
            "{EMBED}: width {} in the checkpoint, {} in the model",
            old.dim(1)?,
            current.dim(1)?
        )));
    }
    let mut rows = current.to_vec2::<f32>()?;
    let old_rows = old.to_vec2::<f32>()?;
    for (token, id) in tokenizer.get_vocab(true) {
        if let Some(old_id) = old_tokenizer.token_to_id(&token) {
            if let (Some(row), Some(old_row)) =
                (rows.get_mut(id as usize), old_rows.get(old_id as usize))
            {
                row.clone_from(old_row);
            }
        }
    }
    Ok(Tensor::new(rows, current.device())?)
}
