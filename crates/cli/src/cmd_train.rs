//! `glimp train`: trains the bundled SLM or LLM on the synthetic task.

use std::path::PathBuf;

use anyhow::Context;
use glimprouter_models::train::{train, TrainConfig};

use crate::mix_args::MixArgs;

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Which model of the pair to train. The SLM takes two runs: `slm-base`,
    /// then `slm` with `--init` at the slm-base checkpoint.
    #[arg(long, value_parser = ["slm-base", "slm", "llm"])]
    pub preset: String,
    /// Output folder (Hugging Face format); checkpoints overwrite it.
    #[arg(long)]
    pub out: PathBuf,
    /// Optimiser steps (default: the preset's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Seed for weights and data (default: the preset's).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Sequences per step (default: the preset's).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Write a checkpoint every this many steps (default: the preset's).
    #[arg(long)]
    pub checkpoint_every: Option<usize>,
    /// Stop after this many seconds, with the learning-rate schedule
    /// following elapsed time (for shared machines).
    #[arg(long)]
    pub time_budget_s: Option<f64>,
    /// Model width (default: the preset's); with the next four, the shape.
    #[arg(long)]
    pub hidden: Option<usize>,
    #[arg(long)]
    pub layers: Option<usize>,
    #[arg(long)]
    pub heads: Option<usize>,
    #[arg(long)]
    pub head_dim: Option<usize>,
    /// MLP width (default: the preset's).
    #[arg(long)]
    pub intermediate: Option<usize>,
    /// Stop after this many steps, with the learning rate still following
    /// the full `--steps` schedule (default: run the whole schedule).
    #[arg(long)]
    pub stop_after: Option<usize>,
    /// Continue from this checkpoint folder's weights (same shape).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// Peak learning rate (default: the preset's).
    #[arg(long)]
    pub learning_rate: Option<f64>,
    /// The training documents' task mix.
    #[command(flatten)]
    pub mix: MixArgs,
    /// CPU threads for candle's kernels (sets RAYON_NUM_THREADS).
    #[arg(long)]
    pub threads: Option<usize>,
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    if let Some(threads) = args.threads {
        // candle sizes its thread pools from this variable on first use, which
        // has not happened yet at this point.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    let mut config = TrainConfig::preset(&args.preset)?;
    if let Some(steps) = args.steps {
        config.steps = steps;
    }
    if let Some(seed) = args.seed {
        config.seed = seed;
    }
    if let Some(batch_size) = args.batch_size {
        config.batch_size = batch_size;
    }
    if let Some(every) = args.checkpoint_every {
        config.checkpoint_every = every;
    }
    let shape = [
        (args.hidden, &mut config.hidden),
        (args.layers, &mut config.layers),
        (args.heads, &mut config.heads),
        (args.head_dim, &mut config.head_dim),
        (args.intermediate, &mut config.intermediate),
    ];
    for (arg, field) in shape {
        if let Some(v) = arg {
            *field = v;
        }
    }
    if args.stop_after.is_some() {
        config.stop_after = args.stop_after;
    }
    if args.time_budget_s.is_some() {
        config.time_budget_s = args.time_budget_s;
    }
    if args.init.is_some() {
        config.init = args.init;
    }
    if let Some(lr) = args.learning_rate {
        config.learning_rate = lr;
    }
    args.mix.apply(&mut config.mix)?;
    let report = train(&config, &args.out, true)
        .with_context(|| format!("training {} into {}", args.preset, args.out.display()))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainArgs,
    }

    #[test]
    fn the_slm_preset_without_a_base_checkpoint_is_refused_before_training() {
        let out = std::env::temp_dir().join(format!("glimp-cli-slm-{}", std::process::id()));
        let args = Cli::parse_from(["train", "--preset", "slm", "--out", out.to_str().unwrap()]);
        let err = format!("{:#}", run(args.train).unwrap_err());
        assert!(err.contains("--preset slm-base"), "{err}");
        assert!(!out.exists(), "nothing is written");
    }
}
