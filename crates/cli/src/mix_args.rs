//! `--max-share` / `--tied-share` / `--max-problems`: the task mix of
//! `glimp train` and `glimp eval`.

use anyhow::bail;
use glimprouter_models::task::TaskMix;

#[derive(Debug, Clone, Default, clap::Args)]
pub struct MixArgs {
    /// Share of `max` operations in the task (default: the bundled task's,
    /// none).
    #[arg(long)]
    pub max_share: Option<f64>,
    /// Share of `max` operands in the total's decade (default: the bundled
    /// task's).
    #[arg(long)]
    pub tied_share: Option<f64>,
    /// Share of problems that may have `max` at all (default: all).
    #[arg(long)]
    pub max_problems: Option<f64>,
}

impl MixArgs {
    /// `mix` with the given shares in place; each must be in [0, 1].
    pub fn apply(&self, mix: &mut TaskMix) -> anyhow::Result<()> {
        for (arg, share) in [
            (self.max_share, &mut mix.max_share),
            (self.tied_share, &mut mix.tied_share),
            (self.max_problems, &mut mix.max_problems),
        ] {
            if let Some(value) = arg {
                *share = value;
            }
        }
        if let Some((field, value)) = mix.out_of_range() {
            bail!(
                "--{} must be in [0, 1], got {value}",
                field.replace('_', "-")
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_replace_the_mix_and_out_of_range_ones_are_refused() {
        let mut mix = TaskMix::BUNDLED;
        MixArgs::default().apply(&mut mix).unwrap();
        assert_eq!(mix, TaskMix::BUNDLED);
        let args = MixArgs {
            max_share: Some(0.3),
            ..MixArgs::default()
        };
        args.apply(&mut mix).unwrap();
        assert_eq!(mix.max_share, 0.3);
        assert_eq!(mix.tied_share, TaskMix::BUNDLED.tied_share);
        let bad = MixArgs {
            tied_share: Some(1.5),
            ..MixArgs::default()
        };
        let err = bad.apply(&mut mix).unwrap_err().to_string();
        assert!(err.contains("--tied-share"), "{err}");
    }
}
