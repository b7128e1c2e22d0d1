use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::*;
use crate::task::{build_task_tokenizer, training_text, TaskMix};

fn tiny(steps: usize) -> TrainConfig {
    TrainConfig {
        preset: "tiny".into(),
        hidden: 16,
        layers: 1,
        heads: 2,
        head_dim: 8,
        intermediate: 32,
        steps,
        batch_size: 4,
        learning_rate: 1e-2,
        warmup_steps: 1,
        weight_decay: 0.0,
        seed: 5,
        slip_probability: 0.5,
        checkpoint_every: 1000,
        time_budget_s: None,
        stop_after: None,
        mix: TaskMix::BUNDLED,
        init: None,
    }
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("glimp-train-{tag}-{}", std::process::id()))
}

fn sample_docs(n: usize) -> Vec<TokenizedDoc> {
    let tokenizer = build_task_tokenizer().unwrap();
    let eos = token_id(&tokenizer, EOS_TOKEN).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    (0..n)
        .map(|_| {
            tokenize_doc(
                &tokenizer,
                &training_text(&mut rng, 0.5, &TaskMix::BUNDLED),
                eos,
            )
            .unwrap()
        })
        .collect()
}

/// The trainer's own forward on the saved weights.
fn trainer_loss(dir: &std::path::Path, shape: &ModelShape, docs: &[TokenizedDoc]) -> f32 {
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let model = TrainableQwen3::new(shape, vb).unwrap();
    let (mut total, mut count) = (0f64, 0f64);
    for doc in docs {
        let batch = make_batch(std::slice::from_ref(doc), 0, &Device::Cpu).unwrap();
        let logits = model.logits(&batch.inputs).unwrap();
        let loss = masked_cross_entropy(&logits, &batch.targets, &batch.mask)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let weight = batch.mask.sum_all().unwrap().to_scalar::<f32>().unwrap() as f64;
        total += loss as f64 * weight;
        count += weight;
    }
    (total / count) as f32
}

#[test]
fn checkpoint_reloads_in_candle_transformers_with_the_same_loss() {
    let dir = temp_dir("reload");
    let config = tiny(3);
    let report = train(&config, &dir, false).unwrap();
    assert!(report.final_loss.is_finite());
    for file in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
    ] {
        assert!(dir.join(file).exists(), "{file} written");
    }
    let ckpt = check::load_checkpoint(&dir).unwrap();
    assert!(ckpt.config.tie_word_embeddings);
    let shape = config.shape(ckpt.config.vocab_size);
    let docs = sample_docs(3);
    let ours = trainer_loss(&dir, &shape, &docs);
    let reference = ckpt.reference_loss(&docs).unwrap();
    assert!(
        (ours - reference).abs() < 1e-4 * ours.abs().max(1.0),
        "trainer {ours} vs candle-transformers {reference}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn same_seed_gives_identical_weights() {
    let (a, b) = (temp_dir("seed-a"), temp_dir("seed-b"));
    train(&tiny(2), &a, false).unwrap();
    train(&tiny(2), &b, false).unwrap();
    let read = |d: &std::path::Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(read(&a), read(&b));
    let c = temp_dir("seed-c");
    train(&TrainConfig { seed: 6, ..tiny(2) }, &c, false).unwrap();
    assert_ne!(read(&a), read(&c));
    for d in [a, b, c] {
        std::fs::remove_dir_all(&d).ok();
    }
}

#[test]
fn stopping_early_keeps_the_full_schedule() {
    let dirs = [
        temp_dir("early-a"),
        temp_dir("early-b"),
        temp_dir("full"),
        temp_dir("short"),
    ];
    let early = TrainConfig {
        stop_after: Some(3),
        ..tiny(5)
    };
    train(&early, &dirs[0], false).unwrap();
    let report = train(&early, &dirs[1], false).unwrap();
    train(&tiny(5), &dirs[2], false).unwrap();
    train(&tiny(3), &dirs[3], false).unwrap();
    assert_eq!(report.steps, 3);
    let read = |d: &std::path::Path| std::fs::read(d.join("model.safetensors")).unwrap();
    assert_eq!(read(&dirs[0]), read(&dirs[1]), "reproducible");
    assert_ne!(read(&dirs[0]), read(&dirs[2]), "it stopped before the end");
    assert_ne!(
        read(&dirs[0]),
        read(&dirs[3]),
        "its learning rate followed the 5-step schedule"
    );
    let state = std::fs::read_to_string(dirs[0].join("training_state.json")).unwrap();
    assert!(
        state.contains("\"stop_after\": 3") && state.contains("\"step\": 3"),
        "{state}"
    );
    assert!(train(
        &TrainConfig {
            stop_after: Some(0),
            ..tiny(5)
        },
        &dirs[0],
        false
    )
    .is_err());
    for d in dirs {
        std::fs::remove_dir_all(&d).ok();
    }
}

#[test]
fn training_lowers_the_loss() {
    let dir = temp_dir("learn");
    let docs = sample_docs(4);
    let config = tiny(40);
    let vocab = build_task_tokenizer().unwrap().get_vocab_size(true);
    train(
        &TrainConfig {
            steps: 1,
            ..config.clone()
        },
        &dir,
        false,
    )
    .unwrap();
    let before = trainer_loss(&dir, &config.shape(vocab), &docs);
    train(&config, &dir, false).unwrap();
    let after = trainer_loss(&dir, &config.shape(vocab), &docs);
    assert!(after < before - 0.5, "loss {before} -> {after}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn continued_training_starts_from_the_checkpoint() {
    let (base, next, other) = (temp_dir("base"), temp_dir("next"), temp_dir("other"));
    let docs = sample_docs(4);
    let vocab = build_task_tokenizer().unwrap().get_vocab_size(true);
    let shape = tiny(1).shape(vocab);
    train(&tiny(30), &base, false).unwrap();
    // A learning rate of ~0 leaves the loaded weights as they were.
    let frozen = TrainConfig {
        init: Some(base.clone()),
        learning_rate: 1e-12,
        ..tiny(1)
    };
    train(&frozen, &next, false).unwrap();
    let (base_loss, next_loss) = (
        trainer_loss(&base, &shape, &docs),
        trainer_loss(&next, &shape, &docs),
    );
    assert!(
        (base_loss - next_loss).abs() < 1e-3,
        "{base_loss} vs {next_loss}"
    );
    train(&tiny(1), &other, false).unwrap();
    assert!(trainer_loss(&other, &shape, &docs) > base_loss + 0.5);
    let state = std::fs::read_to_string(next.join("training_state.json")).unwrap();
    assert!(state.contains("\"init\""), "{state}");
    // Another shape does not load.
    let wider = TrainConfig {
        hidden: 24,
        ..frozen
    };
    let err = train(&wider, &other, false).unwrap_err().to_string();
    assert!(err.contains("shape") || err.contains("width"), "{err}");
    // A mix with `max` grows the vocabulary; the old rows are carried over.
    let with_max = TrainConfig {
        init: Some(base.clone()),
        mix: TaskMix {
            max_share: 0.3,
            tied_share: 0.5,
            max_problems: 1.0,
        },
        ..tiny(1)
    };
    train(&with_max, &other, false).unwrap();
    let config = std::fs::read_to_string(other.join("config.json")).unwrap();
    assert!(config.contains("\"vocab_size\": 45"), "{config}");
    for d in [base, next, other] {
        std::fs::remove_dir_all(&d).ok();
    }
}

#[test]
fn a_mix_share_outside_zero_to_one_is_refused() {
    let dir = temp_dir("bad-mix");
    for mix in [
        TaskMix {
            max_share: 1.5,
            tied_share: 0.5,
            max_problems: 1.0,
        },
        TaskMix {
            max_share: 0.1,
            tied_share: -0.1,
            max_problems: 1.0,
        },
    ] {
        let err = train(&TrainConfig { mix, ..tiny(1) }, &dir, false).unwrap_err();
        assert!(err.to_string().contains("share"), "{err}");
    }
    assert!(!dir.exists(), "nothing is written");
}

#[test]
fn embedding_rows_follow_their_tokens_into_a_grown_vocabulary() {
    use tokenizers::models::wordlevel::WordLevel;
    let tokenizer = |words: &[&str]| {
        let vocab = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.to_string(), i as u32))
            .collect();
        let model = WordLevel::builder()
            .vocab(vocab)
            .unk_token(words[0].to_string())
            .build()
            .unwrap();
        tokenizers::Tokenizer::new(model)
    };
    let old = candle_core::Tensor::new(&[[1f32, 1.], [2., 2.]], &Device::Cpu).unwrap();
    let fresh = candle_core::Tensor::new(&[[0f32, 0.], [9., 9.], [0., 0.]], &Device::Cpu).unwrap();
    let rows = super::checkpoint::embedding_by_token(
        &old,
        &fresh,
        &tokenizer(&["a", "b"]),
        &tokenizer(&["b", "c", "a"]),
    )
    .unwrap()
    .to_vec2::<f32>()
    .unwrap();
    assert_eq!(rows, vec![vec![2., 2.], vec![9., 9.], vec![1., 1.]]);
}

#[test]
fn presets_exist_and_the_llm_costs_8_to_16_times_the_slm() {
    let (base, slm) = (
        TrainConfig::preset("slm-base").unwrap(),
        TrainConfig::preset("slm").unwrap(),
    );
    assert_eq!(base.shape(45), slm.shape(45), "one SLM, two stages");
    assert_eq!(base.mix, TaskMix::ADD_SUBTRACT);
    assert_eq!((slm.preset.as_str(), slm.mix), ("slm", TaskMix::BUNDLED));
    let slm = slm.shape(45).parameters() as f64;
    let llm = TrainConfig::preset("llm").unwrap().shape(45).parameters() as f64;
    assert!((8.0..=16.0).contains(&(llm / slm)), "ratio {}", llm / slm);
    assert!(TrainConfig::preset("xl").is_err());
}

#[test]
fn the_slm_preset_needs_the_slm_base_checkpoint() {
    let dir = temp_dir("slm-no-init");
    let err = train(&TrainConfig::preset("slm").unwrap(), &dir, false).unwrap_err();
    assert!(err.to_string().contains("--preset slm-base"), "{err}");
    assert!(!dir.exists(), "nothing is written");
}

#[test]
fn learning_rate_warms_up_then_decays_to_a_tenth() {
    let c = TrainConfig::preset("slm-base").unwrap();
    let lr = |step: usize| c.learning_rate_at(step, c.progress(step, 0.0));
    assert!(lr(0) < lr(c.warmup_steps - 1));
    assert!((lr(c.warmup_steps - 1) - c.learning_rate).abs() < 0.05 * c.learning_rate);
    assert!(lr(c.steps / 2) < 0.6 * c.learning_rate);
    assert!((lr(c.steps) - 0.1 * c.learning_rate).abs() < 1e-9);
}

#[test]
fn a_time_budget_drives_the_schedule_and_stops_the_run() {
    let c = TrainConfig {
        time_budget_s: Some(100.0),
        ..TrainConfig::preset("llm").unwrap()
    };
    assert_eq!(
        c.progress(10, 50.0),
        0.5,
        "time is further along than steps"
    );
    assert!(c.progress(0, 100.0) >= 1.0);
    let dir = temp_dir("budget");
    let report = train(
        &TrainConfig {
            time_budget_s: Some(0.0),
            ..tiny(50)
        },
        &dir,
        false,
    )
    .unwrap();
    assert_eq!(report.steps, 0, "a spent budget trains no step");
    assert!(
        dir.join("model.safetensors").exists(),
        "but still writes the folder"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn batches_mask_padding_and_prompt() {
    let docs = sample_docs(3);
    let batch = make_batch(&docs, 0, &Device::Cpu).unwrap();
    let mask: Vec<f32> = batch.mask.to_vec1().unwrap();
    let expected: f32 = docs
        .iter()
        .map(|d| d.trained[1..].iter().filter(|&&t| t).count() as f32)
        .sum();
    assert_eq!(mask.iter().sum::<f32>(), expected);
    assert_eq!(mask[0], 0.0, "the prompt is not predicted");
}

/// The checkpoints bundled under models/ (what `glimp serve` loads by
/// default): real HF folders, the tokenizer the code builds, and a trained
/// LLM that solves problems it never saw.
mod bundled {
    use super::*;
    use crate::task::generate_problems;

    fn bundled(name: &str) -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../models")
            .join(name)
    }

    #[test]
    fn bundled_pair_uses_the_task_tokenizer_and_fits_the_size_budget() {
        let built = build_task_tokenizer().unwrap();
        let mut total_bytes = 0;
        for name in ["slm", "llm"] {
            let ckpt = check::load_checkpoint(&bundled(name)).unwrap();
            assert_eq!(
                ckpt.tokenizer.get_vocab(true),
                built.get_vocab(true),
                "{name} ships the tokenizer the code builds"
            );
            assert_eq!(ckpt.config.vocab_size, built.get_vocab_size(true));
            for problem in generate_problems(8, 20) {
                let ids = |t: &tokenizers::Tokenizer| {
                    t.encode(problem.prompt.as_str(), false)
                        .unwrap()
                        .get_ids()
                        .to_vec()
                };
                assert_eq!(
                    ids(&ckpt.tokenizer),
                    ids(&built),
                    "{name} tokenizes prompts alike"
                );
            }
            let template: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(bundled(name).join("tokenizer_config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(template["chat_template"], crate::task::CHAT_TEMPLATE);
            let generation: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(bundled(name).join("generation_config.json")).unwrap(),
            )
            .unwrap();
            assert_eq!(generation["eos_token_id"], 0);
            for entry in std::fs::read_dir(bundled(name)).unwrap() {
                total_bytes += entry.unwrap().metadata().unwrap().len();
            }
        }
        assert!(total_bytes < 30 << 20, "pair is {total_bytes} bytes");
    }

    #[test]
    fn bundled_llm_solves_unseen_problems() {
        let ckpt = check::load_checkpoint(&bundled("llm")).unwrap();
        let problems = generate_problems(31_337, 5);
        let accuracy = ckpt.greedy_accuracy(&problems).unwrap();
        assert!(accuracy >= 0.8, "LLM accuracy {accuracy}");
    }
}
