//! The `glimp make-model` command (crates/cli/src/cmd_make_model.rs) parses its flags and
//! writes a loadable checkpoint. Compiled here so the models crate's tests cover it.

#[path = "../../cli/src/cmd_make_model.rs"]
mod cmd_make_model;

use clap::Parser;
use glimprouter_models::{Arch, ModelConfig, ModelTokenizer};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: cmd_make_model::MakeModelArgs,
}

#[test]
fn make_model_command_writes_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m");
    let cli = Cli::try_parse_from([
        "glimp",
        "--arch",
        "qwen2",
        "--layers",
        "3",
        "--hidden",
        "32",
        "--intermediate",
        "48",
        "--heads",
        "4",
        "--kv-heads",
        "1",
        "--vocab",
        "80",
        "--seed",
        "9",
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap();
    assert_eq!(cli.args.arch, Arch::Qwen2);
    cmd_make_model::run(cli.args).unwrap();
    let cfg = ModelConfig::from_dir(&out).unwrap();
    assert_eq!(
        (cfg.arch, cfg.num_hidden_layers, cfg.num_key_value_heads),
        (Arch::Qwen2, 3, 1)
    );
    assert_eq!(ModelTokenizer::from_dir(&out).unwrap().vocab_size(), 80);
    assert!(Cli::try_parse_from(["glimp", "--arch", "gpt2", "--out", "x"]).is_err());
}
