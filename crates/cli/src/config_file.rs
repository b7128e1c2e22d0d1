//! The TOML config file: `[engine]` and `[server]`, with command-line overrides.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use glimprouter_engine::{Backend, EngineConfig};
use glimprouter_server::ServerConfig;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub engine: EngineConfig,
    #[serde(default)]
    pub server: ServerConfig,
}

/// Where the default config lives, relative to the working directory.
pub const DEFAULT_CONFIG: &str = "configs/default.toml";

#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// TOML config file [default: configs/default.toml, or none when both
    /// --slm and --llm are given].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The SLM: a checkpoint folder or a `.gguf` file, run locally
    /// (replaces engine.slm.path).
    #[arg(long, value_name = "PATH")]
    pub slm: Option<PathBuf>,
    /// The LLM: a checkpoint folder or a `.gguf` file, run locally
    /// (replaces engine.llm.path).
    #[arg(long, value_name = "PATH")]
    pub llm: Option<PathBuf>,
    /// Override any config key, e.g. `--set engine.routing.tau=0.8`
    /// (value in TOML syntax; bare words are taken as strings). Repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
}

impl ConfigArgs {
    /// The config file with the model flags applied; with both model flags
    /// and no `--config`, every key at its built-in default and the served
    /// name taken from the LLM's file or folder name.
    pub fn load(&self) -> anyhow::Result<Config> {
        let mut config = match (&self.config, &self.slm, &self.llm) {
            (None, Some(slm), Some(llm)) => from_models(slm, llm, &self.overrides)?,
            (path, _, _) => load(
                path.as_deref().unwrap_or(Path::new(DEFAULT_CONFIG)),
                &self.overrides,
            )?,
        };
        for (section, path) in [
            (&mut config.engine.slm, &self.slm),
            (&mut config.engine.llm, &self.llm),
        ] {
            if let Some(p) = path {
                section.backend = Backend::Local;
                section.path = Some(p.clone());
                section.remote = None;
            }
        }
        config
            .engine
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
        Ok(config)
    }
}

/// The built-in defaults for a pair of models named on the command line.
fn from_models(slm: &Path, llm: &Path, overrides: &[String]) -> anyhow::Result<Config> {
    let mut engine = EngineConfig::for_models(slm, llm);
    if let Some(stem) = llm.file_stem() {
        engine.served_model_name = stem.to_string_lossy().into_owned();
    }
    let mut doc = toml::Table::new();
    doc.insert(
        "engine".into(),
        toml::Value::try_from(&engine).context("the built-in engine config")?,
    );
    finish(doc, Path::new("."), overrides, "the built-in config")
}

pub fn load(path: &Path, overrides: &[String]) -> anyhow::Result<Config> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    finish(doc, base, overrides, &path.display().to_string())
}

/// Applies the `--set` overrides, parses, makes model paths relative to
/// `base` absolute, and validates.
fn finish(
    mut doc: toml::Table,
    base: &Path,
    overrides: &[String],
    source: &str,
) -> anyhow::Result<Config> {
    for o in overrides {
        apply_override(&mut doc, o)?;
    }
    let mut config: Config = toml::Value::Table(doc)
        .try_into()
        .with_context(|| format!("invalid config ({source})"))?;
    // Model paths are relative to the config file, so it works from any directory.
    for section in [&mut config.engine.slm, &mut config.engine.llm] {
        if let Some(p) = section.path.as_mut().filter(|p| p.is_relative()) {
            *p = base.join(&*p);
        }
    }
    config
        .engine
        .validate()
        .map_err(|e| anyhow::anyhow!("invalid config ({source}): {e}"))?;
    Ok(config)
}

fn apply_override(doc: &mut toml::Table, assignment: &str) -> anyhow::Result<()> {
    let Some((key, raw)) = assignment.split_once('=') else {
        bail!("--set expects KEY=VALUE, got `{assignment}`");
    };
    let value: toml::Value = match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or(toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    };
    let parts: Vec<&str> = key.trim().split('.').collect();
    let (last, parents) = parts.split_last().context("empty key in --set")?;
    let mut table = doc;
    for p in parents {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = entry
            .as_table_mut()
            .with_context(|| format!("--set {key}: `{p}` is not a table"))?;
    }
    table.insert(last.to_string(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_reach_nested_keys_and_unknown_keys_are_errors() {
        let dir = std::env::temp_dir().join(format!("glimp-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "[engine]\nslm = { path = \"s\" }\nllm = { path = \"l\" }\n",
        )
        .unwrap();
        let c = load(
            &path,
            &["engine.routing.tau=0.25".into(), "server.port=9001".into()],
        )
        .unwrap();
        assert_eq!(c.engine.routing.tau, 0.25);
        assert_eq!(c.server.port, 9001);
        assert_eq!(c.engine.slm.path, Some(dir.join("s")));
        let err = load(&path, &["engine.no_such_key=1".into()]).unwrap_err();
        assert!(format!("{err:#}").contains("no_such_key"), "{err:#}");
    }

    #[test]
    fn the_shipped_configs_load_and_validate() {
        let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
        let default = load(&configs.join("default.toml"), &[]).unwrap();
        assert_eq!(default.engine.remote_tiers(), [false, false]);
        let remote = load(&configs.join("remote-llm.toml"), &[]).unwrap();
        assert_eq!(remote.engine.remote_tiers(), [false, true]);
        assert!(remote.engine.slm.path.unwrap().ends_with("models/slm"));
        // Turning speculation back on is refused at load time.
        let err = load(
            &configs.join("remote-llm.toml"),
            &["engine.routing.speculative_k=3".into()],
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("speculative"), "{err:#}");
    }
}
