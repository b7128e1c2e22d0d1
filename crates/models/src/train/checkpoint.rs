//! Writing a Hugging Face-format model folder (Qwen3 family).

use std::path::Path;

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
