//! One-time conversion of source checkpoints into the engine's packed
//! firmware layout: a [`TensorTable`] plus one byte blob (64-byte aligned
//! tensors). The firmware packer writes both once; models then run from
//! borrowed slices of the blob via `from_region`.

use crate::compute::quant;
use crate::error::{bad, Error, Result};
use crate::formats::gguf;
use crate::formats::safetensors;
use crate::formats::tensor::{
    BlobBuilder, DType, MetaValue, TensorTable, GGML_F16, GGML_F32, GGML_Q4_1, GGML_Q8_0,
};
use crate::models::llama::LlamaConfig;

/// Which model a blob holds, for callers that dispatch on it.
pub fn arch(table: &TensorTable) -> Option<&str> {
    match table.meta.get("arch") {
        Some(MetaValue::Str(s)) => Some(s),
        _ => None,
    }
}

/// SmolLM2 / LLaMA GGUF -> packed table + blob. Q4_1 and Q8_0 blocks are
/// repacked losslessly (f16 scales widened to f32); norms stay f32.
pub fn pack_gguf_llama(file: &[u8]) -> Result<(TensorTable, Vec<u8>)> {
    let g = gguf::parse(file)?;
    let a = g.meta_str("general.architecture")?;
    if a != "llama" {
        return Err(Error::Unsupported(format!("architecture {a}")));
    }
    let u = |k: &str| -> Result<usize> { Ok(g.meta_u64(&format!("llama.{k}"))? as usize) };
    let d = u("embedding_length")?;
    let n_head = u("attention.head_count")?;
    let vocab = match g.meta_u64("llama.vocab_size") {
        Ok(v) => v as usize,
        Err(_) => g
            .meta("tokenizer.ggml.tokens")?
            .as_array()
            .map(|a| a.len())
            .unwrap_or(0),
    };
    let cfg = LlamaConfig {
        n_layer: u("block_count")?,
        d_model: d,
        n_head,
        n_head_kv: u("attention.head_count_kv").unwrap_or(n_head),
        head_dim: d.checked_div(n_head).unwrap_or(0),
        d_ff: u("feed_forward_length")?,
        vocab,
        rms_eps: g.meta_f64("llama.attention.layer_norm_rms_epsilon")? as f32,
        rope_base: g.meta_f64("llama.rope.freq_base").unwrap_or(10000.0) as f32,
        max_ctx: u("context_length").unwrap_or(2048),
    };
    if let Ok(rd) = u("rope.dimension_count") {
        if rd != cfg.head_dim {
            return Err(Error::Unsupported(format!(
                "partial rope ({rd} of {})",
                cfg.head_dim
            )));
        }
    }
    let mut bb = BlobBuilder::default();
    // Stack q|k|v and gate|up rows into one matrix each: one matmul (one
    // thread-pool dispatch, one pass over the activations) instead of 3 / 2.
    let mut fused = std::collections::HashSet::new();
    for l in 0..cfg.n_layer {
        for (parts, name) in [
            (&["attn_q", "attn_k", "attn_v"][..], "attn_qkv"),
            (&["ffn_gate", "ffn_up"][..], "ffn_gateup"),
        ] {
            let es: Vec<_> = parts
                .iter()
                .filter_map(|p| g.tensors.get(&format!("blk.{l}.{p}.weight")).ok())
                .collect();
            let same = es.len() == parts.len()
                && es.iter().all(|e| {
                    e.dtype == es[0].dtype && e.shape.len() == 2 && e.shape[0] == es[0].shape[0]
                });
            let id = match es.first().map(|e| e.dtype) {
                Some(DType::Gguf { id, .. }) if same && (id == GGML_Q4_1 || id == GGML_Q8_0) => id,
                _ => continue,
            };
            let mut raw = Vec::new();
            for e in &es {
                raw.extend_from_slice(&file[e.offset..e.offset + e.len]);
                fused.insert(e.name.clone());
            }
            let (k, rows) = (es[0].shape[0], es.iter().map(|e| e.shape[1]).sum::<usize>());
            let fname = format!("blk.{l}.{name}.weight");
            if id == GGML_Q4_1 {
                let p = quant::repack_gguf_q4_1(&raw, rows, k).map_err(|m| bad(&fname, m))?;
                bb.push(&fname, DType::Q4_1R, vec![rows, k], &p);
            } else {
                let p = quant::repack_gguf_q8_0(&raw, rows, k).map_err(|m| bad(&fname, m))?;
                bb.push(&fname, DType::Q8_0R, vec![rows, k], &p);
            }
        }
    }
    for e in g
        .tensors
        .entries
        .iter()
        .filter(|e| !fused.contains(&e.name))
    {
        let raw = &file[e.offset..e.offset + e.len];
        let (ne0, ne1) = match e.shape.as_slice() {
            [a] => (*a, 1),
            [a, b] => (*a, *b),
            _ => return Err(bad(&e.name, format!("unsupported rank {:?}", e.shape))),
        };
        match e.dtype {
            DType::F32 | DType::Gguf { id: GGML_F32, .. } => {
                let v: Vec<f32> = raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                bb.push_f32(&e.name, row_major(&e.shape), &v);
            }
            DType::F16 | DType::Gguf { id: GGML_F16, .. } => {
                let v: Vec<f32> = raw
                    .chunks_exact(2)
                    .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect();
                bb.push_f32(&e.name, row_major(&e.shape), &v);
            }
            DType::Gguf { id: GGML_Q4_1, .. } => {
                let p = quant::repack_gguf_q4_1(raw, ne1, ne0).map_err(|m| bad(&e.name, m))?;
                bb.push(&e.name, DType::Q4_1R, vec![ne1, ne0], &p);
            }
            DType::Gguf { id: GGML_Q8_0, .. } => {
                let p = quant::repack_gguf_q8_0(raw, ne1, ne0).map_err(|m| bad(&e.name, m))?;
                bb.push(&e.name, DType::Q8_0R, vec![ne1, ne0], &p);
            }
            other => {
                return Err(Error::Unsupported(format!(
                    "{}: tensor type {other:?}",
                    e.name
                )))
            }
        }
    }
    cfg.to_meta(&mut bb.table);
    check_builds(&bb.table, &bb.blob, |t, b| {
        crate::models::llama::Llama::from_region_with(t, b, tiny_exec()).map(|_| ())
    })?;
    Ok((bb.table, bb.blob))
}

/// GGUF dims are innermost-first; packed tables are row-major.
fn row_major(shape: &[usize]) -> Vec<usize> {
    shape.iter().rev().copied().collect()
}

/// BERT-family sentence encoder (safetensors, F32) -> packed table + blob:
/// linear weights re-quantized to Q8_0 (per 32-block scales), the rest f32.
pub fn pack_bert(file: &[u8], n_head: usize, ln_eps: f32) -> Result<(TensorTable, Vec<u8>)> {
    let t = safetensors::table(file)?;
    let get = |n: &str| safetensors::read_f32(file, &t, n);
    let (word, ws) = get("embeddings.word_embeddings.weight")?;
    let (pos, ps) = get("embeddings.position_embeddings.weight")?;
    let (typ, _) = get("embeddings.token_type_embeddings.weight")?;
    let (vocab, d) = match ws.as_slice() {
        [v, d] => (*v, *d),
        _ => return Err(bad("embeddings.word_embeddings.weight", "not 2-D")),
    };
    let max_pos = ps.first().copied().unwrap_or(0);
    let mut n_layer = 0;
    while t
        .get(&format!(
            "encoder.layer.{n_layer}.attention.self.query.weight"
        ))
        .is_ok()
    {
        n_layer += 1;
    }
    let mut bb = BlobBuilder::default();
    bb.push_f32("emb.word", vec![vocab, d], &word);
    bb.push_f32("emb.pos", vec![max_pos, d], &pos);
    bb.push_f32(
        "emb.type0",
        vec![d],
        typ.get(..d)
            .ok_or_else(|| bad("token_type_embeddings", "short"))?,
    );
    for (src, dst) in [
        ("embeddings.LayerNorm.weight", "emb.ln.w"),
        ("embeddings.LayerNorm.bias", "emb.ln.b"),
    ] {
        let (v, s) = get(src)?;
        bb.push_f32(dst, s, &v);
    }
    let mut d_ff = 0;
    for l in 0..n_layer {
        let p = format!("encoder.layer.{l}.");
        // q | k | v stacked row-wise: one matmul (one pass over the
        // activations, one thread-pool dispatch) instead of three.
        let mut qkv_w = Vec::new();
        let mut qkv_b = Vec::new();
        let mut qkv_rows = 0;
        for src in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
        ] {
            let (w, s) = get(&format!("{p}{src}.weight"))?;
            match s.as_slice() {
                [r, k] if *k == d && k % quant::QK == 0 => qkv_rows += r,
                _ => return Err(bad(&format!("{p}{src}.weight"), format!("shape {s:?}"))),
            }
            qkv_w.extend_from_slice(&w);
            qkv_b.extend_from_slice(&get(&format!("{p}{src}.bias"))?.0);
        }
        if qkv_b.len() != qkv_rows {
            return Err(bad(&format!("{p}attention.self"), "bias sizes"));
        }
        bb.push(
            &format!("l{l}.qkv.w"),
            DType::Q8_0R,
            vec![qkv_rows, d],
            &quant::quantize_q8_0(&qkv_w, qkv_rows, d),
        );
        bb.push_f32(&format!("l{l}.qkv.b"), vec![qkv_rows], &qkv_b);
        for (src, dst) in [
            ("attention.output.dense", "o"),
            ("intermediate.dense", "ff1"),
            ("output.dense", "ff2"),
        ] {
            let (w, s) = get(&format!("{p}{src}.weight"))?;
            let (rows, k) = match s.as_slice() {
                [r, k] if k % quant::QK == 0 => (*r, *k),
                _ => return Err(bad(&format!("{p}{src}.weight"), format!("shape {s:?}"))),
            };
            if dst == "ff1" {
                d_ff = rows;
            }
            bb.push(
                &format!("l{l}.{dst}.w"),
                DType::Q8_0R,
                vec![rows, k],
                &quant::quantize_q8_0(&w, rows, k),
            );
            let (b, bs) = get(&format!("{p}{src}.bias"))?;
            bb.push_f32(&format!("l{l}.{dst}.b"), bs, &b);
        }
        for (src, dst) in [
            ("attention.output.LayerNorm", "ln1"),
            ("output.LayerNorm", "ln2"),
        ] {
            let (w, s) = get(&format!("{p}{src}.weight"))?;
            bb.push_f32(&format!("l{l}.{dst}.w"), s, &w);
            let (b, s) = get(&format!("{p}{src}.bias"))?;
            bb.push_f32(&format!("l{l}.{dst}.b"), s, &b);
        }
    }
    let m = &mut bb.table.meta;
    m.insert("arch".into(), MetaValue::Str("bert".into()));
    for (k, v) in [
        ("n_layer", n_layer),
        ("d_model", d),
        ("n_head", n_head),
        ("d_ff", d_ff),
        ("vocab", vocab),
        ("max_pos", max_pos),
    ] {
        m.insert(k.into(), MetaValue::Int(v as i64));
    }
    m.insert("ln_eps".into(), MetaValue::Float(ln_eps as f64));
    check_builds(&bb.table, &bb.blob, |t, b| {
        crate::models::bert::Bert::from_region_with(t, b, tiny_exec()).map(|_| ())
    })?;
    Ok((bb.table, bb.blob))
}

/// all-MiniLM-L6-v2 hyper-parameters (not recoverable from tensor shapes).
pub fn pack_minilm(file: &[u8]) -> Result<(TensorTable, Vec<u8>)> {
    pack_bert(file, 12, 1e-12)
}

/// Firmware packer entry point: detects the format (GGUF or safetensors).
pub fn pack_for_npu(file: &[u8]) -> Result<(TensorTable, Vec<u8>)> {
    if file.starts_with(b"GGUF") {
        pack_gguf_llama(file)
    } else {
        pack_minilm(file)
    }
}

fn tiny_exec() -> std::sync::Arc<crate::compute::Exec> {
    std::sync::Arc::new(crate::compute::Exec::new(1))
}

/// Proves the blob is loadable before anyone writes it into firmware.
fn check_builds(
    t: &TensorTable,
    blob: &[u8],
    f: impl Fn(&TensorTable, &[u8]) -> Result<()>,
) -> Result<()> {
    let aligned = crate::formats::tensor::AlignedBytes::from_slice(blob);
    f(t, &aligned)
}
