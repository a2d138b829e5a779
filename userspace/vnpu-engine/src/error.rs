//! Error type of the engine: every data-dependent failure (bad file, bad
//! table, bad buffer) is reported here instead of panicking, because the
//! daemon runs jobs from untrusted apps against a shared model.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("gguf: {0}")]
    Gguf(String),
    #[error("safetensors: {0}")]
    Safetensors(String),
    #[error("tensor table: {0}")]
    Table(String),
    #[error("tensor `{0}` missing")]
    MissingTensor(String),
    #[error("tensor `{name}`: {msg}")]
    BadTensor { name: String, msg: String },
    #[error("metadata `{0}` missing or of wrong type")]
    Meta(String),
    #[error("invalid input: {0}")]
    Input(String),
    #[error("kv cache: {0}")]
    Kv(String),
    #[error("adapter: {0}")]
    Adapter(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn bad(name: &str, msg: impl Into<String>) -> Error {
    Error::BadTensor {
        name: name.to_string(),
        msg: msg.into(),
    }
}
