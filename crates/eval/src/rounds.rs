//! Repeated runs. One batched policy run lasts about a second, so on a
//! shared machine its latency ratio moves more between two runs than the
//! margins the eval checks. The eval therefore runs every policy in
//! several rounds (each round all runs, in the same order, so that a slow
//! spell of the machine hits neighbouring runs alike) and reports, for each
//! run, its median round.

use crate::policy_run::PolicyResult;
use crate::report::set_ratios_to_llm_only;

/// `rounds[r][i]` is run `i` of round `r` (every round the same runs in the
/// same order). Each round's ratios are taken against that round's LLM-only
/// run; every run's row is then its round with the median ratio (the lower
/// of the two middle ones for an even count), carrying every round's ratio
/// in `latency_vs_llm_only_runs`, in round order.
pub fn median_rounds(mut rounds: Vec<Vec<PolicyResult>>) -> Vec<PolicyResult> {
    for round in &mut rounds {
        set_ratios_to_llm_only(round);
    }
    let Some(first) = rounds.first() else {
        return Vec::new();
    };
    (0..first.len())
        .map(|i| {
            let runs: Vec<&PolicyResult> = rounds.iter().map(|round| &round[i]).collect();
            // Without an LLM-only run there is no ratio: rank by seconds.
            let key = |p: &PolicyResult| p.latency_vs_llm_only.unwrap_or(p.mean_latency_s);
            let mut order: Vec<usize> = (0..runs.len()).collect();
            order.sort_by(|&a, &b| {
                key(runs[a])
                    .total_cmp(&key(runs[b]))
                    .then(runs[a].mean_latency_s.total_cmp(&runs[b].mean_latency_s))
            });
            let mut row = runs[order[(order.len() - 1) / 2]].clone();
            row.latency_vs_llm_only_runs =
                runs.iter().filter_map(|p| p.latency_vs_llm_only).collect();
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::row;

    fn round(llm_only_s: f64, glimp_s: f64) -> Vec<PolicyResult> {
        vec![
            row("glimp", Some(0.4), 1.0, glimp_s, 0.2),
            row("llm-only", None, 1.0, llm_only_s, 1.0),
        ]
    }

    #[test]
    fn each_run_is_its_median_round_against_that_rounds_llm_only() {
        // Ratios 0.5, 0.7, 0.6: the median is round 3's, although round 1
        // has glimp's median seconds.
        let rows = median_rounds(vec![round(2.0, 1.0), round(1.0, 0.7), round(2.5, 1.5)]);
        let glimp = &rows[0];
        assert_eq!(glimp.mean_latency_s, 1.5);
        assert_eq!(glimp.latency_vs_llm_only, Some(0.6));
        assert_eq!(glimp.latency_vs_llm_only_runs, vec![0.5, 0.7, 0.6]);
        // LLM-only is 1.0x in every round: its median seconds decide.
        let llm = &rows[1];
        assert_eq!(llm.latency_vs_llm_only, Some(1.0));
        assert_eq!(llm.mean_latency_s, 2.0);
        assert_eq!(llm.latency_vs_llm_only_runs, vec![1.0, 1.0, 1.0]);
    }

    #[test]
    fn an_even_count_takes_the_lower_middle_and_one_round_is_itself() {
        let rows = median_rounds(vec![round(2.0, 1.0), round(1.0, 0.7)]);
        assert_eq!(rows[0].latency_vs_llm_only, Some(0.5));
        let one = median_rounds(vec![round(2.0, 1.2)]);
        assert_eq!(one[0].latency_vs_llm_only, Some(0.6));
        assert_eq!(one[0].latency_vs_llm_only_runs, vec![0.6]);
        assert!(median_rounds(Vec::new()).is_empty());
    }
}
