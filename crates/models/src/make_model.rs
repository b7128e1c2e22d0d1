//! Small random-weight checkpoints of each family in Hugging Face format, deterministic
//! from a seed: for tests, benchmarks and demos without downloading anything.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, Tokenizer};

use crate::config::Arch;
use crate::error::{read_json, ModelError, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct MakeModelSpec {
    pub arch: Arch,
    pub layers: usize,
    pub hidden: usize,
    pub intermediate: usize,
    pub heads: usize,
    pub kv_heads: usize,
    /// Defaults to hidden / heads.
    pub head_dim: Option<usize>,
    pub vocab: usize,
    pub max_position: usize,
    pub rope_theta: f64,
    pub tie_embeddings: bool,
    pub seed: u64,
}

impl MakeModelSpec {
    /// A tiny model of `arch` (2 layers, hidden 64) for tests.
    pub fn tiny(arch: Arch, seed: u64) -> Self {
        Self {
            arch,
            layers: 2,
            hidden: 64,
            intermediate: 128,
            heads: 4,
            kv_heads: 2,
            head_dim: None,
            vocab: 96,
            max_position: 512,
            rope_theta: 10_000.0,
            tie_embeddings: false,
            seed,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.hidden / self.heads.max(1))
    }
}

/// Special tokens of the generated word-level tokenizer, in id order.
pub const SPECIAL_TOKENS: [&str; 5] = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"];

const CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Writes config.json, model.safetensors, generation_config.json, tokenizer_config.json
/// and tokenizer.json (copied from `tokenizer` or generated) into `out_dir`.
pub fn make_model(spec: &MakeModelSpec, out_dir: &Path, tokenizer: Option<&Path>) -> Result<()> {
    validate(spec)?;
    std::fs::create_dir_all(out_dir).map_err(|source| ModelError::Io {
        path: out_dir.to_path_buf(),
        source,
    })?;
    let tokens = match tokenizer {
        Some(path) => copy_tokenizer(spec, path, out_dir)?,
        None => write_word_tokenizer(spec, out_dir)?,
    };
    write_json(&out_dir.join("config.json"), &config_json(spec, &tokens))?;
    write_json(
        &out_dir.join("generation_config.json"),
        &json!({ "bos_token_id": tokens.bos, "eos_token_id": tokens.eos, "do_sample": false }),
    )?;
    let weights = random_weights(spec)?;
    let path = out_dir.join("model.safetensors");
    candle_core::safetensors::save(&weights, &path).map_err(|e| ModelError::TensorLoad {
        name: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(())
}

fn validate(spec: &MakeModelSpec) -> Result<()> {
    let bad = |m: String| Err(ModelError::UnsupportedConfig(m));
    if spec.layers == 0 || spec.hidden == 0 || spec.intermediate == 0 || spec.vocab == 0 {
        return bad("layers, hidden, intermediate and vocab must be positive".into());
    }
    if spec.kv_heads == 0 || !spec.heads.is_multiple_of(spec.kv_heads) {
        return bad(format!(
            "heads {} must be a positive multiple of kv_heads {}",
            spec.heads, spec.kv_heads
        ));
    }
    if spec.head_dim.is_none() && !spec.hidden.is_multiple_of(spec.heads) {
        return bad(format!(
            "hidden {} not divisible by heads {}",
            spec.hidden, spec.heads
        ));
    }
    if !spec.head_dim().is_multiple_of(2) {
        return bad(format!("head_dim {} must be even", spec.head_dim()));
    }
    if spec.vocab < SPECIAL_TOKENS.len() + 1 {
        return bad(format!("vocab {} too small", spec.vocab));
    }
    Ok(())
}

/// Special token ids the config files refer to.
struct TokenInfo {
    bos: Option<u32>,
    eos: Vec<u32>,
}

fn config_json(spec: &MakeModelSpec, tokens: &TokenInfo) -> serde_json::Value {
    let mut c = json!({
        "architectures": [spec.arch.hf_architecture()],
        "model_type": spec.arch.model_type(),
        "vocab_size": spec.vocab,
        "hidden_size": spec.hidden,
        "intermediate_size": spec.intermediate,
        "num_hidden_layers": spec.layers,
        "num_attention_heads": spec.heads,
        "num_key_value_heads": spec.kv_heads,
        "max_position_embeddings": spec.max_position,
        "rms_norm_eps": 1e-6,
        "rope_theta": spec.rope_theta,
        "tie_word_embeddings": spec.tie_embeddings,
        "hidden_act": "silu",
        "bos_token_id": tokens.bos,
        "eos_token_id": tokens.eos.first(),
        "torch_dtype": "float32",
    });
    let obj = c.as_object_mut().expect("json! object literal");
    match spec.arch {
        Arch::Llama => {
            obj.insert("attention_bias".into(), json!(false));
            obj.insert("mlp_bias".into(), json!(false));
            obj.insert("rope_scaling".into(), json!(null));
        }
        Arch::Mistral => {
            obj.insert("sliding_window".into(), json!(null));
        }
        Arch::Qwen2 | Arch::Qwen3 => {
            obj.insert("sliding_window".into(), json!(spec.max_position));
            obj.insert("max_window_layers".into(), json!(spec.layers));
            obj.insert("use_sliding_window".into(), json!(false));
            obj.insert("attention_bias".into(), json!(false));
        }
    }
    if spec.head_dim.is_some() || spec.arch == Arch::Qwen3 {
        obj.insert("head_dim".into(), json!(spec.head_dim()));
    }
    c
}

/// Every tensor of the checkpoint, named as Hugging Face names them.
fn random_weights(spec: &MakeModelSpec) -> Result<HashMap<String, Tensor>> {
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let (h, i, d, v) = (spec.hidden, spec.intermediate, spec.head_dim(), spec.vocab);
    let (q_dim, kv_dim) = (spec.heads * d, spec.kv_heads * d);
    // Deterministic order: names sorted, values drawn in that order.
    let mut shapes: BTreeMap<String, (Vec<usize>, Init)> = BTreeMap::new();
    let mut add = |name: String, shape: Vec<usize>, init: Init| {
        shapes.insert(name, (shape, init));
    };
    add(
        "model.embed_tokens.weight".into(),
        vec![v, h],
        Init::Uniform(1.0),
    );
    add("model.norm.weight".into(), vec![h], Init::Norm);
    if !spec.tie_embeddings {
        add("lm_head.weight".into(), vec![v, h], Init::Fan(h));
    }
    for l in 0..spec.layers {
        let p = format!("model.layers.{l}");
        add(format!("{p}.input_layernorm.weight"), vec![h], Init::Norm);
        add(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            Init::Norm,
        );
        add(
            format!("{p}.self_attn.q_proj.weight"),
            vec![q_dim, h],
            Init::Fan(h),
        );
        add(
            format!("{p}.self_attn.k_proj.weight"),
            vec![kv_dim, h],
            Init::Fan(h),
        );
        add(
            format!("{p}.self_attn.v_proj.weight"),
            vec![kv_dim, h],
            Init::Fan(h),
        );
        add(
            format!("{p}.self_attn.o_proj.weight"),
            vec![h, q_dim],
            Init::Fan(q_dim),
        );
        if spec.arch == Arch::Qwen2 {
            for (n, dim) in [("q_proj", q_dim), ("k_proj", kv_dim), ("v_proj", kv_dim)] {
                add(
                    format!("{p}.self_attn.{n}.bias"),
                    vec![dim],
                    Init::Uniform(0.1),
                );
            }
        }
        if spec.arch == Arch::Qwen3 {
            add(format!("{p}.self_attn.q_norm.weight"), vec![d], Init::Norm);
            add(format!("{p}.self_attn.k_norm.weight"), vec![d], Init::Norm);
        }
        add(
            format!("{p}.mlp.gate_proj.weight"),
            vec![i, h],
            Init::Fan(h),
        );
        add(format!("{p}.mlp.up_proj.weight"), vec![i, h], Init::Fan(h));
        add(
            format!("{p}.mlp.down_proj.weight"),
            vec![h, i],
            Init::Fan(i),
        );
    }
    let mut out = HashMap::new();
    for (name, (shape, init)) in shapes {
        let n: usize = shape.iter().product();
        let values: Vec<f32> = (0..n).map(|_| init.sample(&mut rng)).collect();
        out.insert(name, Tensor::from_vec(values, shape, &Device::Cpu)?);
    }
    Ok(out)
}

/// Weight distributions chosen so activations stay O(1): errors in the model code then
/// show up as O(1) logit differences, not hidden under tiny values.
#[derive(Debug, Clone, Copy)]
enum Init {
    Uniform(f32),
    /// Uniform with unit output variance for this fan-in.
    Fan(usize),
    /// Norm gains around 1.
    Norm,
}

impl Init {
    fn sample(self, rng: &mut ChaCha8Rng) -> f32 {
        match self {
            Init::Uniform(a) => rng.random_range(-a..a),
            Init::Fan(n) => {
                let a = (3.0 / n as f32).sqrt();
                rng.random_range(-a..a)
            }
            Init::Norm => rng.random_range(0.8..1.2),
        }
    }
}

fn write_json(path: &Path, value: &serde_json::Value) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| ModelError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    std::fs::write(path, text).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A word-level tokenizer: the special tokens, single characters, then `w<i>` words up
/// to the model's vocabulary size.
fn write_word_tokenizer(spec: &MakeModelSpec, out_dir: &Path) -> Result<TokenInfo> {
    let mut words: Vec<String> = SPECIAL_TOKENS.iter().map(|s| s.to_string()).collect();
    let chars = "abcdefghijklmnopqrstuvwxyz0123456789.,?!:;'\"()+-*/=";
    words.extend(chars.chars().map(|c| c.to_string()));
    let mut k = 0;
    while words.len() < spec.vocab {
        words.push(format!("w{k}"));
        k += 1;
    }
    words.truncate(spec.vocab);
    let vocab: HashMap<String, u32> = words
        .iter()
        .enumerate()
        .map(|(i, w)| (w.clone(), i as u32))
        .collect();
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect::<ahash::AHashMap<_, _>>())
        .unk_token(SPECIAL_TOKENS[0].to_string())
        .build()
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let mut tok = Tokenizer::new(model);
    tok.with_pre_tokenizer(Some(Whitespace));
    tok.add_special_tokens(SPECIAL_TOKENS.iter().map(|s| AddedToken::from(*s, true)))
        .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
    let path = out_dir.join("tokenizer.json");
    tok.save(&path, true)
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
    write_json(
        &out_dir.join("tokenizer_config.json"),
        &json!({
            "bos_token": "<s>",
            "eos_token": "<|im_end|>",
            "unk_token": "<unk>",
            "pad_token": "</s>",
            "add_bos_token": false,
            "chat_template": CHAT_TEMPLATE,
            "model_max_length": spec.max_position,
            "tokenizer_class": "PreTrainedTokenizerFast",
        }),
    )?;
    Ok(TokenInfo {
        bos: Some(1),
        eos: vec![4, 2],
    })
}

/// Copies an existing tokenizer.json (and its sibling tokenizer_config.json if any).
fn copy_tokenizer(spec: &MakeModelSpec, src: &Path, out_dir: &Path) -> Result<TokenInfo> {
    let tok = Tokenizer::from_file(src)
        .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", src.display())))?;
    let size = tok.get_vocab_size(true);
    if size > spec.vocab {
        return Err(ModelError::UnsupportedConfig(format!(
            "tokenizer {} has {size} tokens, more than vocab {}",
            src.display(),
            spec.vocab
        )));
    }
    let copy = |from: &Path, to: &Path| {
        std::fs::copy(from, to).map_err(|source| ModelError::Io {
            path: from.to_path_buf(),
            source,
        })
    };
    copy(src, &out_dir.join("tokenizer.json"))?;
    let sibling = src.with_file_name("tokenizer_config.json");
    let cfg: serde_json::Value = if sibling.exists() {
        copy(&sibling, &out_dir.join("tokenizer_config.json"))?;
        read_json(&sibling)?
    } else {
        let cfg = json!({ "model_max_length": spec.max_position });
        write_json(&out_dir.join("tokenizer_config.json"), &cfg)?;
        cfg
    };
    let id_of = |key: &str| {
        let text = match cfg.get(key) {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Object(o)) => o
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            _ => None,
        };
        text.and_then(|t| tok.token_to_id(&t))
    };
    Ok(TokenInfo {
        bos: id_of("bos_token"),
        eos: id_of("eos_token").into_iter().collect(),
    })
}
