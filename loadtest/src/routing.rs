//! Aggregates the `routing` object glimp adds to its final chunk
//! (`steps`, `llm_steps`, `slm_tokens`, `llm_tokens`, `draft_tokens`,
//! `accepted_draft_tokens`, ...). Other servers send none; then there is
//! no summary.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingSummary {
    /// Successful requests whose stream carried a routing object.
    pub requests: u64,
    /// Sum over requests of every numeric count field.
    pub totals: BTreeMap<String, f64>,
    /// Mean over requests of every per-request ratio field (`*_ratio`, `*_rate`).
    pub mean_ratios: BTreeMap<String, f64>,
    /// Total `llm_steps / steps`: the share of steps the LLM wrote.
    pub llm_step_ratio: Option<f64>,
    /// Total `llm_tokens / (slm_tokens + llm_tokens)`.
    pub llm_token_ratio: Option<f64>,
    /// Total `accepted_draft_tokens / draft_tokens`.
    pub draft_acceptance_rate: Option<f64>,
}

fn is_ratio(key: &str) -> bool {
    key.ends_with("_ratio") || key.ends_with("_rate")
}

/// `None` when no request carried routing information.
pub fn summarize<'a>(
    objects: impl IntoIterator<Item = &'a Map<String, Value>>,
) -> Option<RoutingSummary> {
    let mut requests = 0u64;
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    let mut ratio_sums: BTreeMap<String, (f64, u64)> = BTreeMap::new();
    for object in objects {
        requests += 1;
        // glimp nests the per-model token counts (`tokens_by_model.slm`);
        // one level of nesting is flattened into dotted keys.
        let flat = object.iter().flat_map(|(key, value)| match value {
            Value::Object(inner) => inner
                .iter()
                .map(|(k, v)| (format!("{key}.{k}"), v))
                .collect::<Vec<_>>(),
            _ => vec![(key.clone(), value)],
        });
        for (key, value) in flat {
            let Some(v) = value.as_f64() else { continue };
            if is_ratio(&key) {
                let e = ratio_sums.entry(key.to_string()).or_default();
                e.0 += v;
                e.1 += 1;
            } else {
                *totals.entry(key.to_string()).or_default() += v;
            }
        }
    }
    if requests == 0 {
        return None;
    }
    let ratio = |num: f64, den: f64| (den > 0.0).then(|| num / den);
    let total = |k: &str| totals.get(k).copied();
    let llm_step_ratio = match (total("llm_steps"), total("steps")) {
        (Some(l), Some(s)) => ratio(l, s),
        _ => None,
    };
    let llm_tokens = total("llm_tokens").or_else(|| total("tokens_by_model.llm"));
    let slm_tokens = total("slm_tokens").or_else(|| total("tokens_by_model.slm"));
    let llm_token_ratio = match (llm_tokens, slm_tokens) {
        (Some(l), Some(s)) => ratio(l, l + s),
        _ => None,
    };
    let draft_acceptance_rate = match (total("accepted_draft_tokens"), total("draft_tokens")) {
        (Some(a), Some(d)) => ratio(a, d),
        _ => None,
    };
    let mean_ratios = ratio_sums
        .into_iter()
        .map(|(k, (sum, n))| (k, sum / n as f64))
        .collect();
    Some(RoutingSummary {
        requests,
        totals,
        mean_ratios,
        llm_step_ratio,
        llm_token_ratio,
        draft_acceptance_rate,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn reads_glimps_nested_token_counts() {
        let a = obj(json!({"steps": 2, "llm_steps": 1, "tokens_by_model": {"slm": 30, "llm": 10}}));
        let b = obj(json!({"steps": 1, "llm_steps": 1, "tokens_by_model": {"slm": 0, "llm": 20}}));
        let s = summarize([&a, &b]).unwrap();
        assert_eq!(s.totals["tokens_by_model.llm"], 30.0);
        assert_eq!(s.llm_token_ratio, Some(0.5));
    }

    #[test]
    fn sums_counts_and_derives_ratios_from_totals() {
        let a = obj(json!({"steps": 4, "llm_steps": 1, "llm_step_ratio": 0.25,
            "slm_tokens": 30, "llm_tokens": 10, "draft_tokens": 8, "accepted_draft_tokens": 6,
            "policy": "glimp"}));
        let b = obj(json!({"steps": 2, "llm_steps": 2, "llm_step_ratio": 1.0,
            "slm_tokens": 0, "llm_tokens": 20, "draft_tokens": 12, "accepted_draft_tokens": 4}));
        let s = summarize([&a, &b]).unwrap();
        assert_eq!(s.requests, 2);
        assert_eq!(s.totals["steps"], 6.0);
        assert_eq!(s.totals["llm_steps"], 3.0);
        assert!(!s.totals.contains_key("policy"), "strings are not counts");
        assert!(
            !s.totals.contains_key("llm_step_ratio"),
            "ratios are not summed"
        );
        assert_eq!(
            s.llm_step_ratio,
            Some(0.5),
            "3 of 6 steps, not the mean of 0.25 and 1"
        );
        assert_eq!(s.mean_ratios["llm_step_ratio"], 0.625);
        assert_eq!(s.llm_token_ratio, Some(0.5));
        assert_eq!(s.draft_acceptance_rate, Some(0.5));
    }

    #[test]
    fn absent_routing_gives_no_summary_and_zero_denominators_no_ratio() {
        assert!(summarize(std::iter::empty()).is_none());
        let z = obj(json!({"steps": 0, "llm_steps": 0}));
        let s = summarize([&z]).unwrap();
        assert_eq!(s.llm_step_ratio, None);
        assert_eq!(s.draft_acceptance_rate, None);
    }
}
