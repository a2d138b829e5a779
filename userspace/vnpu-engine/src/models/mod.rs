//! Models on the packed weights: the LLaMA decoder and the BERT encoder,
//! the per-job adapters they run with, their text tokenizers, and tiny
//! synthetic instances for tests.

pub mod adapter;
pub mod bert;
pub mod llama;
pub mod synthetic;
#[cfg(feature = "tokenizer")]
pub mod tokenizer;
