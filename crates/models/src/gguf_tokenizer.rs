//! A `tokenizers::Tokenizer` built from the `tokenizer.*` metadata of a GGUF file, so that a
//! GGUF checkpoint tokenizes the way llama.cpp (src/llama-vocab.cpp) tokenizes it.
//!
//! * `tokenizer.ggml.model = "gpt2"`: byte-level BPE over the file's merges, the text first
//!   split by the regexes llama.cpp picks from `tokenizer.ggml.pre`.
//! * `tokenizer.ggml.model = "llama"`: SentencePiece. llama.cpp repeatedly merges the adjacent
//!   pair whose concatenation is the highest-scoring vocabulary piece; a BPE whose merges are
//!   ranked by that score does the same (the Hugging Face "SentencePieceExtractor" way).

use std::collections::{HashMap, HashSet};

use ahash::AHashMap;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::decoders::DecoderWrapper;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::utils::Sequence as NormalizerSequence;
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace};
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::{SpecialToken, TemplateProcessing};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer};

use crate::error::{ModelError, Result};

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_SCORES: &str = "tokenizer.ggml.scores";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
const KEY_EOT_ID: &str = "tokenizer.ggml.eot_token_id";
const KEY_EOM_ID: &str = "tokenizer.ggml.eom_token_id";
const KEY_UNK_ID: &str = "tokenizer.ggml.unknown_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";
const KEY_ADD_EOS: &str = "tokenizer.ggml.add_eos_token";
const KEY_ADD_SPACE_PREFIX: &str = "tokenizer.ggml.add_space_prefix";
const KEY_CHAT_TEMPLATE: &str = "tokenizer.chat_template";

const SUPPORTED_MODELS: &str = "\"gpt2\", \"llama\"";

// Token types as gguf-py writes them (llama.cpp's llama_token_type).
const TYPE_NORMAL: i64 = 1;
const TYPE_UNKNOWN: i64 = 2;
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;
const TYPE_BYTE: i64 = 6;

/// SentencePiece's visible space.
const SPM_SPACE: &str = "\u{2581}";

// The regexes of llm_tokenizer_bpe in llama.cpp's src/llama-vocab.cpp, verbatim.
const GPT2_REGEX: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
const LLAMA3_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_REGEX: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const DEFAULT_REGEXES: &[&str] = &[
    r"[\p{P}\$\+<=>\^~\|]+",
    GPT2_REGEX,
    r"\p{N}+",
    "[0-9][0-9][0-9]",
];

/// One `tokenizer.ggml.pre` family of llama.cpp.
struct PreTokenizerSpec {
    names: &'static [&'static str],
    /// Applied in order, each splitting the pieces the previous one left.
    regexes: &'static [&'static str],
    /// llama.cpp's `ignore_merges`: a pre-token that is itself a vocabulary entry stays whole.
    ignore_merges: bool,
    /// llama.cpp's default for `tokenizer.ggml.add_bos_token` with this pre-tokenizer.
    add_bos: bool,
}

const PRE_TOKENIZERS: &[PreTokenizerSpec] = &[
    PreTokenizerSpec {
        names: &["default"],
        regexes: DEFAULT_REGEXES,
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizerSpec {
        // "gpt2" is not a llama.cpp name; accepted as a spelling of "gpt-2".
        names: &["gpt-2", "gpt2", "phi-2", "mpt", "olmo"],
        regexes: &[GPT2_REGEX],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizerSpec {
        names: &["llama3", "llama-v3", "llama-bpe"],
        regexes: &[LLAMA3_REGEX],
        ignore_merges: true,
        add_bos: true,
    },
    PreTokenizerSpec {
        names: &["dbrx", "smaug-bpe"],
        regexes: &[LLAMA3_REGEX],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizerSpec {
        names: &["qwen2", "deepseek-r1-qwen", "stablelm2", "megrez"],
        regexes: &[QWEN2_REGEX],
        ignore_merges: false,
        add_bos: false,
    },
    PreTokenizerSpec {
        names: &["smollm", "starcoder", "refact", "command-r", "codeshell"],
        regexes: &[r"\p{N}", GPT2_REGEX],
        ignore_merges: false,
        add_bos: false,
    },
];

/// What a GGUF file's metadata says about its tokenizer.
pub struct GgufTokenizer {
    pub tokenizer: Tokenizer,
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`, then the EOT and EOM ids where set and different.
    pub eos_ids: Vec<u32>,
    /// The text of `bos_id`.
    pub bos_token: Option<String>,
    /// The text of `tokenizer.ggml.eos_token_id`.
    pub eos_token: Option<String>,
    /// Whether `encode(text, true)` puts the BOS token first.
    pub add_bos: bool,
    pub chat_template: Option<String>,
}

/// Builds the tokenizer that `metadata` (a GGUF file's key/values) describes.
pub fn tokenizer_from_gguf(metadata: &HashMap<String, Value>) -> Result<GgufTokenizer> {
    let meta = Metadata(metadata);
    let model = meta.string(KEY_MODEL)?.ok_or_else(|| {
        err(format!(
            "{KEY_MODEL} is missing (supported: {SUPPORTED_MODELS})"
        ))
    })?;
    let vocab = Vocab::read(&meta)?;

    // llama.cpp's SentencePiece defaults where the file sets no ids; its BPE default (11 for
    // both, a Falcon leftover) would be wrong for other vocabularies, so none is assumed.
    let (built, default_bos, default_eos) = match model {
        "gpt2" => (byte_level_bpe(&meta, &vocab)?, None, None),
        "llama" => (sentencepiece(&meta, &vocab)?, Some(1), Some(2)),
        other => {
            return Err(err(format!(
                "{KEY_MODEL} {other:?} is not supported (supported: {SUPPORTED_MODELS})"
            )))
        }
    };
    let Built {
        mut tokenizer,
        default_add_bos,
    } = built;

    let bos_id = meta
        .token_id(KEY_BOS_ID, &vocab)?
        .or(default_bos.filter(|&id| vocab.has(id)));
    let eos_id = meta
        .token_id(KEY_EOS_ID, &vocab)?
        .or(default_eos.filter(|&id| vocab.has(id)));
    let mut eos_ids: Vec<u32> = eos_id.into_iter().collect();
    for key in [KEY_EOT_ID, KEY_EOM_ID] {
        if let Some(id) = meta.token_id(key, &vocab)? {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
    }

    let add_bos = meta.bool(KEY_ADD_BOS)?.unwrap_or(default_add_bos);
    let add_eos = meta.bool(KEY_ADD_EOS)?.unwrap_or(false);

    add_special_tokens(&mut tokenizer, &vocab)?;
    let bos = special_for(add_bos, bos_id, KEY_ADD_BOS, KEY_BOS_ID, &vocab)?;
    let eos = special_for(add_eos, eos_id, KEY_ADD_EOS, KEY_EOS_ID, &vocab)?;
    if bos.is_some() || eos.is_some() {
        tokenizer.with_post_processor(Some(add_bos_eos(bos, eos)?));
    }

    Ok(GgufTokenizer {
        tokenizer,
        bos_id,
        eos_ids,
        bos_token: bos_id.map(|id| vocab.text(id).to_string()),
        eos_token: eos_id.map(|id| vocab.text(id).to_string()),
        add_bos,
        chat_template: meta.string(KEY_CHAT_TEMPLATE)?.map(str::to_string),
    })
}

fn err(message: String) -> ModelError {
    ModelError::Tokenizer(message)
}

fn tokenizers_err(context: &str) -> impl Fn(tokenizers::Error) -> ModelError + '_ {
    move |e| err(format!("{context}: {e}"))
}

/// A tokenizer before its special tokens and post-processor.
struct Built {
    tokenizer: Tokenizer,
    default_add_bos: bool,
}

/// Typed reads of the metadata; a value of the wrong type is an error naming its key.
struct Metadata<'a>(&'a HashMap<String, Value>);

impl<'a> Metadata<'a> {
    fn string(&self, key: &str) -> Result<Option<&'a str>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(err(format!("{key} is not a string"))),
        }
    }

    fn bool(&self, key: &str) -> Result<Option<bool>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(err(format!("{key} is not a bool"))),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&'a [Value]>> {
        match self.0.get(key) {
            None => Ok(None),
            Some(Value::Array(items)) => Ok(Some(items)),
            Some(_) => Err(err(format!("{key} is not an array"))),
        }
    }

    fn string_array(&self, key: &str) -> Result<Option<Vec<&'a str>>> {
        let Some(items) = self.array(key)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.as_str()),
                _ => Err(err(format!("{key}[{i}] is not a string"))),
            })
            .collect::<Result<_>>()
            .map(Some)
    }

    /// A token id, `None` when the key is absent. Like llama.cpp, an id outside the vocabulary
    /// is ignored (with a warning) rather than failing the load.
    fn token_id(&self, key: &str, vocab: &Vocab) -> Result<Option<u32>> {
        let Some(value) = self.0.get(key) else {
            return Ok(None);
        };
        let id = integer(value).ok_or_else(|| err(format!("{key} is not an integer")))?;
        match u32::try_from(id).ok().filter(|&id| vocab.has(id)) {
            Some(id) => Ok(Some(id)),
            None => {
                tracing::warn!(
                    "{key} = {id} is outside the vocabulary of {} tokens; ignored",
                    vocab.tokens.len()
                );
                Ok(None)
            }
        }
    }
}

/// Any GGUF integer type, since converters differ in which they write.
fn integer(value: &Value) -> Option<i64> {
    match *value {
        Value::U8(v) => Some(v.into()),
        Value::I8(v) => Some(v.into()),
        Value::U16(v) => Some(v.into()),
        Value::I16(v) => Some(v.into()),
        Value::U32(v) => Some(v.into()),
        Value::I32(v) => Some(v.into()),
        Value::U64(v) => i64::try_from(v).ok(),
        Value::I64(v) => Some(v),
        _ => None,
    }
}

fn float(value: &Value) -> Option<f32> {
    match *value {
        Value::F32(v) => Some(v),
        Value::F64(v) => Some(v as f32),
        _ => integer(value).map(|v| v as f32),
    }
}

/// The token list with its types; id = index.
struct Vocab {
    tokens: Vec<String>,
    types: Vec<i64>,
}

impl Vocab {
    fn read(meta: &Metadata) -> Result<Self> {
        let texts = meta
            .string_array(KEY_TOKENS)?
            .ok_or_else(|| err(format!("{KEY_TOKENS} is missing")))?;
        if texts.is_empty() {
            return Err(err(format!("{KEY_TOKENS} is empty")));
        }
        if u32::try_from(texts.len()).is_err() {
            return Err(err(format!("{KEY_TOKENS} has too many entries")));
        }
        let mut seen = HashSet::with_capacity(texts.len());
        let mut tokens = Vec::with_capacity(texts.len());
        for (i, text) in texts.into_iter().enumerate() {
            // llama.cpp's stand-in, so that ids stay dense and decode to something visible.
            let text = if text.is_empty() {
                format!("[EMPTY_{i}]")
            } else {
                text.to_string()
            };
            if !seen.insert(text.clone()) {
                return Err(err(format!("{KEY_TOKENS} holds {text:?} twice")));
            }
            tokens.push(text);
        }

        let types = match meta.array(KEY_TOKEN_TYPE)? {
            None => vec![TYPE_NORMAL; tokens.len()],
            Some(items) => {
                if items.len() < tokens.len() {
                    return Err(err(format!(
                        "{KEY_TOKEN_TYPE} has {} entries for {} tokens",
                        items.len(),
                        tokens.len()
                    )));
                }
                items[..tokens.len()]
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        integer(v)
                            .ok_or_else(|| err(format!("{KEY_TOKEN_TYPE}[{i}] is not an integer")))
                    })
                    .collect::<Result<_>>()?
            }
        };
        Ok(Self { tokens, types })
    }

    fn has(&self, id: u32) -> bool {
        (id as usize) < self.tokens.len()
    }

    /// Only called with ids checked by `has`.
    fn text(&self, id: u32) -> &str {
        &self.tokens[id as usize]
    }

    fn ids(&self) -> AHashMap<String, u32> {
        self.tokens
            .iter()
            .enumerate()
            .map(|(id, text)| (text.clone(), id as u32))
            .collect()
    }
}

fn byte_level_bpe(meta: &Metadata, vocab: &Vocab) -> Result<Built> {
    let pre = match meta.string(KEY_PRE)? {
        Some(pre) => pre,
        None => {
            tracing::warn!("{KEY_PRE} is missing; using \"default\" as llama.cpp does");
            "default"
        }
    };
    let spec = PRE_TOKENIZERS
        .iter()
        .find(|spec| spec.names.contains(&pre))
        .ok_or_else(|| {
            let supported: Vec<String> = PRE_TOKENIZERS
                .iter()
                .flat_map(|spec| spec.names.iter().map(|name| format!("{name:?}")))
                .collect();
            err(format!(
                "{KEY_PRE} {pre:?} is not supported (supported: {})",
                supported.join(", ")
            ))
        })?;

    let ids = vocab.ids();
    let merges = bpe_merges(meta, &ids)?;
    let model = BPE::builder()
        .vocab_and_merges(ids, merges)
        .ignore_merges(spec.ignore_merges)
        .build()
        .map_err(tokenizers_err("cannot build the BPE model"))?;

    let mut pre_tokenizers = Vec::with_capacity(spec.regexes.len() + 1);
    for regex in spec.regexes {
        let split = Split::new(
            SplitPattern::Regex(regex.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tokenizers_err(regex))?;
        pre_tokenizers.push(PreTokenizerWrapper::Split(split));
    }
    // The regexes did the splitting; this only maps bytes to the BPE's visible characters.
    pre_tokenizers.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
        false, true, false,
    )));

    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_pre_tokenizer(Some(PreTokenizerSequence::new(pre_tokenizers)))
        .with_decoder(Some(ByteLevel::default()));
    Ok(Built {
        tokenizer,
        default_add_bos: spec.add_bos,
    })
}

/// `tokenizer.ggml.merges` as pairs, in rank order.
fn bpe_merges(meta: &Metadata, ids: &AHashMap<String, u32>) -> Result<Vec<(String, String)>> {
    let lines = meta
        .string_array(KEY_MERGES)?
        .ok_or_else(|| err(format!("{KEY_MERGES} is missing")))?;
    let mut seen = HashSet::with_capacity(lines.len());
    let mut merges = Vec::with_capacity(lines.len());
    for (i, line) in lines.into_iter().enumerate() {
        // As llama.cpp: the separator is the first space after the first character, so that
        // a left part starting with a raw space (possible outside byte-level vocabularies)
        // still parses.
        let split = line
            .char_indices()
            .skip(1)
            .find(|&(_, c)| c == ' ')
            .map(|(at, _)| at)
            .ok_or_else(|| err(format!("{KEY_MERGES}[{i}] {line:?} has no space")))?;
        let (left, right) = (&line[..split], &line[split + 1..]);
        // llama.cpp skips a merge whose parts or result are not tokens (it can never fire);
        // tokenizers would refuse the whole model.
        let in_vocab = ids.contains_key(left)
            && ids.contains_key(right)
            && ids.contains_key(&format!("{left}{right}"));
        // A repeated pair keeps its first (best) rank, as in llama.cpp.
        if in_vocab && seen.insert((left, right)) {
            merges.push((left.to_string(), right.to_string()));
        }
    }
    Ok(merges)
}

fn sentencepiece(meta: &Metadata, vocab: &Vocab) -> Result<Built> {
    let scores: Vec<f32> = match meta.array(KEY_SCORES)? {
        None => vec![0.0; vocab.tokens.len()],
        Some(items) => {
            if items.len() < vocab.tokens.len() {
                return Err(err(format!(
                    "{KEY_SCORES} has {} entries for {} tokens",
                    items.len(),
                    vocab.tokens.len()
                )));
            }
            items[..vocab.tokens.len()]
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    float(v).ok_or_else(|| err(format!("{KEY_SCORES}[{i}] is not a number")))
                })
                .collect::<Result<_>>()?
        }
    };
    let add_space_prefix = meta.bool(KEY_ADD_SPACE_PREFIX)?.unwrap_or(true);

    let ids = vocab.ids();
    let merges = score_merges(vocab, &scores, &ids);
    let mut builder = BPE::builder()
        .vocab_and_merges(ids, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    let unk_id = meta.token_id(KEY_UNK_ID, vocab)?.or(Some(0));
    if let Some(unk) = unk_id.filter(|&id| vocab.has(id)) {
        builder = builder.unk_token(vocab.text(unk).to_string());
    }
    let model = builder
        .build()
        .map_err(tokenizers_err("cannot build the SentencePiece model"))?;

    let spaces = Replace::new(" ", SPM_SPACE).map_err(tokenizers_err("normalizer"))?;
    let normalizer: NormalizerWrapper = if add_space_prefix {
        NormalizerSequence::new(vec![
            Prepend::new(SPM_SPACE.to_string()).into(),
            spaces.into(),
        ])
        .into()
    } else {
        spaces.into()
    };

    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new(SPM_SPACE, " ")
            .map_err(tokenizers_err("decoder"))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    if add_space_prefix {
        decoders.push(Strip::new(' ', 1, 0).into());
    }

    let mut tokenizer = Tokenizer::new(model);
    tokenizer
        .with_normalizer(Some(normalizer))
        .map_err(tokenizers_err("normalizer"))?
        .with_decoder(Some(DecoderSequence::new(decoders)));
    Ok(Built {
        tokenizer,
        default_add_bos: true,
    })
}

/// Every split of a piece into two vocabulary pieces is a merge; merges rank by the merged
/// piece's score, highest first, ties by the ids of the merged piece, then left, then right.
/// Control and byte tokens are left out: llama.cpp reaches those only by special-token
/// matching and byte fallback, never by merging text.
fn score_merges(
    vocab: &Vocab,
    scores: &[f32],
    ids: &AHashMap<String, u32>,
) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, u32, u32, u32)> = Vec::new();
    for (id, piece) in vocab.tokens.iter().enumerate() {
        if matches!(vocab.types[id], TYPE_CONTROL | TYPE_BYTE) {
            continue;
        }
        for (at, _) in piece.char_indices().skip(1) {
            let (left, right) = piece.split_at(at);
            if let (Some(&l), Some(&r)) = (ids.get(left), ids.get(right)) {
                ranked.push((scores[id], id as u32, l, r));
            }
        }
    }
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.cmp(&b.2))
            .then(a.3.cmp(&b.3))
    });
    ranked
        .into_iter()
        .map(|(_, _, l, r)| (vocab.text(l).to_string(), vocab.text(r).to_string()))
        .collect()
}

/// Control and unknown tokens become special added tokens and user-defined ones plain added
/// tokens, so that their text in the input is matched whole, as llama.cpp's special-token
/// partition does; all on the raw text, hence `normalized(false)`.
fn add_special_tokens(tokenizer: &mut Tokenizer, vocab: &Vocab) -> Result<()> {
    let mut special = Vec::new();
    let mut user_defined = Vec::new();
    for (text, &kind) in vocab.tokens.iter().zip(&vocab.types) {
        match kind {
            TYPE_CONTROL | TYPE_UNKNOWN => {
                special.push(AddedToken::from(text.clone(), true).normalized(false))
            }
            TYPE_USER_DEFINED => {
                user_defined.push(AddedToken::from(text.clone(), false).normalized(false))
            }
            _ => {}
        }
    }
    tokenizer
        .add_special_tokens(special)
        .map_err(tokenizers_err("cannot add the control tokens"))?;
    tokenizer
        .add_tokens(user_defined)
        .map_err(tokenizers_err("cannot add the user-defined tokens"))?;
    Ok(())
}

/// The (id, text) of a token to add around every sequence, if `add` asks for one.
fn special_for(
    add: bool,
    id: Option<u32>,
    add_key: &str,
    id_key: &str,
    vocab: &Vocab,
) -> Result<Option<(u32, String)>> {
    match (add, id) {
        (false, _) => Ok(None),
        (true, Some(id)) => Ok(Some((id, vocab.text(id).to_string()))),
        (true, None) => Err(err(format!("{add_key} is true, but {id_key} is not set"))),
    }
}

/// A post-processor putting BOS before and/or EOS after each sequence. Template pieces are
/// named "BOS"/"EOS" rather than by token text, which may hold spaces or a leading `$`.
fn add_bos_eos(
    bos: Option<(u32, String)>,
    eos: Option<(u32, String)>,
) -> Result<TemplateProcessing> {
    let around = |sequence: &str, type_id: u32| {
        let mut pieces = Vec::new();
        if bos.is_some() {
            pieces.push(format!("BOS:{type_id}"));
        }
        pieces.push(format!("{sequence}:{type_id}"));
        if eos.is_some() {
            pieces.push(format!("EOS:{type_id}"));
        }
        pieces
    };
    let single = around("$A", 0);
    let pair = [around("$A", 0), around("$B", 1)].concat();

    let mut tokens = Vec::new();
    for (name, token) in [("BOS", &bos), ("EOS", &eos)] {
        if let Some((id, text)) = token {
            tokens.push(
                SpecialToken::new(name.to_string(), vec![*id], vec![text.clone()])
                    .map_err(tokenizers_err("post-processor"))?,
            );
        }
    }
    let template_err = |e: String| err(format!("post-processor: {e}"));
    TemplateProcessing::builder()
        .try_single(single)
        .map_err(template_err)?
        .try_pair(pair)
        .map_err(template_err)?
        .special_tokens(tokens)
        .build()
        .map_err(|e| err(format!("post-processor: {e}")))
}
