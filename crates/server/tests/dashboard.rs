//! The shipped Grafana dashboard only queries metrics
//! the engine and server actually define, so a renamed metric cannot leave
//! a panel silently empty.

use std::collections::BTreeSet;
use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every `glimp:name` in `text` (names are `[a-z0-9_]`).
fn metric_names(text: &str) -> BTreeSet<String> {
    text.match_indices("glimp:")
        .map(|(i, _)| {
            text[i + "glimp:".len()..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect::<String>()
        })
        .filter(|name| !name.is_empty())
        .collect()
}

#[test]
fn every_dashboard_query_names_a_defined_metric() {
    let defined: BTreeSet<String> = [
        "crates/engine/src/metrics.rs",
        "crates/server/src/metrics.rs",
    ]
    .iter()
    .flat_map(|f| metric_names(&std::fs::read_to_string(repo().join(f)).unwrap()))
    .collect();
    let dashboard =
        std::fs::read_to_string(repo().join("configs/grafana/glimprouter.json")).unwrap();
    let queried = metric_names(&dashboard);
    assert!(queried.len() >= 10, "too few metrics found: {queried:?}");
    for name in &queried {
        // Histograms are queried through their series.
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            defined.contains(name) || defined.contains(base),
            "the dashboard queries glimp:{name}, which no metrics.rs defines"
        );
    }
}
