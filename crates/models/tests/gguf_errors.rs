//! GGUF files that cannot be served get a start-up error naming what is
//! missing or unsupported.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use glimprouter_models::gguf_convert::{write_gguf, GgufTypes};
use glimprouter_models::{make_model, Arch, MakeModelSpec, ModelConfig, ModelTokenizer};

fn write(path: &std::path::Path, metadata: &[(&str, Value)]) {
    let t = QTensor::quantize(
        &Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md, &[("token_embd.weight", &t)]).unwrap();
}

fn err_of<T>(r: Result<T, glimprouter_models::ModelError>) -> String {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_unsupported_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("phi.gguf");
    write(
        &path,
        &[("general.architecture", Value::String("phi3".into()))],
    );
    let msg = err_of(ModelConfig::load(&path));
    assert!(msg.contains("phi3") && msg.contains("qwen3"), "{msg}");
}

#[test]
fn a_missing_metadata_key_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    write(
        &path,
        &[
            ("general.architecture", Value::String("llama".into())),
            ("llama.attention.head_count", Value::U32(4)),
            ("llama.embedding_length", Value::U32(32)),
        ],
    );
    let msg = err_of(ModelConfig::load(&path));
    assert!(msg.contains("llama.feed_forward_length"), "{msg}");
}

#[test]
fn a_file_without_tokenizer_metadata_or_tokenizer_json_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("hf");
    make_model(&MakeModelSpec::tiny(Arch::Qwen2, 1), &folder, None).unwrap();
    let alone = dir.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    let path = alone.join("m.gguf");
    write_gguf(&folder, &path, GgufTypes::all(GgmlDType::Q8_0)).unwrap();
    let msg = err_of(ModelTokenizer::load(&path));
    assert!(msg.contains("tokenizer.ggml.model"), "{msg}");
    assert!(msg.contains("m.gguf"), "{msg}");
    // With the folder's tokenizer.json beside it, the same file loads.
    std::fs::copy(folder.join("tokenizer.json"), alone.join("tokenizer.json")).unwrap();
    let tok = ModelTokenizer::load(&path).unwrap();
    assert_eq!(tok.vocab_size(), 96);
}

#[test]
fn a_missing_file_is_named() {
    let msg = err_of(ModelConfig::load(std::path::Path::new(
        "/nonexistent/x.gguf",
    )));
    assert!(msg.contains("/nonexistent/x.gguf"), "{msg}");
}
