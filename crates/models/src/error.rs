//! Typed errors of model loading and running; each names the file or tensor at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("missing file {path}")]
    MissingFile { path: PathBuf },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unsupported architecture {0:?} (supported: Llama, Mistral, Qwen2, Qwen3)")]
    UnsupportedArchitecture(String),
    #[error("unsupported config: {0}")]
    UnsupportedConfig(String),
    #[error("tensor {name} is missing from the checkpoint")]
    MissingTensor { name: String },
    #[error("tensor {name} has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        name: String,
        expected: Vec<usize>,
        actual: Vec<usize>,
    },
    #[error("cannot load tensor {name}: {message}")]
    TensorLoad { name: String, message: String },
    #[error("invalid batch: {0}")]
    InvalidBatch(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("chat template: {0}")]
    ChatTemplate(String),
    #[error("unsupported dtype {0:?} (use f32 or bf16)")]
    UnsupportedDType(candle_core::DType),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, ModelError>;

/// An I/O error on `path`, "not found" as `MissingFile` so callers get the
/// clearest error.
pub(crate) fn io_error(path: &std::path::Path, source: std::io::Error) -> ModelError {
    if source.kind() == std::io::ErrorKind::NotFound {
        ModelError::MissingFile {
            path: path.to_path_buf(),
        }
    } else {
        ModelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Reads a file.
pub(crate) fn read_file(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| io_error(path, source))
}

/// Reads and parses a JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<T> {
    let text = read_file(path)?;
    serde_json::from_str(&text).map_err(|e| ModelError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
