//! The generated checkpoint's tokenizer files through `ModelTokenizer`.

mod common;

use glimprouter_models::{Arch, ChatMessage, ModelError, ModelTokenizer};

#[test]
fn round_trip_and_special_tokens() {
    let dir = common::make(Arch::Qwen3);
    let tok = ModelTokenizer::from_dir(dir.path()).unwrap();
    assert_eq!(tok.vocab_size(), common::spec(Arch::Qwen3).vocab);
    let ids = tok.encode("a b w3 ?", false).unwrap();
    assert_eq!(ids.len(), 4);
    assert_eq!(tok.decode(&ids, false).unwrap(), "a b w3 ?");
    assert_eq!(tok.token_text(ids[2]).as_deref(), Some("w3"));
    // generation_config lists <|im_end|> and </s>; tokenizer_config's eos is <|im_end|>.
    let im_end = tok.token_id("<|im_end|>").unwrap();
    let eos = tok.token_id("</s>").unwrap();
    assert_eq!(tok.eos_token_ids(), &[im_end, eos]);
    assert_eq!(tok.bos_token_id(), tok.token_id("<s>"));
    // Special tokens are matched whole and can be skipped when decoding.
    let with_special = tok.encode("<|im_start|>a<|im_end|>", false).unwrap();
    assert_eq!(with_special.len(), 3);
    assert_eq!(tok.decode(&with_special, true).unwrap(), "a");
}

#[test]
fn chat_template_renders() {
    let dir = common::make(Arch::Qwen2);
    let tok = ModelTokenizer::from_dir(dir.path()).unwrap();
    assert!(tok.has_chat_template());
    let messages = vec![
        ChatMessage {
            role: "system".into(),
            content: "be brief".into(),
        },
        ChatMessage {
            role: "user".into(),
            content: "a b".into(),
        },
    ];
    let text = tok.apply_chat_template(&messages, true).unwrap();
    assert_eq!(
        text,
        "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\na b<|im_end|>\n<|im_start|>assistant\n"
    );
    let no_prompt = tok.apply_chat_template(&messages, false).unwrap();
    assert!(!no_prompt.ends_with("assistant\n"));
}

#[test]
fn chat_template_raise_exception_and_variables() {
    let dir = common::make(Arch::Llama);
    let path = dir.path().join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["chat_template"] = serde_json::json!(
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('no tools') }}{% endif %}\n  {{ m.content }}{{ eos_token }}{% endfor %}"
    );
    std::fs::write(&path, cfg.to_string()).unwrap();
    let tok = ModelTokenizer::from_dir(dir.path()).unwrap();
    let user = ChatMessage {
        role: "user".into(),
        content: "x".into(),
    };
    // trim_blocks + lstrip_blocks as in transformers: the newline after a block tag goes.
    assert_eq!(
        tok.apply_chat_template(std::slice::from_ref(&user), false)
            .unwrap(),
        "<s>  x<|im_end|>"
    );
    let tool = ChatMessage {
        role: "tool".into(),
        content: "x".into(),
    };
    match tok.apply_chat_template(&[user, tool], false) {
        Err(ModelError::ChatTemplate(m)) => assert!(m.contains("no tools"), "{m}"),
        other => panic!("expected ChatTemplate error, got {other:?}"),
    }
}

#[test]
fn missing_tokenizer_is_named() {
    let dir = common::make(Arch::Mistral);
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    match ModelTokenizer::from_dir(dir.path()) {
        Err(ModelError::MissingFile { path }) => assert!(path.ends_with("tokenizer.json")),
        other => panic!("expected MissingFile, got {:?}", other.err()),
    }
}

/// Templates of real checkpoints call Python string methods (Qwen3's does).
#[test]
fn chat_template_python_methods() {
    let dir = common::make(Arch::Qwen3);
    let path = dir.path().join("tokenizer_config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    cfg["chat_template"] = serde_json::json!(
        "{% for m in messages %}{% if m.content.startswith('<think>') %}{{ m.content.split('</think>')[-1].strip() }}{% else %}{{ m.content.upper() }}{% endif %}|{% endfor %}"
    );
    std::fs::write(&path, cfg.to_string()).unwrap();
    let tok = ModelTokenizer::from_dir(dir.path()).unwrap();
    let messages = [
        ChatMessage {
            role: "assistant".into(),
            content: "<think>hmm</think>  answer ".into(),
        },
        ChatMessage {
            role: "user".into(),
            content: "ok".into(),
        },
    ];
    assert_eq!(
        tok.apply_chat_template(&messages, false).unwrap(),
        "answer|OK|"
    );
}
