//! The tokenizer built from GGUF metadata: small synthetic vocabularies for each behaviour,
//! then the SmolLM2 GGUF file against ids that llama.cpp produces for it.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{self, Value};
use glimprouter_models::gguf_tokenizer::{tokenizer_from_gguf, GgufTokenizer};

fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|s| string(s)).collect())
}

fn i32s(items: &[i32]) -> Value {
    Value::Array(items.iter().map(|&v| Value::I32(v)).collect())
}

fn f32s(items: &[f32]) -> Value {
    Value::Array(items.iter().map(|&v| Value::F32(v)).collect())
}

fn metadata(entries: Vec<(&str, Value)>) -> HashMap<String, Value> {
    entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
}

fn encode(tok: &GgufTokenizer, text: &str, add_special: bool) -> Vec<u32> {
    tok.tokenizer
        .encode(text, add_special)
        .unwrap()
        .get_ids()
        .to_vec()
}

fn decode(tok: &GgufTokenizer, ids: &[u32]) -> String {
    tok.tokenizer.decode(ids, false).unwrap()
}

fn error_of(meta: &HashMap<String, Value>) -> String {
    match tokenizer_from_gguf(meta) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

// ---------------------------------------------------------------- gpt2 (byte-level BPE)

const GPT2_TOKENS: &[&str] = &[
    "<|endoftext|>", // 0, control
    "<|im_start|>",  // 1, control
    "<think>",       // 2, user-defined
    "h",             // 3
    "e",             // 4
    "l",             // 5
    "o",             // 6
    "Ġ",             // 7
    "w",             // 8
    "r",             // 9
    "d",             // 10
    "he",            // 11
    "ll",            // 12
    "hell",          // 13
    "hello",         // 14
    "Ġw",            // 15
    "or",            // 16
    "Ġwor",          // 17
    "Ġworl",         // 18
    "Ġworld",        // 19
    "1",             // 20
    "2",             // 21
    "3",             // 22
    "12",            // 23
    "123",           // 24
    "Ċ",             // 25
    "hd",            // 26, no merge makes it
];

const GPT2_MERGES: &[&str] = &[
    "h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "Ġwor l", "Ġworl d", "1 2", "12 3",
];

fn gpt2_metadata(pre: &str) -> HashMap<String, Value> {
    let mut types = vec![1; GPT2_TOKENS.len()];
    types[0] = 3;
    types[1] = 3;
    types[2] = 4;
    metadata(vec![
        ("tokenizer.ggml.model", string("gpt2")),
        ("tokenizer.ggml.pre", string(pre)),
        ("tokenizer.ggml.tokens", strings(GPT2_TOKENS)),
        ("tokenizer.ggml.token_type", i32s(&types)),
        ("tokenizer.ggml.merges", strings(GPT2_MERGES)),
        ("tokenizer.ggml.bos_token_id", Value::U32(0)),
        ("tokenizer.ggml.eos_token_id", Value::U32(0)),
        ("tokenizer.chat_template", string("{{ messages }}")),
    ])
}

#[test]
fn gpt2_round_trip() {
    let tok = tokenizer_from_gguf(&gpt2_metadata("gpt-2")).unwrap();
    let ids = encode(&tok, "hello world", true);
    assert_eq!(ids, [14, 19]);
    assert_eq!(decode(&tok, &ids), "hello world");
    // No "Ġ" before "world" here, so only the "o r" merge applies.
    assert_eq!(encode(&tok, "hello\nworld", false), [14, 25, 8, 16, 5, 10]);
    assert_eq!(decode(&tok, &[14, 25, 8, 16, 5, 10]), "hello\nworld");
    assert_eq!(tok.chat_template.as_deref(), Some("{{ messages }}"));
}

#[test]
fn gpt2_special_and_user_defined_tokens_are_single_ids() {
    let tok = tokenizer_from_gguf(&gpt2_metadata("gpt-2")).unwrap();
    assert_eq!(encode(&tok, "<|im_start|>hello<think>", false), [1, 14, 2]);
    assert_eq!(encode(&tok, "hello<|endoftext|>", false), [14, 0]);
    assert_eq!(decode(&tok, &[1, 14, 2]), "<|im_start|>hello<think>");
}

#[test]
fn gpt2_pre_tokenizer_decides_digit_grouping() {
    // GPT-2 keeps a run of digits together; qwen2 and smollm split every digit; Llama 3
    // groups up to three.
    for (pre, expected) in [
        ("gpt-2", vec![24]),
        ("gpt2", vec![24]),
        ("default", vec![24]),
        ("llama-bpe", vec![24]),
        ("qwen2", vec![20, 21, 22]),
        ("smollm", vec![20, 21, 22]),
    ] {
        let tok = tokenizer_from_gguf(&gpt2_metadata(pre)).unwrap();
        assert_eq!(encode(&tok, "123", false), expected, "pre = {pre}");
        assert_eq!(encode(&tok, "hello world", false), [14, 19], "pre = {pre}");
    }
}

#[test]
fn llama3_pre_tokenizer_ignores_merges() {
    // llama.cpp keeps a Llama 3 pre-token whole when it is a token, merges or not.
    let tok = tokenizer_from_gguf(&gpt2_metadata("llama-bpe")).unwrap();
    assert_eq!(encode(&tok, "hd", false), [26]);
    let tok = tokenizer_from_gguf(&gpt2_metadata("gpt-2")).unwrap();
    assert_eq!(encode(&tok, "hd", false), [3, 10]);
}

#[test]
fn gpt2_add_bos_follows_metadata() {
    let mut meta = gpt2_metadata("gpt-2");
    let tok = tokenizer_from_gguf(&meta).unwrap();
    assert!(!tok.add_bos, "llama.cpp's default for gpt-2 is no BOS");
    assert_eq!(encode(&tok, "hello", true), [14]);

    meta.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
    let tok = tokenizer_from_gguf(&meta).unwrap();
    assert!(tok.add_bos);
    assert_eq!(encode(&tok, "hello world", true), [0, 14, 19]);
    assert_eq!(encode(&tok, "hello world", false), [14, 19]);

    // Llama 3's pre-tokenizer defaults to a BOS, as in llama.cpp.
    let tok = tokenizer_from_gguf(&gpt2_metadata("llama-bpe")).unwrap();
    assert!(tok.add_bos);
    assert_eq!(encode(&tok, "hello", true), [0, 14]);
}

#[test]
fn add_eos_appends_eos() {
    let mut meta = gpt2_metadata("gpt-2");
    meta.insert("tokenizer.ggml.eos_token_id".into(), Value::U32(1));
    meta.insert("tokenizer.ggml.add_eos_token".into(), Value::Bool(true));
    meta.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
    let tok = tokenizer_from_gguf(&meta).unwrap();
    assert_eq!(encode(&tok, "hello", true), [0, 14, 1]);
    assert_eq!(encode(&tok, "hello", false), [14]);
    let pair = tok
        .tokenizer
        .encode(("hello", "hello world"), true)
        .unwrap();
    assert_eq!(pair.get_ids(), [0, 14, 1, 0, 14, 19, 1]);
}

#[test]
fn special_ids_accept_any_integer_type_and_collect_eos_ids() {
    let mut meta = gpt2_metadata("gpt-2");
    meta.insert("tokenizer.ggml.bos_token_id".into(), Value::U64(1));
    meta.insert("tokenizer.ggml.eos_token_id".into(), Value::I32(0));
    meta.insert("tokenizer.ggml.eot_token_id".into(), Value::U32(1));
    meta.insert("tokenizer.ggml.eom_token_id".into(), Value::U16(0));
    let tok = tokenizer_from_gguf(&meta).unwrap();
    assert_eq!(tok.bos_id, Some(1));
    assert_eq!(tok.bos_token.as_deref(), Some("<|im_start|>"));
    assert_eq!(tok.eos_ids, [0, 1]);
    assert_eq!(tok.eos_token.as_deref(), Some("<|endoftext|>"));
}

#[test]
fn unsupported_model_and_pre_tokenizer_are_named() {
    let mut meta = gpt2_metadata("gpt-2");
    meta.insert("tokenizer.ggml.model".into(), string("bert"));
    let message = error_of(&meta);
    assert!(
        message.contains(
            r#"tokenizer.ggml.model "bert" is not supported (supported: "gpt2", "llama")"#
        ),
        "{message}"
    );

    meta.remove("tokenizer.ggml.model");
    let message = error_of(&meta);
    assert!(
        message.contains("tokenizer.ggml.model is missing"),
        "{message}"
    );

    let message = error_of(&gpt2_metadata("foo"));
    assert!(
        message.contains(r#"tokenizer.ggml.pre "foo" is not supported (supported: "default""#),
        "{message}"
    );
    for name in ["\"gpt-2\"", "\"llama-bpe\"", "\"qwen2\"", "\"smollm\""] {
        assert!(message.contains(name), "{message}");
    }
}

#[test]
fn missing_or_malformed_keys_are_errors() {
    let mut meta = gpt2_metadata("gpt-2");
    meta.remove("tokenizer.ggml.merges");
    assert!(error_of(&meta).contains("tokenizer.ggml.merges is missing"));

    let mut meta = gpt2_metadata("gpt-2");
    meta.remove("tokenizer.ggml.tokens");
    assert!(error_of(&meta).contains("tokenizer.ggml.tokens is missing"));

    let mut meta = gpt2_metadata("gpt-2");
    meta.insert("tokenizer.ggml.token_type".into(), i32s(&[1, 1]));
    assert!(error_of(&meta).contains("tokenizer.ggml.token_type has 2 entries"));

    let mut meta = gpt2_metadata("gpt-2");
    meta.insert("tokenizer.ggml.merges".into(), strings(&["hello"]));
    assert!(error_of(&meta).contains("tokenizer.ggml.merges[0]"));

    let mut meta = gpt2_metadata("gpt-2");
    meta.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(true));
    meta.remove("tokenizer.ggml.bos_token_id");
    let message = error_of(&meta);
    assert!(
        message.contains(
            "tokenizer.ggml.add_bos_token is true, but tokenizer.ggml.bos_token_id is not set"
        ),
        "{message}"
    );
}

// ---------------------------------------------------------------- llama (SentencePiece)

/// `<unk>`, `<s>`, `</s>`, the 256 byte tokens, then `pieces` with their scores.
fn llama_metadata(
    pieces: &[(&str, f32)],
    add_space_prefix: Option<bool>,
) -> HashMap<String, Value> {
    let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
    let mut types = vec![2, 3, 3];
    let mut scores = vec![0.0, 0.0, 0.0];
    for b in 0..=255u8 {
        tokens.push(format!("<0x{b:02X}>"));
        types.push(6);
        scores.push(0.0);
    }
    for (piece, score) in pieces {
        tokens.push(piece.to_string());
        types.push(1);
        scores.push(*score);
    }
    let tokens: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut meta = metadata(vec![
        ("tokenizer.ggml.model", string("llama")),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", i32s(&types)),
        ("tokenizer.ggml.scores", f32s(&scores)),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
        ("tokenizer.ggml.unknown_token_id", Value::U32(0)),
    ]);
    if let Some(add) = add_space_prefix {
        meta.insert("tokenizer.ggml.add_space_prefix".into(), Value::Bool(add));
    }
    meta
}

const FIRST_PIECE: u32 = 3 + 256;

fn byte_id(b: u8) -> u32 {
    3 + b as u32
}

#[test]
fn llama_merge_order_follows_scores_not_ids() {
    // "abc" can become "ab"+"c" or "a"+"bc"; only the scores of "ab" and "bc" decide.
    let a = FIRST_PIECE;
    let (c, ab, bc) = (a + 2, a + 3, a + 4);
    let pieces = |ab_score, bc_score| {
        llama_metadata(
            &[
                ("a", -1.0),
                ("b", -1.0),
                ("c", -1.0),
                ("ab", ab_score),
                ("bc", bc_score),
            ],
            Some(false),
        )
    };
    let tok = tokenizer_from_gguf(&pieces(-5.0, -2.0)).unwrap();
    assert_eq!(encode(&tok, "abc", false), [a, bc]);
    let tok = tokenizer_from_gguf(&pieces(-2.0, -5.0)).unwrap();
    assert_eq!(encode(&tok, "abc", false), [ab, c]);
    assert_eq!(decode(&tok, &[ab, c]), "abc");
}

fn llama_tokenizer(add_space_prefix: Option<bool>) -> GgufTokenizer {
    let meta = llama_metadata(
        &[
            ("▁", -1.0),
            ("a", -1.0),
            ("b", -1.0),
            ("▁a", -0.5),
            ("▁b", -3.0),
            ("ab", -2.0),
        ],
        add_space_prefix,
    );
    tokenizer_from_gguf(&meta).unwrap()
}

#[test]
fn llama_space_prefix_and_round_trip() {
    let (space, a, b, space_a, space_b, ab) = (
        FIRST_PIECE,
        FIRST_PIECE + 1,
        FIRST_PIECE + 2,
        FIRST_PIECE + 3,
        FIRST_PIECE + 4,
        FIRST_PIECE + 5,
    );
    let tok = llama_tokenizer(None);
    // "▁a▁ab": both "▁a" (-0.5) merge before "ab" (-2.0) could.
    assert_eq!(encode(&tok, "a ab", false), [space_a, space_a, b]);
    assert_eq!(decode(&tok, &[space_a, space_a, b]), "a ab");
    // "▁ab": "▁a" outscores "ab", so "b" is left alone.
    assert_eq!(encode(&tok, "ab", false), [space_a, b]);
    // Without a space before it, "ab" forms; "▁" alone is a piece too.
    assert_eq!(encode(&tok, "b ab", false), [space_b, space_a, b]);
    assert_eq!(decode(&tok, &[space_b, space, ab]), "b ab");
    assert_eq!(encode(&tok, "b", false), [space_b]);
    assert_eq!(decode(&tok, &[space_b]), "b");

    let tok = llama_tokenizer(Some(false));
    assert_eq!(encode(&tok, "a b", false), [a, space_b]);
    assert_eq!(decode(&tok, &[a, space_b]), "a b");
}

#[test]
fn llama_byte_fallback() {
    let tok = llama_tokenizer(Some(false));
    let a = FIRST_PIECE + 1;
    // "é" is not a piece: its UTF-8 bytes C3 A9 come out as byte tokens.
    let ids = encode(&tok, "aé", false);
    assert_eq!(ids, [a, byte_id(0xC3), byte_id(0xA9)]);
    assert_eq!(decode(&tok, &ids), "aé");
}

#[test]
fn llama_bos_and_control_tokens() {
    let space_a = FIRST_PIECE + 3;
    let tok = llama_tokenizer(None);
    assert!(
        tok.add_bos,
        "llama.cpp adds BOS for SentencePiece by default"
    );
    assert_eq!(tok.bos_id, Some(1));
    assert_eq!(tok.bos_token.as_deref(), Some("<s>"));
    assert_eq!(tok.eos_ids, [2]);
    assert_eq!(tok.eos_token.as_deref(), Some("</s>"));
    assert_eq!(encode(&tok, "a", true), [1, space_a]);
    assert_eq!(encode(&tok, "a", false), [space_a]);
    assert_eq!(encode(&tok, "a</s>", false), [space_a, 2]);

    let mut meta = llama_metadata(&[("▁", -1.0), ("a", -1.0), ("b", -1.0), ("▁a", -0.5)], None);
    meta.insert("tokenizer.ggml.add_bos_token".into(), Value::Bool(false));
    let tok = tokenizer_from_gguf(&meta).unwrap();
    assert!(!tok.add_bos);
    assert_eq!(encode(&tok, "a", true), [space_a]);
}

// ---------------------------------------------------------------- the real file

#[test]
fn smollm2_gguf_matches_llama_cpp() {
    let Some(path) =
        glimprouter_models::test_files::require(glimprouter_models::test_files::smollm2_q4_1())
    else {
        return;
    };
    let mut file = std::fs::File::open(&path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let tok = tokenizer_from_gguf(&content.metadata).unwrap();

    // Reference ids from llama.cpp tokenizing with this file.
    assert_eq!(
        encode(
            &tok,
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
            true
        ),
        [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]
    );
    assert_eq!(
        encode(&tok, "The year 2024 has 365 days.", true),
        [504, 713, 216, 34, 32, 34, 36, 553, 216, 35, 38, 37, 2009, 30]
    );
    assert_eq!(
        decode(&tok, &[504, 3575, 282, 4649, 314, 7042, 30]),
        "The capital of France is Paris."
    );
    assert!(tok.eos_ids.contains(&2), "{:?}", tok.eos_ids);
    assert_eq!(tok.bos_id, Some(1));
    assert!(!tok.add_bos);
    let template = tok.chat_template.as_deref().unwrap();
    assert!(template.contains("<|im_start|>"));
}
