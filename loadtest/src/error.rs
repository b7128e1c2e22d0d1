//! Errors that stop a whole run (a single request's failure is a
//! [`crate::client::RequestFailure`] and only counts in the report).

use std::path::PathBuf;

use crate::client::FailureKind;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("invalid configuration: {0}")]
    Config(String),

    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}:{line}: {message}")]
    PromptFormat {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error(
        "dataset `task` reads {path}, which does not exist; generate it first \
         (see benches/README.md) or pass --prompts FILE.jsonl / --random-input-len L"
    )]
    DatasetMissing { path: PathBuf },

    #[error("no --model given and {url} did not name one: {message}")]
    ModelDiscovery { url: String, message: String },

    #[error("the test request failed ({kind}): {message}")]
    TestRequest { kind: FailureKind, message: String },

    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),

    #[error("{path} is not a load-test report: {source}")]
    ReportFormat {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("cannot serialise the report: {0}")]
    Serialize(#[source] serde_json::Error),
}
