//! `glimp-loadtest`: see `glimp-loadtest --help`.

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use glimprouter_loadtest::cli::{Cli, Command};
use glimprouter_loadtest::{compare, markdown, run_load, Report};

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Some(Command::Compare { a, b, metric }) => {
            let (ra, rb) = (Report::read_json(&a)?, Report::read_json(&b)?);
            match metric {
                Some(name) => {
                    let row = compare::compare(&ra, &rb)
                        .into_iter()
                        .find(|r| r.name == name)
                        .with_context(|| {
                            let names: Vec<&str> = compare::METRICS.iter().map(|m| m.0).collect();
                            format!("unknown metric {name:?}; one of {}", names.join(", "))
                        })?;
                    let ratio = row
                        .ratio
                        .with_context(|| format!("{name} is missing or zero in a report"))?;
                    println!("{ratio}");
                }
                None => print!(
                    "{}",
                    compare::render(
                        &compare::compare(&ra, &rb),
                        &a.display().to_string(),
                        &b.display().to_string()
                    )
                ),
            }
        }
        Some(Command::Table { reports }) => {
            let loaded = reports
                .iter()
                .map(|p| Ok((p.display().to_string(), Report::read_json(p)?)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            print!("{}", markdown::table(&loaded));
        }
        None => {
            let json = cli.run.json.clone();
            let root = std::env::current_dir().context("current directory")?;
            let config = cli.run.into_config(&root)?;
            let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
            let report = runtime.block_on(run_load(&config))?;
            print!("{}", report.to_table());
            if let Some(path) = json {
                report.write_json(&path)?;
                eprintln!("report written to {}", path.display());
            }
        }
    }
    Ok(())
}
