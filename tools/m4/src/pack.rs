//! `m4 pack firmware`: the foundation model's sub-models, converted once by
//! the engine's packer into NPU layouts, in one firmware blob.
//!
//! Each sub-model becomes two tensors of the blob: `<sub>.table` (the
//! engine's tensor table) and `<sub>.weights` (its packed weights, aligned
//! so that the device runs straight from NPU memory).

use std::path::{Path, PathBuf};
use std::time::Instant;

use m4npu_format::{Firmware, FirmwareBuilder};
use m4npu_uapi::FW_DTYPE_BYTES;

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

fn step(what: &str, start: Instant) {
    eprintln!("  [{:>5.1}s] {what}", start.elapsed().as_secs_f32());
}

/// What apps need to know of a sub-model to size a job's buffers: output
/// widths, context length, and the KV cache bytes per token of a
/// generation session's state.
fn shape(table: &vnpu_engine::TensorTable) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    let v = match vnpu_engine::pack::arch(table) {
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
fn tokenizers(src: &Sources) -> Result<serde_json::Value, String> {
    use vnpu_engine::tokenizer::TextTokenizer;
    let gguf = read(&src.gguf)?;
    let gguf = vnpu_engine::gguf::parse(&gguf).map_err(|e| format!("{}: {e}", src.gguf.display()))?;
    let backbone = TextTokenizer::from_gguf(&gguf).and_then(|t| t.to_json()).map_err(|e| format!("backbone tokenizer: {e}"))?;
    let text = String::from_utf8(read(&src.tokenizer)?).map_err(|e| format!("{}: {e}", src.tokenizer.display()))?;
    // Through the engine, so that what apps get is what it can load.
    let text = TextTokenizer::from_json(&text).and_then(|t| t.to_json()).map_err(|e| format!("text encoder tokenizer: {e}"))?;
    let parse = |s: &str| serde_json::from_str::<serde_json::Value>(s).map_err(|e| e.to_string());
    Ok(serde_json::json!({ "backbone": parse(&backbone)?, "text_encoder": parse(&text)? }))
}

/// Packs the foundation model; returns the blob.
pub fn firmware(src: &Sources, name: &str) -> Result<Vec<u8>, String> {
    let start = Instant::now();
    let mut fw = FirmwareBuilder::new(name);
    let mut subs = serde_json::Map::new();
    for (sub, path) in [("backbone", &src.gguf), ("text_encoder", &src.safetensors)] {
        let file = read(path)?;
        step(&format!("{sub}: read {} ({} bytes)", path.display(), file.len()), start);
        let (table, weights) = vnpu_engine::pack_for_npu(&file).map_err(|e| format!("packing {sub}: {e}"))?;
        let arch = vnpu_engine::pack::arch(&table).unwrap_or("unknown").to_string();
        step(&format!("{sub}: packed for the NPU ({arch}, {} bytes)", weights.len()), start);
        let (shape_table, table) = (table.clone(), table.encode());
        let source = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut entry = serde_json::json!({ "arch": arch, "source": source });
        entry.as_object_mut().expect("an object").extend(shape(&shape_table)?);
        subs.insert(sub.into(), entry);
        let bytes = |e: m4npu_format::FormatError| e.to_string();
        fw.tensor(&format!("{sub}.table"), FW_DTYPE_BYTES, &[table.len() as u64], table).map_err(bytes)?;
        fw.tensor(&format!("{sub}.weights"), FW_DTYPE_BYTES, &[weights.len() as u64], weights).map_err(bytes)?;
    }
    let tokenizers = tokenizers(src)?;
    step("tokenizers: text encoder from tokenizer.json, backbone from the GGUF", start);
    let meta = serde_json::json!({ "format": "m4npu-foundation", "submodels": subs, "tokenizers": tokenizers });
    fw.meta(meta.to_string().into_bytes());
    let blob = fw.build().map_err(|e| e.to_string())?;
    let parsed = Firmware::parse(&blob).map_err(|e| format!("the packed blob does not validate: {e}"))?;
    step(&format!("sealed: {} bytes, {} tensors", blob.len(), parsed.tensors().len()), start);
    Ok(blob)
}
