//! vnpu-engine: integer inference engine of the m4npu virtual NPU.
//!
//! Flow: a source checkpoint (GGUF / safetensors) is converted once by
//! [`pack_for_npu`] into a tensor table + byte blob (the firmware
//! image; [`TensorTable::encode`] serializes the table); models
//! ([`Llama`], [`Bert`]) are then built over a borrowed region
//! holding that blob and run jobs without copying weights:
//!
//! ```no_run
//! # fn main() -> vnpu_engine::Result<()> {
//! let file = std::fs::read(vnpu_engine::weights::smollm2_gguf())?;
//! let (table, blob) = vnpu_engine::pack_for_npu(&file)?; // once, by the firmware packer
//! let region = vnpu_engine::AlignedBytes::from_slice(&blob); // in production: the mmap'd firmware
//! let model = vnpu_engine::Llama::from_region(&table, &region)?;
//! let mut kv = vnpu_engine::AlignedBytes::zeroed(model.cfg.kv_bytes(512)); // app-owned buffer
//! let out = model.prefill(&[504, 3575, 282, 4649, 314], &mut kv)?;
//! let next = model.decode_step(7042, 5, &mut kv)?;
//! # let _ = (out, next); Ok(()) }
//! ```
//!
//! Numerics: weights stay in their integer formats (SmolLM2: the GGUF's own
//! Q4_1 / Q8_0 blocks, repacked losslessly; MiniLM: F32 re-quantized to
//! Q8_0), activations are quantized to int8 per 32-element block for every
//! matmul; norms, RoPE, softmax and activations run in f32.

// SIMD tiles index several parallel arrays by row/token and take many
// operands; `x % n != 0` stays for the workspace MSRV (is_multiple_of is 1.87).
#![allow(
    clippy::needless_range_loop,
    clippy::too_many_arguments,
    clippy::manual_is_multiple_of,
    clippy::redundant_locals
)]

// Three groups: `formats` reads checkpoints and packs them, `compute`
// runs integer matmuls and row passes on any ISA, `models` are the
// architectures on top. The types an application needs are re-exported here.
pub mod compute;
pub mod error;
pub mod formats;
pub mod models;
pub mod weights;

pub use compute::{Exec, Isa, QMat};
pub use error::{Error, Result};
pub use formats::pack::pack_for_npu;
pub use formats::tensor::{AlignedBytes, DType, Region, TensorEntry, TensorTable};
pub use models::adapter::{Adapter, InputProjection, Lora, LoraMat, LoraSet, Proj};
pub use models::bert::{Bert, BertConfig};
pub use models::llama::{
    BatchRow, ForwardOpts, ForwardOut, HiddenRow, Input, Llama, LlamaConfig, Logits, SeqRow,
};
#[cfg(feature = "tokenizer")]
pub use models::tokenizer::TextTokenizer;

#[cfg(test)]
mod tests;
