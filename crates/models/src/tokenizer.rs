//! Tokenizer of a checkpoint: `tokenizer.json` plus the special tokens and chat template
//! of `tokenizer_config.json` and the EOS ids of `generation_config.json`; or, for a GGUF
//! file, the tokenizer its metadata describes (`gguf_tokenizer.rs`), unless a
//! `tokenizer.json` lies beside the file.

use std::path::Path;

use minijinja::{context, Environment, ErrorKind};
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::error::{read_file, read_json, ModelError, Result};

/// One chat turn as OpenAI-style APIs carry it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

pub struct ModelTokenizer {
    tokenizer: Tokenizer,
    eos_ids: Vec<u32>,
    bos_id: Option<u32>,
    bos_token: Option<String>,
    eos_token: Option<String>,
    chat_template: Option<String>,
}

/// A special token in tokenizer_config.json: a string or an AddedToken object.
fn token_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// `eos_token_id` of generation_config.json: an int or a list of ints.
fn id_list(v: Option<&serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|x| x as u32).into_iter().collect(),
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64().map(|x| x as u32))
            .collect(),
        _ => Vec::new(),
    }
}

/// `tojson` as `transformers` defines it for chat templates: Python's
/// `json.dumps(x, ensure_ascii=False)`, i.e. `", "` and `": "` between items,
/// keys in their given order, no HTML escaping (minijinja's own `tojson` is
/// compact and escapes `<`, `>`, `&` and `'`, which changes the prompt).
fn tojson_like_python(value: minijinja::Value) -> std::result::Result<String, minijinja::Error> {
    struct PythonStyle;
    fn item_separator<W: ?Sized + std::io::Write>(w: &mut W, first: bool) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(b", ")
        }
    }
    impl serde_json::ser::Formatter for PythonStyle {
        fn begin_array_value<W: ?Sized + std::io::Write>(
            &mut self,
            writer: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            item_separator(writer, first)
        }

        fn begin_object_key<W: ?Sized + std::io::Write>(
            &mut self,
            writer: &mut W,
            first: bool,
        ) -> std::io::Result<()> {
            item_separator(writer, first)
        }

        fn begin_object_value<W: ?Sized + std::io::Write>(
            &mut self,
            writer: &mut W,
        ) -> std::io::Result<()> {
            writer.write_all(b": ")
        }
    }
    let fail = |e: &dyn std::fmt::Display| {
        minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {e}"))
    };
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonStyle);
    serde::Serialize::serialize(&value, &mut ser).map_err(|e| fail(&e))?;
    String::from_utf8(out).map_err(|e| fail(&e))
}

/// `chat_template`: a string, or a list of named templates (the "default" one is used).
fn template_string(v: Option<&serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Array(list) => {
            let named = |name: &str| {
                list.iter()
                    .find(|t| t.get("name").and_then(|n| n.as_str()) == Some(name))
            };
            named("default")
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str())
                .map(str::to_string)
        }
        _ => None,
    }
}

impl ModelTokenizer {
    /// The tokenizer of a checkpoint folder or of a `.gguf` file.
    pub fn load(path: &Path) -> Result<Self> {
        if !crate::gguf::is_gguf(path) {
            return Self::from_dir(path);
        }
        let file = crate::gguf::GgufFile::open(path)?;
        let beside = path.parent().unwrap_or(Path::new("."));
        if beside.join("tokenizer.json").exists() {
            // The folder's files win; what they leave out comes from the file.
            let mut tok = Self::from_dir(beside)?;
            if tok.chat_template.is_none() {
                tok.chat_template = file.string("tokenizer.chat_template").map(str::to_string);
            }
            return Ok(tok);
        }
        let parts =
            crate::gguf_tokenizer::tokenizer_from_gguf(file.metadata()).map_err(|e| match e {
                ModelError::Tokenizer(m) => ModelError::Tokenizer(format!(
                    "{}: {m} (a tokenizer.json beside the file would be used instead)",
                    path.display()
                )),
                other => other,
            })?;
        Ok(Self {
            tokenizer: parts.tokenizer,
            eos_ids: parts.eos_ids,
            bos_id: parts.bos_id,
            bos_token: parts.bos_token,
            eos_token: parts.eos_token,
            chat_template: parts.chat_template,
        })
    }

    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.exists() {
            return Err(ModelError::MissingFile { path: tok_path });
        }
        let tokenizer = Tokenizer::from_file(&tok_path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", tok_path.display())))?;

        let cfg_path = dir.join("tokenizer_config.json");
        let cfg: serde_json::Value = if cfg_path.exists() {
            read_json(&cfg_path)?
        } else {
            serde_json::Value::Null
        };
        let gen_path = dir.join("generation_config.json");
        let gen: serde_json::Value = if gen_path.exists() {
            read_json(&gen_path)?
        } else {
            serde_json::Value::Null
        };

        let bos_token = token_string(cfg.get("bos_token"));
        let eos_token = token_string(cfg.get("eos_token"));
        let mut eos_ids = id_list(gen.get("eos_token_id"));
        if let Some(id) = eos_token.as_deref().and_then(|t| tokenizer.token_to_id(t)) {
            if !eos_ids.contains(&id) {
                eos_ids.push(id);
            }
        }
        let bos_id = bos_token
            .as_deref()
            .and_then(|t| tokenizer.token_to_id(t))
            .or_else(|| id_list(gen.get("bos_token_id")).first().copied());

        let jinja_path = dir.join("chat_template.jinja");
        let chat_template = if jinja_path.exists() {
            Some(read_file(&jinja_path)?)
        } else {
            template_string(cfg.get("chat_template"))
        };
        Ok(Self {
            tokenizer,
            eos_ids,
            bos_id,
            bos_token,
            eos_token,
            chat_template,
        })
    }

    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self
            .tokenizer
            .encode(text, add_special_tokens)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.tokenizer
            .decode(ids, skip_special)
            .map_err(|e| ModelError::Tokenizer(e.to_string()))
    }

    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    pub fn bos_token_id(&self) -> Option<u32> {
        self.bos_id
    }

    /// Size of the vocabulary including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    pub fn token_text(&self, id: u32) -> Option<String> {
        self.tokenizer.id_to_token(id)
    }

    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokenizer.token_to_id(text)
    }

    pub fn inner(&self) -> &Tokenizer {
        &self.tokenizer
    }

    pub fn has_chat_template(&self) -> bool {
        self.chat_template.is_some()
    }

    /// Renders the checkpoint's chat template the way `transformers` does (jinja with
    /// trim_blocks/lstrip_blocks, `raise_exception`, `bos_token`/`eos_token`).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        self.apply_chat_template_with(messages, add_generation_prompt, &serde_json::Map::new())
    }

    /// [`Self::apply_chat_template`] with extra template variables (vLLM's
    /// `chat_template_kwargs`, e.g. `enable_thinking`); they cannot replace
    /// `messages`, `add_generation_prompt` or the special tokens.
    pub fn apply_chat_template_with(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        kwargs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<String> {
        let template = self.chat_template.as_deref().ok_or_else(|| {
            ModelError::ChatTemplate("the checkpoint has no chat template".into())
        })?;
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        // Python string/dict methods (`.startswith`, `.strip`, `.items`...) used by real
        // templates such as Qwen's.
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson_like_python);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        let tmpl = env
            .template_from_str(template)
            .map_err(|e| ModelError::ChatTemplate(e.to_string()))?;
        let base = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => self.bos_token.clone().unwrap_or_default(),
            eos_token => self.eos_token.clone().unwrap_or_default(),
        };
        // Later contexts only fill names the earlier ones lack.
        tmpl.render(context! { ..base, ..minijinja::Value::from_serialize(kwargs) })
            .map_err(|e| ModelError::ChatTemplate(e.to_string()))
    }
}
