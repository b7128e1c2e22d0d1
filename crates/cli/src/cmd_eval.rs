//! `glimp eval`: every routing policy over a held-out problem set of the
//! bundled task, through the real engine; writes results.json, results.md,
//! pareto.png and h_init_hist.png.

use std::path::PathBuf;

use anyhow::{bail, Context};
use glimprouter_engine::Engine;
use glimprouter_eval::{run_eval, write_outputs, EvalOptions, LatencyMode};

use crate::config_file::ConfigArgs;
use crate::mix_args::MixArgs;

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Folder for results.json, results.md and the figures.
    #[arg(long, default_value = "eval-results")]
    pub out: PathBuf,
    /// A small eval for CI (40 problems, fewer thresholds; minutes, not more).
    #[arg(long)]
    pub quick: bool,
    /// Run the problems one at a time instead of all at once.
    #[arg(long)]
    pub sequential: bool,
    /// Problems in the set (default 200, or 40 with --quick).
    #[arg(long)]
    pub problems: Option<usize>,
    /// Seed of the problem set.
    #[arg(long)]
    pub seed: Option<u64>,
    /// glimp threshold the checks use (default: the config's routing tau).
    #[arg(long)]
    pub tau: Option<f32>,
    /// glimp thresholds of the sweep, comma separated.
    #[arg(long, value_delimiter = ',')]
    pub taus: Option<Vec<f32>>,
    /// Draft tokens per verify for the +spec runs (default: the config's, at least 1).
    #[arg(long)]
    pub speculative_k: Option<usize>,
    /// Step positions sampled for the H_init disagreement AUC.
    #[arg(long)]
    pub auc_positions: Option<usize>,
    /// Sampling temperature of every run (0 = greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Rounds of every run; each row is the run's median round (default 3,
    /// or 1 with --quick).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub repeats: Option<u64>,
    /// The problems' task mix, for pairs trained on another one.
    #[command(flatten)]
    pub mix: MixArgs,
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let base = config.engine.default_routing();
    let mut opts = if args.quick {
        EvalOptions::quick(base)
    } else {
        EvalOptions::full(base)
    };
    if let Some(n) = args.problems {
        if n == 0 {
            bail!("--problems must be at least 1");
        }
        opts.num_problems = n;
    }
    if let Some(seed) = args.seed {
        opts.seed = seed;
    }
    args.mix.apply(&mut opts.mix)?;
    if let Some(tau) = args.tau {
        opts.default_tau = tau;
    }
    if let Some(taus) = args.taus {
        opts.glimp_taus = taus;
    }
    if let Some(k) = args.speculative_k {
        opts.speculative_k = k.max(1);
    }
    if let Some(n) = args.auc_positions {
        opts.auc_positions = n;
    }
    if let Some(n) = args.repeats {
        opts.repeats = n as usize;
    }
    opts.temperature = args.temperature;
    opts.spec_paused_above = config.engine.speculative_disable_by_batch_size;
    if args.sequential {
        opts.mode = LatencyMode::Sequential;
    }

    let engine =
        Engine::start(&config.engine, Default::default()).context("starting the engine")?;
    let report = run_eval(&engine, &opts, args.quick);
    engine.shutdown();
    let report = report.context("running the eval")?;
    let written = write_outputs(&report, &args.out)?;
    println!("{}", glimprouter_eval::report::render_markdown(&report));
    for f in &written.files {
        eprintln!("wrote {}", f.display());
    }
    for e in &written.plot_errors {
        eprintln!("warning: figure not drawn: {e}");
    }
    Ok(())
}
