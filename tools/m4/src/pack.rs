//! `m4 pack firmware`: the foundation model's sub-models, converted once by
//! the engine's packer into NPU layouts, in one firmware blob.
//!
//! Each sub-model becomes two tensors of the blob: `<sub>.table` (the
//! engine's tensor table) and `<sub>.weights` (its packed weights, aligned
//! so that the device runs straight from NPU memory).

use std::path::{Path, PathBuf};

use m4npu_format::{Firmware, FirmwareBuilder};
use m4npu_uapi::FW_DTYPE_BYTES;

use crate::progress::Steps;

/// Default name of the foundation model.
pub const FOUNDATION_NAME: &str = "m4-foundation-smollm2-minilm";

pub struct Sources {
    pub gguf: PathBuf,
    pub safetensors: PathBuf,
    pub tokenizer: PathBuf,
}

impl Default for Sources {
    fn default() -> Self {
        Self {
            gguf: vnpu_engine::weights::smollm2_gguf(),
            safetensors: vnpu_engine::weights::minilm_safetensors(),
            tokenizer: vnpu_engine::weights::minilm_tokenizer(),
        }
    }
}

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("cannot read {}: {e} (run `cargo xtask setup` for the weights)", p.display()))
}

/// What apps need to know of a sub-model to size a job's buffers: output
/// widths, context length, and the KV cache bytes per token of a
/// generation session's state.
fn shape(table: &vnpu_engine::TensorTable) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let v = match vnpu_engine::formats::pack::arch(table) {
        Some("bert") => {
            let n = |k: &str| table.meta_usize(k).map_err(|e| e.to_string());
            serde_json::json!({ "d_model": n("d_model")?, "vocab": n("vocab")?, "max_tokens": n("max_pos")? })
        }
        _ => {
            let c = vnpu_engine::LlamaConfig::from_meta(table).map_err(|e| e.to_string())?;
            serde_json::json!({
                "d_model": c.d_model,
                "vocab": c.vocab,
                "max_tokens": c.max_ctx,
                "kv_bytes_per_token": c.kv_bytes_per_token(),
            })
        }
    };
    Ok(v.as_object().cloned().unwrap_or_default())
}

/// Each sub-model's tokenizer as `tokenizer.json` (a JSON value), for the
/// metadata that apps read with MODEL_META: one source of truth for how
/// text becomes tokens.
fn tokenizers(src: &Sources, gguf: &[u8]) -> Result<serde_json::Value, String> {
    use vnpu_engine::TextTokenizer;
    let gguf = vnpu_engine::formats::gguf::parse(gguf).map_err(|e| format!("{}: {e}", src.gguf.display()))?;
    let backbone = TextTokenizer::from_gguf(&gguf).and_then(|t| t.to_json()).map_err(|e| format!("backbone tokenizer: {e}"))?;
    let text = String::from_utf8(read(&src.tokenizer)?).map_err(|e| format!("{}: {e}", src.tokenizer.display()))?;
    // Through the engine, so that what apps get is what it can load.
    let text = TextTokenizer::from_json(&text).and_then(|t| t.to_json()).map_err(|e| format!("text encoder tokenizer: {e}"))?;
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).map_err(|e| e.to_string());
    Ok(serde_json::json!({ "backbone": parse(&backbone)?, "text_encoder": parse(&text)? }))
}

/// Adds sub-model `sub` (its engine table and packed weights) to `fw`, and
/// its entry to the metadata's `submodels`.
fn add_sub_model(
    fw: &mut FirmwareBuilder,
    subs: &mut serde_json::Map<String, serde_json::Value>,
    sub: &str,
    table: &vnpu_engine::TensorTable,
    weights: Vec<u8>,
    source: &str,
) -> Result<(), String> {
    let arch = vnpu_engine::formats::pack::arch(table).unwrap_or("unknown").to_string();
    let mut entry = serde_json::json!({ "arch": arch, "source": source });
    entry.as_object_mut().expect("an object").extend(shape(table)?);
    subs.insert(sub.into(), entry);
    let bytes = |e: m4npu_format::FormatError| e.to_string();
    let encoded = table.encode();
    fw.tensor(&format!("{sub}.table"), FW_DTYPE_BYTES, &[encoded.len() as u64], encoded).map_err(bytes)?;
    fw.tensor(&format!("{sub}.weights"), FW_DTYPE_BYTES, &[weights.len() as u64], weights).map_err(bytes)?;
    Ok(())
}

/// A tiny foundation model of the same architecture with random weights
/// (a 2-layer LLaMA backbone, a small BERT text encoder; no tokenizers):
/// a firmware for fast tests, built and loaded in moments.
pub fn synthetic_firmware(name: &str, seed: u64) -> Result<Vec<u8>, String> {
    let mut fw = FirmwareBuilder::new(name);
    let mut subs = serde_json::Map::new();
    let weights = vnpud::foundation::SyntheticWeights::new(seed);
    for sub in weights.sub_models() {
        add_sub_model(&mut fw, &mut subs, sub.name, &sub.table, sub.weights.to_vec(), "synthetic")?;
    }
    fw.meta(serde_json::json!({ "format": "m4npu-foundation", "submodels": subs, "synthetic": true }).to_string().into_bytes());
    fw.build().map_err(|e| e.to_string())
}

/// Packs the foundation model; returns the blob.
pub fn firmware(src: &Sources, name: &str) -> Result<Vec<u8>, String> {
    let steps = Steps::new();
    let mut fw = FirmwareBuilder::new(name);
    let mut subs = serde_json::Map::new();
    // The GGUF is read once: it holds the backbone's tokenizer too.
    let gguf = steps.read_file(&src.gguf)?;
    let safetensors = steps.read_file(&src.safetensors)?;
    for (sub, path, file) in [("backbone", &src.gguf, &gguf), ("text_encoder", &src.safetensors, &safetensors)] {
        steps.begin(&format!("{sub}: converting to NPU layouts"));
        let (table, weights) = vnpu_engine::pack_for_npu(file).map_err(|e| format!("packing {sub}: {e}"))?;
        let arch = vnpu_engine::formats::pack::arch(&table).unwrap_or("unknown");
        steps.done(&format!("{sub}: packed for the NPU ({arch}, {} bytes)", weights.len()));
        let source = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        add_sub_model(&mut fw, &mut subs, sub, &table, weights, &source)?;
    }
    steps.begin("tokenizers");
    let tokenizers = tokenizers(src, &gguf)?;
    steps.done("tokenizers: text encoder from tokenizer.json, backbone from the GGUF");
    let meta = serde_json::json!({ "format": "m4npu-foundation", "submodels": subs, "tokenizers": tokenizers });
    fw.meta(meta.to_string().into_bytes());
    steps.begin("sealing: SHA-256 over the blob");
    let blob = fw.build().map_err(|e| e.to_string())?;
    let parsed = Firmware::parse(&blob).map_err(|e| format!("the packed blob does not validate: {e}"))?;
    steps.done(&format!("sealed: {} bytes, {} tensors", blob.len(), parsed.tensors().len()));
    Ok(blob)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The synthetic firmware validates and the engine runs both sub-models
    /// straight from it, as the device does.
    #[test]
    fn synthetic_firmware_runs_on_the_engine() {
        let blob = synthetic_firmware("tiny", 7).unwrap();
        let blob = vnpu_engine::AlignedBytes::from_slice(&blob);
        let fw = Firmware::parse(&blob).unwrap();
        let meta: serde_json::Value = serde_json::from_slice(fw.meta()).unwrap();
        assert_eq!(meta["submodels"]["backbone"]["arch"], "llama");
        let part = |n: &str| fw.get(n).unwrap().1;
        let table = vnpu_engine::TensorTable::decode(part("backbone.table")).unwrap();
        let llama = vnpu_engine::Llama::from_region(&table, part("backbone.weights")).unwrap();
        let mut kv = vec![0u8; llama.cfg.kv_bytes(8)];
        let out = llama.prefill(&[1, 2, 3], &mut kv).unwrap();
        assert_eq!(out.logits.unwrap().len(), llama.cfg.vocab);
        let table = vnpu_engine::TensorTable::decode(part("text_encoder.table")).unwrap();
        let bert = vnpu_engine::Bert::from_region(&table, part("text_encoder.weights")).unwrap();
        assert_eq!(bert.embed(&[1, 2, 3]).unwrap().len(), bert.cfg.d_model);
    }
}
