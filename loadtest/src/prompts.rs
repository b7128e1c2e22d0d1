//! Prompt sets: a JSONL file, the project's task dataset, or random words.

use std::path::Path;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

use crate::config::{PromptSource, DEFAULT_TASK_PROMPTS};
use crate::error::LoadError;

#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    Text(String),
    /// Token ids, passed through as the OpenAI API allows for completions,
    /// so two engines compared on them see the same tokens whatever their
    /// tokenizers would make of the text.
    TokenIds(Vec<u32>),
    /// Chat messages, kept as the file gave them.
    Messages(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub input: PromptInput,
    /// The prompt's own output length, used unless `--max-tokens` forces one.
    pub max_tokens: Option<u32>,
}

/// Random prompts are drawn once into a pool this large (or the request
/// count, if smaller) and cycled.
const RANDOM_POOL: usize = 1024;

/// Short common words: most tokenizers give each one token, so a prompt of
/// L words is close to L tokens.
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "it", "that", "was", "for", "on", "are", "as", "with",
    "his", "they", "at", "be", "this", "from", "have", "or", "by", "one", "had", "not", "but",
    "what", "all", "were", "when", "we", "there", "can", "an", "your", "which", "their", "said",
    "if", "do", "will", "each", "about", "how", "up", "out", "them", "then", "she", "many", "some",
    "so", "these", "would", "other", "into", "has", "more", "her", "two", "like", "him", "see",
    "time", "could", "no", "make", "than", "first", "been", "its", "who", "now", "people", "my",
    "made", "over", "did", "down", "only", "way", "find", "use", "may", "water", "long", "little",
    "very", "after", "words", "called", "just", "where", "most", "know", "number", "day", "good",
];

/// Loads the prompts `source` names. `requests` (if known) sizes the random pool.
pub fn load_prompts(
    source: &PromptSource,
    seed: u64,
    requests: Option<u64>,
) -> Result<Vec<Prompt>, LoadError> {
    match source {
        PromptSource::File { path } => read_jsonl(path),
        PromptSource::Random { input_len } => {
            let n = requests.map_or(RANDOM_POOL, |k| (k as usize).clamp(1, RANDOM_POOL));
            Ok(random_prompts(n, *input_len, seed))
        }
    }
}

/// The prompt source for `--dataset task`: the default task file, which must exist.
pub fn task_dataset(root: &Path) -> Result<PromptSource, LoadError> {
    let path = root.join(DEFAULT_TASK_PROMPTS);
    if !path.is_file() {
        return Err(LoadError::DatasetMissing { path });
    }
    Ok(PromptSource::File { path })
}

pub fn random_prompts(count: usize, input_len: usize, seed: u64) -> Vec<Prompt> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..count)
        .map(|_| {
            let words: Vec<&str> = (0..input_len)
                .map(|_| WORDS[rng.random_range(0..WORDS.len())])
                .collect();
            Prompt {
                input: PromptInput::Text(words.join(" ")),
                max_tokens: None,
            }
        })
        .collect()
}

pub fn read_jsonl(path: &Path) -> Result<Vec<Prompt>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut prompts = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let prompt = parse_line(line).map_err(|message| LoadError::PromptFormat {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        })?;
        prompts.push(prompt);
    }
    if prompts.is_empty() {
        return Err(LoadError::PromptFormat {
            path: path.to_path_buf(),
            line: 0,
            message: "no prompts in file".into(),
        });
    }
    Ok(prompts)
}

fn parse_line(line: &str) -> Result<Prompt, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let max_tokens = match value.get("max_tokens") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .ok_or("\"max_tokens\" must be a positive integer")?,
        ),
    };
    let input =
        match (value.get("prompt"), value.get("messages")) {
            (Some(Value::String(p)), None) => PromptInput::Text(p.clone()),
            (Some(Value::Array(ids)), None) if !ids.is_empty() => PromptInput::TokenIds(
                ids.iter()
                    .map(|v| v.as_u64().and_then(|n| u32::try_from(n).ok()))
                    .collect::<Option<Vec<u32>>>()
                    .ok_or("\"prompt\" as an array must hold token ids (non-negative integers)")?,
            ),
            (None, Some(Value::Array(m))) if !m.is_empty() => PromptInput::Messages(m.clone()),
            _ => return Err(
                "expected exactly one of \"prompt\" (a string or an array of token ids) or \"messages\" (a non-empty array)"
                    .into(),
            ),
        };
    Ok(Prompt { input, max_tokens })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, content: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("glimp-loadtest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn reads_prompt_and_messages_lines() {
        let path = temp_file(
            "ok.jsonl",
            "{\"prompt\": \"2+2=\", \"max_tokens\": 5}\n\n\
             {\"messages\": [{\"role\": \"user\", \"content\": \"hi\"}]}\n\
             {\"prompt\": [1, 4093, 198]}\n",
        );
        let prompts = read_jsonl(&path).unwrap();
        assert_eq!(prompts.len(), 3);
        assert_eq!(prompts[2].input, PromptInput::TokenIds(vec![1, 4093, 198]));
        assert_eq!(prompts[0].input, PromptInput::Text("2+2=".into()));
        assert_eq!(prompts[0].max_tokens, Some(5));
        assert!(matches!(&prompts[1].input, PromptInput::Messages(m) if m.len() == 1));
        assert_eq!(prompts[1].max_tokens, None);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        for (content, needle) in [
            ("{\"prompt\": \"a\"}\nnot json\n", "not JSON"),
            ("{\"prompt\": \"a\", \"messages\": []}\n", "exactly one"),
            ("{\"prompt\": \"a\", \"max_tokens\": -3}\n", "max_tokens"),
            ("{\"prompt\": [1, -2]}\n", "token ids"),
            ("{\"prompt\": []}\n", "exactly one"),
            ("\n", "no prompts"),
        ] {
            let path = temp_file("bad.jsonl", content);
            let err = read_jsonl(&path).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
            assert!(err.contains("bad.jsonl"), "{err}");
        }
    }

    #[test]
    fn missing_task_dataset_is_a_clear_error() {
        let root = std::env::temp_dir().join("glimp-loadtest-no-such-root");
        let err = task_dataset(&root).unwrap_err().to_string();
        assert!(err.contains("benches/task_prompts.jsonl"), "{err}");
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn random_prompts_have_the_length_and_follow_the_seed() {
        let a = random_prompts(4, 17, 7);
        let b = random_prompts(4, 17, 7);
        let c = random_prompts(4, 17, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        for p in &a {
            let PromptInput::Text(t) = &p.input else {
                panic!("random prompts are text")
            };
            assert_eq!(t.split(' ').count(), 17);
        }
    }
}
