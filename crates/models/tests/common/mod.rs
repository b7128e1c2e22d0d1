//! Shared test helpers: generated checkpoints and candle-transformers reference models.
#![allow(dead_code)]

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::{llama, mistral, qwen2, qwen3};
use glimprouter_models::{make_model, Arch, MakeModelSpec};

/// The tiny model of each family used by the tests; they differ on purpose (GQA/MQA,
/// tied embeddings, head_dim != hidden/heads, rope theta) to cover the config space.
pub fn spec(arch: Arch) -> MakeModelSpec {
    let mut s = MakeModelSpec::tiny(arch, 7 + arch as u64);
    match arch {
        Arch::Llama => s.tie_embeddings = true,
        Arch::Mistral => {
            s.kv_heads = 1;
            s.rope_theta = 1_000.0;
        }
        Arch::Qwen2 => s.rope_theta = 1_000_000.0,
        Arch::Qwen3 => {
            s.head_dim = Some(32);
            s.rope_theta = 1_000_000.0;
        }
    }
    s
}

pub fn make(arch: Arch) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    make_model(&spec(arch), dir.path(), None).expect("make_model");
    dir
}

/// candle-transformers' own implementation of a family, fed one token at a time.
pub enum Reference {
    Llama(llama::Llama, llama::Cache, llama::Config),
    Mistral(mistral::Model),
    Qwen2(qwen2::ModelForCausalLM),
    Qwen3(qwen3::ModelForCausalLM),
}

impl Reference {
    pub fn load(dir: &Path, arch: Arch) -> Reference {
        let dev = Device::Cpu;
        let cfg_text = std::fs::read_to_string(dir.join("config.json")).unwrap();
        let files = [dir.join("model.safetensors")];
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, DType::F32, &dev).unwrap() };
        match arch {
            Arch::Llama => {
                let c: llama::LlamaConfig = serde_json::from_str(&cfg_text).unwrap();
                let c = c.into_config(false);
                let model = llama::Llama::load(vb, &c).unwrap();
                let cache = llama::Cache::new(true, DType::F32, &c, &dev).unwrap();
                Reference::Llama(model, cache, c)
            }
            Arch::Mistral => {
                let c: mistral::Config = serde_json::from_str(&cfg_text).unwrap();
                Reference::Mistral(mistral::Model::new(&c, vb).unwrap())
            }
            Arch::Qwen2 => {
                let c: qwen2::Config = serde_json::from_str(&cfg_text).unwrap();
                Reference::Qwen2(qwen2::ModelForCausalLM::new(&c, vb).unwrap())
            }
            Arch::Qwen3 => {
                let c: qwen3::Config = serde_json::from_str(&cfg_text).unwrap();
                Reference::Qwen3(qwen3::ModelForCausalLM::new(&c, vb).unwrap())
            }
        }
    }

    fn reset(&mut self) {
        match self {
            Reference::Llama(_, cache, c) => {
                *cache = llama::Cache::new(true, DType::F32, c, &Device::Cpu).unwrap()
            }
            Reference::Mistral(m) => m.clear_kv_cache(),
            Reference::Qwen2(m) => m.clear_kv_cache(),
            Reference::Qwen3(m) => m.clear_kv_cache(),
        }
    }

    /// Logits after feeding `tokens` (at positions `pos..`), for the last one.
    pub fn step(&mut self, tokens: &[u32], pos: usize) -> Vec<f32> {
        let input = Tensor::new(tokens, &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let out = match self {
            Reference::Llama(m, cache, _) => m.forward(&input, pos, cache),
            Reference::Mistral(m) => m.forward(&input, pos),
            Reference::Qwen2(m) => m.forward(&input, pos),
            Reference::Qwen3(m) => m.forward(&input, pos),
        }
        .unwrap();
        logits_of(&out)
    }

    /// Logits at every position of `tokens`, each from a fresh run fed one token at a time.
    pub fn all_logits(&mut self, tokens: &[u32]) -> Vec<Vec<f32>> {
        self.reset();
        (0..tokens.len())
            .map(|p| self.step(&tokens[p..p + 1], p))
            .collect()
    }
}

/// A reference model's output as one f32 row.
pub fn logits_of(out: &Tensor) -> Vec<f32> {
    out.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
