//! `m4 pack adapter`: an `.m4a` from trained tensors, bound to one
//! foundation firmware by its content hash and checked against its shapes
//! the way the device will check it, so a bad adapter fails here, not in
//! an app.
//!
//! Two sources: our own layout (a safetensors file with the tensor names of
//! `m4npu_format::adapter_meta`, plus the metadata JSON), or a PEFT LoRA
//! (`adapter_config.json` + `adapter_model.safetensors`) trained on the
//! Hugging Face layout of the backbone.

use std::collections::BTreeMap;
use std::path::Path;

use m4npu_format::adapter_meta::{build_adapter, lora_name, AdapterMeta, AdapterTask, SubModel};
use m4npu_format::Firmware;
use vnpu_engine::formats::safetensors;

use crate::progress::Steps;

/// Named f32 tensors, shapes outermost first.
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

fn read(p: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

pub fn read_safetensors(path: &Path) -> Result<Tensors, String> {
    let buf = read(path)?;
    let table = safetensors::table(&buf).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Tensors::new();
    for e in &table.entries {
        let (v, shape) = safetensors::read_f32(&buf, &table, &e.name)
            .map_err(|err| format!("{}: {err} (adapters are packed from F32 tensors)", path.display()))?;
        out.insert(e.name.clone(), (shape, v));
    }
    Ok(out)
}

/// PEFT module names to our projection names.
const PEFT_PROJS: [(&str, &str); 7] = [
    ("self_attn.q_proj", "q"),
    ("self_attn.k_proj", "k"),
    ("self_attn.v_proj", "v"),
    ("self_attn.o_proj", "o"),
    ("mlp.gate_proj", "gate"),
    ("mlp.up_proj", "up"),
    ("mlp.down_proj", "down"),
];

/// GGUF stores q and k rows of each head interleaved (rotary pairs
/// adjacent) where Hugging Face keeps the halves apart: a LoRA's `B`
/// trained on the latter must have its rows moved the same way.
fn permute_rows_for_gguf(b: &[f32], rank: usize, n_head: usize) -> Vec<f32> {
    let rows = b.len() / rank;
    let hd = rows / n_head;
    let mut out = vec![0f32; b.len()];
    for h in 0..n_head {
        for i in 0..hd / 2 {
            for j in 0..2 {
                let (src, dst) = (h * hd + j * (hd / 2) + i, h * hd + 2 * i + j);
                out[dst * rank..][..rank].copy_from_slice(&b[src * rank..][..rank]);
            }
        }
    }
    out
}

/// A PEFT LoRA directory as a generation adapter for `fw`'s backbone.
pub fn from_peft(dir: &Path, fw: &Firmware<'_>) -> Result<(AdapterMeta, Tensors), String> {
    let cfg: serde_json::Value = serde_json::from_slice(&read(&dir.join("adapter_config.json"))?)
        .map_err(|e| format!("adapter_config.json: {e}"))?;
    let r = cfg["r"].as_f64().ok_or("adapter_config.json: no rank `r`")?;
    let alpha = cfg["lora_alpha"].as_f64().unwrap_or(r);
    let shape = backbone_heads(fw)?;
    let mut out = Tensors::new();
    for (name, (dims, v)) in read_safetensors(&dir.join("adapter_model.safetensors"))? {
        let rest = name.split(".layers.").nth(1).ok_or_else(|| format!("{name}: not a decoder layer's LoRA"))?;
        let (layer, module) = rest.split_once('.').ok_or_else(|| format!("{name}: no layer number"))?;
        let layer: usize = layer.parse().map_err(|_| format!("{name}: no layer number"))?;
        let (module, factor) = if let Some(m) = module.strip_suffix(".lora_A.weight") {
            (m, "a")
        } else if let Some(m) = module.strip_suffix(".lora_B.weight") {
            (m, "b")
        } else {
            return Err(format!("{name}: only lora_A/lora_B weights are supported"));
        };
        let proj = PEFT_PROJS.iter().find(|(p, _)| *p == module).ok_or_else(|| format!("{name}: unknown module {module}"))?.1;
        let v = match (proj, factor) {
            ("q", "b") => permute_rows_for_gguf(&v, dims[1], shape.0),
            ("k", "b") => permute_rows_for_gguf(&v, dims[1], shape.1),
            _ => v,
        };
        out.insert(lora_name(layer, proj, factor), (dims, v));
    }
    let meta = AdapterMeta {
        task: AdapterTask::Generate,
        submodel: SubModel::Backbone,
        labels: vec![],
        pooling: Default::default(),
        feature_dim: None,
        text_embedding: None,
        layers: None,
        lora_alpha: alpha as f32,
        description: format!("imported from PEFT {}", dir.display()),
    };
    Ok((meta, out))
}

/// (query heads, KV heads) of the firmware's backbone.
fn backbone_heads(fw: &Firmware<'_>) -> Result<(usize, usize), String> {
    let table = fw.get("backbone.table").ok_or("the firmware has no backbone")?.1;
    let table = vnpu_engine::TensorTable::decode(table).map_err(|e| e.to_string())?;
    let c = vnpu_engine::LlamaConfig::from_meta(&table).map_err(|e| e.to_string())?;
    Ok((c.n_head, c.n_head_kv))
}

/// Builds and checks the blob.
pub fn build(name: &str, fw: &Firmware<'_>, fw_region: &[u8], meta: &AdapterMeta, tensors: &Tensors) -> Result<Vec<u8>, String> {
    let items = tensors.iter().map(|(n, (s, v))| (n.as_str(), s.as_slice(), v.as_slice()));
    let blob = build_adapter(name, fw.content_hash(), meta, items).map_err(|e| e.to_string())?;
    vnpud::adapter::check_blob(fw_region, &blob)?;
    Ok(blob)
}

/// Reads and verifies a firmware file, with progress.
pub fn load_firmware(path: &Path, steps: &Steps) -> Result<vnpu_engine::AlignedBytes, String> {
    let bytes = steps.read_file(path)?;
    let region = vnpu_engine::AlignedBytes::from_slice(&bytes);
    drop(bytes);
    Firmware::parse(&region).map_err(|e| format!("{}: {e}", path.display()))?;
    steps.done(&format!("verified {} ({} bytes)", path.display(), region.len()));
    Ok(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packer refuses what the device would refuse, before any app sees it.
    #[test]
    fn adapters_are_checked_against_the_firmware() {
        let fw_blob = vnpu_engine::AlignedBytes::from_slice(&crate::pack::synthetic_firmware("tiny", 1).unwrap());
        let fw = Firmware::parse(&fw_blob).unwrap();
        let meta = AdapterMeta::parse(br#"{"task":"classify","submodel":"backbone","labels":["a","b"],"feature_dim":3}"#).unwrap();
        let mut t = Tensors::new();
        let d = 64; // the tiny backbone's width
        t.insert("head.weight".into(), (vec![2, d], vec![0.1; 2 * d]));
        t.insert("head.bias".into(), (vec![2], vec![0.0; 2]));
        t.insert("input.weight".into(), (vec![d, 3], vec![0.1; 3 * d]));
        t.insert("input.bias".into(), (vec![d], vec![0.0; d]));
        let blob = build("ok", &fw, &fw_blob, &meta, &t).unwrap();
        let parsed = m4npu_format::Adapter::parse(&blob).unwrap();
        assert_eq!(parsed.base_model_hash(), fw.content_hash());
        t.insert("input.weight".into(), (vec![d, 4], vec![0.1; 4 * d]));
        let err = build("bad", &fw, &fw_blob, &meta, &t).unwrap_err();
        assert!(err.contains("does not fit the firmware") && err.contains("input.weight"), "{err}");
    }

    #[test]
    fn gguf_row_permutation_pairs_the_halves() {
        // One head of 4 rows, rank 1: HF rows [a0 a1 | b0 b1] -> GGUF [a0 b0 a1 b1].
        assert_eq!(permute_rows_for_gguf(&[0., 1., 2., 3.], 1, 1), [0., 2., 1., 3.]);
        // Two heads, rank 2: each head permuted on its own, rank columns kept.
        let b: Vec<f32> = (0..16).map(|v| v as f32).collect();
        let p = permute_rows_for_gguf(&b, 2, 2);
        assert_eq!(&p[..8], &[0., 1., 4., 5., 2., 3., 6., 7.]);
        assert_eq!(&p[8..], &[8., 9., 12., 13., 10., 11., 14., 15.]);
    }
}
