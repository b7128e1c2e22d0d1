//! Checkpoint loading: sharded files, and clear errors naming the file or tensor at fault.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use glimprouter_core::{BatchRow, ModelBatch, RowKind};
use glimprouter_models::{Arch, LoadOptions, ModelConfig, ModelError, ModelRunner};

fn opts() -> LoadOptions {
    LoadOptions {
        dtype: DType::F32,
        device: Device::Cpu,
        block_size: 4,
        num_blocks: 8,
    }
}

fn load(dir: &std::path::Path) -> Result<ModelRunner, ModelError> {
    ModelRunner::load(dir, &opts())
}

fn one_row(tokens: Vec<u32>, block_table: Vec<u32>) -> ModelBatch {
    ModelBatch {
        rows: vec![BatchRow {
            seq_id: 1,
            kind: RowKind::Prefill,
            token_ids: tokens,
            start_pos: 0,
            block_table,
            num_logits: 1,
        }],
    }
}

fn tensors(dir: &std::path::Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap()
}

fn edit_config(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

#[test]
fn missing_files_are_named() {
    let dir = common::make(Arch::Llama);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    match load(dir.path()) {
        Err(ModelError::MissingFile { path }) => assert!(path.ends_with("model.safetensors")),
        other => panic!("expected MissingFile, got {:?}", other.err()),
    }
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    match load(dir.path()) {
        Err(ModelError::MissingFile { path }) => assert!(path.ends_with("config.json")),
        other => panic!("expected MissingFile, got {:?}", other.err()),
    }
}

#[test]
fn wrong_shape_names_the_tensor() {
    let dir = common::make(Arch::Qwen2);
    let mut t = tensors(dir.path());
    let name = "model.layers.1.self_attn.k_proj.bias";
    t.insert(
        name.into(),
        Tensor::zeros(7, DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    let err = load(dir.path()).err().expect("must fail");
    assert!(err.to_string().contains(name), "{err}");
    match err {
        ModelError::ShapeMismatch {
            actual, expected, ..
        } => {
            assert_eq!(actual, vec![7]);
            assert_eq!(expected, vec![32]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}

#[test]
fn missing_tensor_is_named() {
    let dir = common::make(Arch::Qwen3);
    let mut t = tensors(dir.path());
    let name = "model.layers.0.self_attn.q_norm.weight";
    t.remove(name);
    candle_core::safetensors::save(&t, dir.path().join("model.safetensors")).unwrap();
    match load(dir.path()) {
        Err(ModelError::MissingTensor { name: n }) => assert_eq!(n, name),
        other => panic!("expected MissingTensor, got {:?}", other.err()),
    }
}

#[test]
fn unknown_architecture_is_rejected() {
    let dir = common::make(Arch::Mistral);
    edit_config(dir.path(), |v| {
        v["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
        v["model_type"] = serde_json::json!("gpt2");
    });
    match load(dir.path()) {
        Err(ModelError::UnsupportedArchitecture(name)) => assert_eq!(name, "GPT2LMHeadModel"),
        other => panic!("expected UnsupportedArchitecture, got {:?}", other.err()),
    }
}

#[test]
fn unsupported_rope_scaling_is_rejected_and_llama3_accepted() {
    let dir = common::make(Arch::Llama);
    edit_config(dir.path(), |v| {
        v["rope_scaling"] = serde_json::json!({"rope_type": "yarn", "factor": 4.0});
    });
    assert!(matches!(
        load(dir.path()).err(),
        Some(ModelError::UnsupportedConfig(m)) if m.contains("yarn")
    ));
    edit_config(dir.path(), |v| {
        v["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
            "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64});
    });
    assert!(load(dir.path()).is_ok());
}

#[test]
fn sharded_checkpoint_loads_identically() {
    let dir = common::make(Arch::Qwen3);
    let batch = one_row((3..20).collect(), vec![5, 1, 0, 7, 2]);
    let single = load(dir.path()).unwrap().forward(&batch).unwrap();

    let t = tensors(dir.path());
    let mut names: Vec<&String> = t.keys().collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (file, part) in [
        ("model-00001-of-00002.safetensors", a),
        ("model-00002-of-00002.safetensors", b),
    ] {
        let shard: HashMap<String, Tensor> =
            part.iter().map(|n| ((*n).clone(), t[*n].clone())).collect();
        candle_core::safetensors::save(&shard, dir.path().join(file)).unwrap();
        for n in part {
            weight_map.insert((*n).clone(), serde_json::json!(file));
        }
    }
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    let sharded = load(dir.path()).unwrap().forward(&batch).unwrap();
    assert_eq!(single, sharded);
}

#[test]
fn invalid_batches_are_errors_not_panics() {
    let dir = common::make(Arch::Llama);
    let mut runner = load(dir.path()).unwrap();
    let vocab = runner.config().vocab_size as u32;
    let bad = [
        one_row(vec![1, vocab], vec![0]),      // token out of vocabulary
        one_row(vec![1, 2, 3, 4, 5], vec![0]), // block table too short
        one_row(vec![1, 2], vec![8]),          // block outside the pool
        {
            let mut b = one_row(vec![1, 2], vec![0]);
            b.rows[0].num_logits = 3; // more logits than tokens
            b
        },
        {
            let mut b = one_row(vec![1], vec![0; 200]);
            b.rows[0].start_pos = 600; // past max_position_embeddings
            b
        },
    ];
    for batch in &bad {
        assert!(
            matches!(runner.forward(batch), Err(ModelError::InvalidBatch(_))),
            "{batch:?}"
        );
    }
    // The runner still works afterwards; an empty batch gives no logits.
    assert_eq!(
        runner.forward(&ModelBatch::default()).unwrap().num_rows(),
        0
    );
    assert_eq!(
        runner
            .forward(&one_row(vec![1, 2], vec![0]))
            .unwrap()
            .num_rows(),
        1
    );
}

#[test]
fn kv_bytes_per_block_matches_geometry() {
    let dir = common::make(Arch::Qwen3);
    let cfg = ModelConfig::from_dir(dir.path()).unwrap();
    // 2 (K,V) * 2 layers * 16 positions * 2 kv heads * 32 head_dim * 2 bytes
    assert_eq!(
        cfg.kv_bytes_per_block(16, DType::BF16),
        2 * 2 * 16 * 2 * 32 * 2
    );
    assert_eq!(
        cfg.kv_bytes_per_block(16, DType::F32),
        2 * 2 * 16 * 2 * 32 * 4
    );
}

#[test]
fn generator_is_deterministic_in_the_seed() {
    let spec = common::spec(Arch::Mistral);
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    glimprouter_models::make_model(&spec, a.path(), None).unwrap();
    glimprouter_models::make_model(&spec, b.path(), None).unwrap();
    let mut other = spec.clone();
    other.seed += 1;
    glimprouter_models::make_model(&other, c.path(), None).unwrap();
    let read = |d: &tempfile::TempDir| std::fs::read(d.path().join("model.safetensors")).unwrap();
    assert_eq!(read(&a), read(&b));
    assert_ne!(read(&a), read(&c));
}

/// The engine moves runners and tokenizers onto worker threads.
#[test]
fn runner_and_tokenizer_are_send() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<ModelRunner>();
    assert_send::<glimprouter_models::ModelTokenizer>();
    fn assert_sync<T: Sync>() {}
    assert_sync::<glimprouter_models::ModelTokenizer>();
}
