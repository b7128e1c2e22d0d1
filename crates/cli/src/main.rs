//! `glimp`: serve, generate, train, make-model.

mod cmd_eval;
mod cmd_generate;
mod cmd_make_model;
mod cmd_serve;
mod cmd_train;
mod config_file;
mod mix_args;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "glimp",
    version,
    about = "GlimpRouter serving engine: step-level SLM/LLM collaborative inference"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OpenAI-compatible API.
    Serve(cmd_serve::ServeArgs),
    /// Run one prompt and show which model wrote which step.
    Generate(cmd_generate::GenerateArgs),
    /// Evaluate every routing policy on a held-out problem set.
    Eval(cmd_eval::EvalArgs),
    /// Train the bundled SLM or LLM on the synthetic task.
    Train(cmd_train::TrainArgs),
    /// Write a random-weight checkpoint of a supported family (for tests).
    MakeModel(cmd_make_model::MakeModelArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Serve(args) => cmd_serve::run(args),
        Command::Generate(args) => cmd_generate::run(args),
        Command::Eval(args) => cmd_eval::run(args),
        Command::Train(args) => cmd_train::run(args),
        Command::MakeModel(args) => cmd_make_model::run(args),
    }
}
