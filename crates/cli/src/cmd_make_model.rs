//! `glimp make-model`: write a random-weight checkpoint of a supported family in
//! Hugging Face format (for tests, benchmarks and demos).

use std::path::PathBuf;

use anyhow::Context;
use glimprouter_models::{make_model, Arch, MakeModelSpec};

#[derive(Debug, Clone, clap::Args)]
pub struct MakeModelArgs {
    /// Model family: llama, mistral, qwen2 or qwen3.
    #[arg(long, default_value = "qwen3")]
    pub arch: Arch,
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    #[arg(long, default_value_t = 64)]
    pub hidden: usize,
    #[arg(long, default_value_t = 128)]
    pub intermediate: usize,
    #[arg(long, default_value_t = 4)]
    pub heads: usize,
    #[arg(long, default_value_t = 2)]
    pub kv_heads: usize,
    /// Per-head dimension (default hidden / heads).
    #[arg(long)]
    pub head_dim: Option<usize>,
    #[arg(long, default_value_t = 256)]
    pub vocab: usize,
    #[arg(long, default_value_t = 2048)]
    pub max_position: usize,
    #[arg(long, default_value_t = 10_000.0)]
    pub rope_theta: f64,
    /// Share the input embedding with the LM head.
    #[arg(long)]
    pub tie_embeddings: bool,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// A tokenizer.json to copy (a sibling tokenizer_config.json is copied too);
    /// default: a generated word-level tokenizer covering the vocabulary.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Output folder (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

impl MakeModelArgs {
    pub fn spec(&self) -> MakeModelSpec {
        MakeModelSpec {
            arch: self.arch,
            layers: self.layers,
            hidden: self.hidden,
            intermediate: self.intermediate,
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            vocab: self.vocab,
            max_position: self.max_position,
            rope_theta: self.rope_theta,
            tie_embeddings: self.tie_embeddings,
            seed: self.seed,
        }
    }
}

pub fn run(args: MakeModelArgs) -> anyhow::Result<()> {
    let spec = args.spec();
    make_model(&spec, &args.out, args.tokenizer.as_deref()).with_context(|| {
        format!(
            "writing a {} checkpoint to {}",
            spec.arch,
            args.out.display()
        )
    })?;
    println!(
        "wrote {} checkpoint ({} layers, hidden {}, vocab {}, seed {}) to {}",
        spec.arch,
        spec.layers,
        spec.hidden,
        spec.vocab,
        spec.seed,
        args.out.display()
    );
    Ok(())
}
