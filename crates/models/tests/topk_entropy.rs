//! How far H_init estimated from top-k log-probabilities (what a remote
//! engine returns for `logprobs: k`) is from the exact full-vocabulary
//! entropy, measured on the bundled SLM at every step start of reference
//! solutions. Run with `--nocapture` for the table quoted in README.md.

use std::path::PathBuf;

use candle_core::{DType, Device};
use glimprouter_core::sampling::{entropy, entropy_from_top_logprobs, log_softmax};
use glimprouter_core::{BatchRow, ModelBatch, RowKind};
use glimprouter_models::task::generate_problems;
use glimprouter_models::{LoadOptions, ModelRunner, ModelTokenizer};

const BLOCK_SIZE: usize = 16;

fn top_k(logits: &[f32], k: usize) -> Vec<f32> {
    let mut lp = log_softmax(logits);
    lp.sort_by(|a, b| b.total_cmp(a));
    lp.truncate(k);
    lp
}

#[test]
fn top_k_h_init_on_the_bundled_slm() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/slm");
    let tokenizer = ModelTokenizer::from_dir(&dir).unwrap();
    let opts = LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        block_size: BLOCK_SIZE,
        num_blocks: 32,
    };
    let mut runner = ModelRunner::load(&dir, &opts).unwrap();
    let vocab = runner.config().vocab_size;

    // (exact H_init, the top-k logprobs) at every step start.
    let mut glimpses: Vec<(f32, Vec<f32>)> = Vec::new();
    for problem in generate_problems(11, 120) {
        let text = format!("{}{}", problem.prompt, problem.solution_text());
        let ids = tokenizer.encode(&text, false).unwrap();
        let batch = ModelBatch {
            rows: vec![BatchRow {
                seq_id: 0,
                kind: RowKind::Prefill,
                token_ids: ids.clone(),
                start_pos: 0,
                block_table: (0..ids.len().div_ceil(BLOCK_SIZE) as u32).collect(),
                num_logits: ids.len(),
            }],
        };
        let logits = runner.forward(&batch).unwrap();
        for i in 0..ids.len() - 1 {
            // Row i predicts token i + 1, which opens a step when the text
            // so far ends with the delimiter.
            if tokenizer
                .decode(&ids[..=i], false)
                .unwrap()
                .ends_with("\n\n")
            {
                let row = logits.row(i);
                glimpses.push((entropy(row), top_k(row, 20)));
            }
        }
    }
    assert!(glimpses.len() > 300, "only {} glimpses", glimpses.len());

    println!(
        "top-k H_init estimate vs exact, bundled SLM (vocabulary {vocab}), {} step starts",
        glimpses.len()
    );
    println!("| k | mean error (nats) | max error | route agrees at tau 0.1 / 0.3 / 0.5 / 1.0 |");
    println!("|---|---:|---:|---|");
    let mut agreement_k20_tau03 = 0.0;
    for k in [3, 5, 10, 20] {
        let errors: Vec<f32> = glimpses
            .iter()
            .map(|(exact, top)| exact - entropy_from_top_logprobs(&top[..k]))
            .collect();
        assert!(
            errors.iter().all(|&e| e >= -1e-4),
            "the estimate must never exceed the exact entropy"
        );
        let mean = errors.iter().sum::<f32>() / errors.len() as f32;
        let max = errors.iter().cloned().fold(0f32, f32::max);
        let agree: Vec<f64> = [0.1f32, 0.3, 0.5, 1.0]
            .iter()
            .map(|&tau| {
                let same = glimpses
                    .iter()
                    .filter(|(exact, top)| {
                        (*exact <= tau) == (entropy_from_top_logprobs(&top[..k]) <= tau)
                    })
                    .count();
                same as f64 / glimpses.len() as f64
            })
            .collect();
        if k == 20 {
            agreement_k20_tau03 = agree[1];
        }
        println!(
            "| {k} | {mean:.4} | {max:.4} | {} |",
            agree
                .iter()
                .map(|a| format!("{:.1}%", 100.0 * a))
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    assert!(
        agreement_k20_tau03 >= 0.99,
        "top-20 routes differently from the exact entropy too often: {agreement_k20_tau03}"
    );
}
