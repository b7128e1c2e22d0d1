//! The one tokenizer both models share: word level over byte-level
//! pre-tokens, so decoding gives back the exact text (spaces and the "\n\n"
//! step separator included).

use std::collections::BTreeSet;
use std::collections::HashMap;
use std::path::Path;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::wordlevel::WordLevel;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::Split;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{
    AddedToken, OffsetReferential, OffsetType, PreTokenizedString, PreTokenizer,
    SplitDelimiterBehavior, Tokenizer,
};

use super::corpus::training_text;
use super::generator::TaskMix;
use super::TaskError;

pub const EOS_TOKEN: &str = "<|endoftext|>";
pub const UNK_TOKEN: &str = "<unk>";
pub const IM_START_TOKEN: &str = "<|im_start|>";
pub const IM_END_TOKEN: &str = "<|im_end|>";
const SPECIAL_TOKENS: [&str; 4] = [EOS_TOKEN, UNK_TOKEN, IM_START_TOKEN, IM_END_TOKEN];

/// Renders a conversation to the completion prompt: the user's problem,
/// trimmed, then the step separator. Both endpoints thus feed the models the
/// same text.
pub const CHAT_TEMPLATE: &str = "{%- for message in messages %}{%- if message['role'] == 'user' %}{{ message['content'] | trim }}{%- endif %}{%- endfor %}{{ '\\n\\n' }}";

/// Seed and size of the texts the vocabulary is collected from; slips are
/// frequent there so correction steps are surely covered.
const COVERAGE_SEED: u64 = 0x70_6b_65_6e;
const COVERAGE_TEXTS: usize = 2000;
const COVERAGE_SLIP_PROBABILITY: f64 = 0.5;
/// Share of `max` in the coverage texts of a mix that has it at all, so that
/// its words are surely covered.
const COVERAGE_MAX_SHARE: f64 = 0.3;

/// Every newline is its own piece before the byte-level split. Without
/// this, the regex would read a prompt's trailing "\n\n" as one piece but
/// the same "\n\n" followed by a step as two, so a prompt's tokens would not
/// be a prefix of its continuation's.
fn pre_tokenizer() -> Result<Sequence, TaskError> {
    let newlines = Split::new("\n", SplitDelimiterBehavior::Isolated, false).map_err(tok_err)?;
    Ok(Sequence::new(vec![
        PreTokenizerWrapper::Split(newlines),
        PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
    ]))
}

fn tok_err(e: impl std::fmt::Display) -> TaskError {
    TaskError::Tokenizer(e.to_string())
}

/// The tokenizer of the bundled task (`TaskMix::BUNDLED`).
pub fn build_task_tokenizer() -> Result<Tokenizer, TaskError> {
    build_task_tokenizer_for(&TaskMix::BUNDLED)
}

/// Builds the tokenizer of `mix`: special tokens first (ids 0..4), then every
/// pre-token of the coverage texts in sorted order. Deterministic. A mix with
/// `max` adds its three words (`max`, `hold`, `raise`); one without has
/// exactly the vocabulary the add/subtract task always had.
pub fn build_task_tokenizer_for(mix: &TaskMix) -> Result<Tokenizer, TaskError> {
    let coverage_mix = TaskMix {
        max_share: if mix.max_share > 0.0 {
            COVERAGE_MAX_SHARE
        } else {
            0.0
        },
        tied_share: 0.5,
        max_problems: 1.0,
    };
    let pre = pre_tokenizer()?;
    let mut rng = ChaCha8Rng::seed_from_u64(COVERAGE_SEED);
    let mut words = BTreeSet::new();
    for _ in 0..COVERAGE_TEXTS {
        let doc = training_text(&mut rng, COVERAGE_SLIP_PROBABILITY, &coverage_mix);
        let mut pts = PreTokenizedString::from(doc.text.as_str());
        pre.pre_tokenize(&mut pts).map_err(tok_err)?;
        for (piece, _, _) in pts.get_splits(OffsetReferential::Original, OffsetType::Byte) {
            words.insert(piece.to_string());
        }
    }
    let mut vocab: HashMap<String, u32> = HashMap::new();
    for word in SPECIAL_TOKENS.iter().map(|s| s.to_string()).chain(words) {
        let id = vocab.len() as u32;
        vocab.entry(word).or_insert(id);
    }
    let model = WordLevel::builder()
        .vocab(vocab.into_iter().collect())
        .unk_token(UNK_TOKEN.to_string())
        .build()
        .map_err(tok_err)?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_pre_tokenizer(Some(pre));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let specials: Vec<AddedToken> = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect();
    tokenizer.add_special_tokens(specials).map_err(tok_err)?;
    Ok(tokenizer)
}

pub fn token_id(tokenizer: &Tokenizer, token: &str) -> Result<u32, TaskError> {
    tokenizer
        .token_to_id(token)
        .ok_or_else(|| TaskError::Tokenizer(format!("token {token:?} missing from vocabulary")))
}

/// Writes `tokenizer.json` and a `tokenizer_config.json` with the chat
/// template into `dir`.
pub fn write_tokenizer_files(
    dir: &Path,
    tokenizer: &Tokenizer,
    max_length: usize,
) -> Result<(), TaskError> {
    std::fs::create_dir_all(dir)?;
    tokenizer
        .save(dir.join("tokenizer.json"), true)
        .map_err(tok_err)?;
    let config = serde_json::json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "chat_template": CHAT_TEMPLATE,
        "bos_token": null,
        "eos_token": EOS_TOKEN,
        "pad_token": EOS_TOKEN,
        "unk_token": UNK_TOKEN,
        "add_bos_token": false,
        "add_eos_token": false,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": false,
    });
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::to_string_pretty(&config)?,
    )?;
    Ok(())
}
