//! Tiny random models with the real architectures, for fast unit tests,
//! plus a plain-f32 reference forward of the tiny LLaMA (dequantized
//! weights, no activation quantization) to check the integer engine.

use crate::compute::quant::{self, Q4_1Mat, Q8_0Mat};
use crate::formats::tensor::{AlignedBytes, BlobBuilder, DType, TensorTable};
use crate::models::adapter::Proj;
use crate::models::llama::LlamaConfig;
use std::collections::HashMap;

/// xorshift64* — deterministic, dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.normal() * scale).collect()
    }
}

pub fn tiny_llama_config() -> LlamaConfig {
    LlamaConfig {
        n_layer: 2,
        d_model: 64,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 16,
        d_ff: 128,
        vocab: 96,
        rms_eps: 1e-5,
        rope_base: 10000.0,
        max_ctx: 64,
    }
}

/// Packed tiny LLaMA plus its dequantized f32 weights.
pub struct TinyLlama {
    pub table: TensorTable,
    pub blob: AlignedBytes,
    pub cfg: LlamaConfig,
    /// name -> (rows, k, row-major f32) for every matrix; norms under their names.
    pub f32w: HashMap<String, (usize, usize, Vec<f32>)>,
}

pub fn tiny_llama(seed: u64) -> TinyLlama {
    tiny_llama_with(seed, false)
}

/// `fused`: store q|k|v and gate|up stacked, as the GGUF packer does.
pub fn tiny_llama_with(seed: u64, fused: bool) -> TinyLlama {
    let cfg = tiny_llama_config();
    let mut rng = Rng::new(seed);
    let mut bb = BlobBuilder::default();
    let mut f32w = HashMap::new();
    let (d, kvd, ff) = (cfg.d_model, cfg.kv_dim(), cfg.d_ff);
    let q4 = |bb: &mut BlobBuilder,
              f32w: &mut HashMap<_, _>,
              name: String,
              rows: usize,
              k: usize,
              rng: &mut Rng| {
        let w = rng.vec(rows * k, 1.0 / (k as f32).sqrt());
        let p = quant::quantize_q4_1(&w, rows, k);
        let al = AlignedBytes::from_slice(&p);
        let m = Q4_1Mat::from_bytes(&al, rows, k).expect("fresh pack");
        let mut deq = vec![0f32; rows * k];
        (0..rows).for_each(|r| m.row_f32(r, &mut deq[r * k..(r + 1) * k]));
        bb.push(&name, DType::Q4_1R, vec![rows, k], &p);
        f32w.insert(name, (rows, k, deq));
    };
    let norm = |bb: &mut BlobBuilder, f32w: &mut HashMap<_, _>, name: String, rng: &mut Rng| {
        let w: Vec<f32> = (0..d).map(|_| 1.0 + 0.1 * rng.normal()).collect();
        bb.push_f32(&name, vec![d], &w);
        f32w.insert(name, (1, d, w));
    };
    let emb = rng.vec(cfg.vocab * d, 1.0);
    let p = quant::quantize_q8_0(&emb, cfg.vocab, d);
    let al = AlignedBytes::from_slice(&p);
    let m = Q8_0Mat::from_bytes(&al, cfg.vocab, d).expect("fresh pack");
    let mut deq = vec![0f32; cfg.vocab * d];
    (0..cfg.vocab).for_each(|r| m.row_f32(r, &mut deq[r * d..(r + 1) * d]));
    bb.push("token_embd.weight", DType::Q8_0R, vec![cfg.vocab, d], &p);
    f32w.insert("token_embd.weight".to_string(), (cfg.vocab, d, deq));
    for l in 0..cfg.n_layer {
        let n = |s: &str| format!("blk.{l}.{s}.weight");
        norm(&mut bb, &mut f32w, n("attn_norm"), &mut rng);
        q4(&mut bb, &mut f32w, n("attn_q"), d, d, &mut rng);
        q4(&mut bb, &mut f32w, n("attn_k"), kvd, d, &mut rng);
        q4(&mut bb, &mut f32w, n("attn_v"), kvd, d, &mut rng);
        q4(&mut bb, &mut f32w, n("attn_output"), d, d, &mut rng);
        norm(&mut bb, &mut f32w, n("ffn_norm"), &mut rng);
        q4(&mut bb, &mut f32w, n("ffn_gate"), ff, d, &mut rng);
        q4(&mut bb, &mut f32w, n("ffn_up"), ff, d, &mut rng);
        q4(&mut bb, &mut f32w, n("ffn_down"), d, ff, &mut rng);
    }
    norm(&mut bb, &mut f32w, "output_norm.weight".into(), &mut rng);
    cfg.to_meta(&mut bb.table);
    if fused {
        bb = restack(&bb, &cfg);
    }
    TinyLlama {
        table: bb.table,
        blob: AlignedBytes::from_slice(&bb.blob),
        cfg,
        f32w,
    }
}

/// Rewrites a split tiny model into the fused layout: the parts' rows,
/// stacked and re-packed into panels.
fn restack(src: &BlobBuilder, cfg: &LlamaConfig) -> BlobBuilder {
    let mut out = BlobBuilder {
        table: TensorTable {
            meta: src.table.meta.clone(),
            ..Default::default()
        },
        blob: Vec::new(),
    };
    let raw = |name: &str| {
        let e = src.table.get(name).expect("tensor");
        (
            &src.blob[e.offset..e.offset + e.len],
            e.shape[0],
            e.shape[1],
        )
    };
    let mut skip = std::collections::HashSet::new();
    for l in 0..cfg.n_layer {
        for (parts, fname) in [
            (&["attn_q", "attn_k", "attn_v"][..], "attn_qkv"),
            (&["ffn_gate", "ffn_up"][..], "ffn_gateup"),
        ] {
            let mut mats = Vec::new();
            for p in parts {
                let name = format!("blk.{l}.{p}.weight");
                let (b, r, kk) = raw(&name);
                mats.push((AlignedBytes::from_slice(b), r, kk));
                skip.insert(name);
            }
            let views: Vec<Q4_1Mat> = mats
                .iter()
                .map(|(b, r, kk)| Q4_1Mat::from_bytes(b, *r, *kk).expect("packed"))
                .collect();
            let (rows, k) = (views.iter().map(|m| m.rows).sum(), views[0].k);
            let qs = quant::pack_q4_1(rows, k, |r, b| {
                let mut r = r;
                let mut i = 0;
                while r >= views[i].rows {
                    r -= views[i].rows;
                    i += 1;
                }
                views[i].block(r, b)
            });
            out.push(
                &format!("blk.{l}.{fname}.weight"),
                DType::Q4_1R,
                vec![rows, k],
                &qs,
            );
        }
    }
    for e in src.table.entries.iter().filter(|e| !skip.contains(&e.name)) {
        out.push(
            &e.name,
            e.dtype,
            e.shape.clone(),
            &src.blob[e.offset..e.offset + e.len],
        );
    }
    out
}

pub fn proj_name(p: Proj) -> &'static str {
    match p {
        Proj::Q => "attn_q",
        Proj::K => "attn_k",
        Proj::V => "attn_v",
        Proj::O => "attn_output",
        Proj::Gate => "ffn_gate",
        Proj::Up => "ffn_up",
        Proj::Down => "ffn_down",
    }
}

impl TinyLlama {
    /// f32 reference: all-token final hidden states and last-token logits.
    /// `deltas` are dense f32 matrices merged into the named base weights.
    pub fn reference(
        &self,
        tokens: &[u32],
        deltas: &HashMap<(usize, Proj), Vec<f32>>,
    ) -> (Vec<f32>, Vec<f32>) {
        let c = &self.cfg;
        let (d, hd, kvd) = (c.d_model, c.head_dim, c.kv_dim());
        let n = tokens.len();
        let w = |name: &str| &self.f32w[name];
        let lin = |x: &[f32], l: usize, p: Proj| -> Vec<f32> {
            let (rows, k, m) = w(&format!("blk.{l}.{}.weight", proj_name(p)));
            let mut m = m.clone();
            if let Some(dl) = deltas.get(&(l, p)) {
                m.iter_mut().zip(dl).for_each(|(a, b)| *a += b);
            }
            let nt = x.len() / k;
            let mut y = vec![0f32; nt * rows];
            for t in 0..nt {
                for r in 0..*rows {
                    y[t * rows + r] = (0..*k).map(|i| m[r * k + i] * x[t * k + i]).sum();
                }
            }
            y
        };
        let rms = |x: &[f32], g: &[f32]| -> Vec<f32> {
            x.chunks(d)
                .flat_map(|r| {
                    let inv =
                        1.0 / (r.iter().map(|v| v * v).sum::<f32>() / d as f32 + c.rms_eps).sqrt();
                    r.iter()
                        .zip(g)
                        .map(move |(v, g)| v * inv * g)
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let rope = |x: &mut [f32], heads: usize| {
            for t in 0..n {
                for h in 0..heads {
                    for i in 0..hd / 2 {
                        let th = t as f64 * (c.rope_base as f64).powf(-2.0 * i as f64 / hd as f64);
                        let (s, co) = (th.sin() as f32, th.cos() as f32);
                        let o = (t * heads + h) * hd + 2 * i;
                        let (a, b) = (x[o], x[o + 1]);
                        x[o] = a * co - b * s;
                        x[o + 1] = a * s + b * co;
                    }
                }
            }
        };
        let emb = &w("token_embd.weight").2;
        let mut x: Vec<f32> = tokens
            .iter()
            .flat_map(|&t| emb[t as usize * d..(t as usize + 1) * d].to_vec())
            .collect();
        for l in 0..c.n_layer {
            let h = rms(&x, &w(&format!("blk.{l}.attn_norm.weight")).2);
            let mut q = lin(&h, l, Proj::Q);
            let mut k = lin(&h, l, Proj::K);
            let v = lin(&h, l, Proj::V);
            rope(&mut q, c.n_head);
            rope(&mut k, c.n_head_kv);
            let mut att = vec![0f32; n * d];
            for t in 0..n {
                for hh in 0..c.n_head {
                    let g = hh / (c.n_head / c.n_head_kv);
                    let mut sc: Vec<f32> = (0..=t)
                        .map(|j| {
                            (0..hd)
                                .map(|i| q[t * d + hh * hd + i] * k[j * kvd + g * hd + i])
                                .sum::<f32>()
                                / (hd as f32).sqrt()
                        })
                        .collect();
                    crate::compute::norm::softmax(&mut sc);
                    for (j, p) in sc.iter().enumerate() {
                        for i in 0..hd {
                            att[t * d + hh * hd + i] += p * v[j * kvd + g * hd + i];
                        }
                    }
                }
            }
            let o = lin(&att, l, Proj::O);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let h = rms(&x, &w(&format!("blk.{l}.ffn_norm.weight")).2);
            let g = lin(&h, l, Proj::Gate);
            let u = lin(&h, l, Proj::Up);
            let a: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| crate::compute::kernels::scalar::silu(*g) * u)
                .collect();
            let o = lin(&a, l, Proj::Down);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
        }
        let x = rms(&x, &w("output_norm.weight").2);
        let last = &x[(n - 1) * d..];
        let logits = (0..c.vocab)
            .map(|r| (0..d).map(|i| emb[r * d + i] * last[i]).sum())
            .collect();
        (x, logits)
    }
}

/// Packed tiny BERT (2 layers, d=64, 4 heads) with f32 weights stored in a
/// safetensors file first, so the real packer path is exercised.
pub fn tiny_bert_safetensors(seed: u64) -> Vec<u8> {
    use safetensors::tensor::{Dtype, TensorView};
    let mut rng = Rng::new(seed);
    let (d, ff, vocab, maxp) = (64usize, 128usize, 50usize, 32usize);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32, offset: f32, rng: &mut Rng| {
        let n = shape.iter().product();
        let v = (0..n).map(|_| offset + scale * rng.normal()).collect();
        tensors.push((name, shape, v));
    };
    add(
        "embeddings.word_embeddings.weight".into(),
        vec![vocab, d],
        0.5,
        0.0,
        &mut rng,
    );
    add(
        "embeddings.position_embeddings.weight".into(),
        vec![maxp, d],
        0.1,
        0.0,
        &mut rng,
    );
    add(
        "embeddings.token_type_embeddings.weight".into(),
        vec![2, d],
        0.1,
        0.0,
        &mut rng,
    );
    add(
        "embeddings.LayerNorm.weight".into(),
        vec![d],
        0.1,
        1.0,
        &mut rng,
    );
    add(
        "embeddings.LayerNorm.bias".into(),
        vec![d],
        0.1,
        0.0,
        &mut rng,
    );
    for l in 0..2 {
        let p = format!("encoder.layer.{l}.");
        for (n, rows, k) in [
            ("attention.self.query", d, d),
            ("attention.self.key", d, d),
            ("attention.self.value", d, d),
            ("attention.output.dense", d, d),
            ("intermediate.dense", ff, d),
            ("output.dense", d, ff),
        ] {
            add(
                format!("{p}{n}.weight"),
                vec![rows, k],
                1.0 / (k as f32).sqrt(),
                0.0,
                &mut rng,
            );
            add(format!("{p}{n}.bias"), vec![rows], 0.05, 0.0, &mut rng);
        }
        for n in ["attention.output.LayerNorm", "output.LayerNorm"] {
            add(format!("{p}{n}.weight"), vec![d], 0.1, 1.0, &mut rng);
            add(format!("{p}{n}.bias"), vec![d], 0.1, 0.0, &mut rng);
        }
    }
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(n, s, v)| (n, s, bytemuck::cast_slice::<f32, u8>(&v).to_vec()))
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                TensorView::new(Dtype::F32, s.clone(), b).expect("consistent view"),
            )
        })
        .collect();
    safetensors::serialize(views, None).expect("serialize")
}

fn put_str(o: &mut Vec<u8>, s: &str) {
    o.extend_from_slice(&(s.len() as u64).to_le_bytes());
    o.extend_from_slice(s.as_bytes());
}

/// A tiny GGUF v3 file: a u32 `a.n` = 7, a string array `a.list` =
/// ["x", "yz"], and one f32 tensor `w` of shape [4, 2] holding 0..8.
pub fn tiny_gguf() -> Vec<u8> {
    let mut o = Vec::new();
    o.extend_from_slice(b"GGUF");
    o.extend_from_slice(&3u32.to_le_bytes());
    o.extend_from_slice(&1u64.to_le_bytes());
    o.extend_from_slice(&2u64.to_le_bytes());
    put_str(&mut o, "a.n");
    o.extend_from_slice(&4u32.to_le_bytes());
    o.extend_from_slice(&7u32.to_le_bytes());
    put_str(&mut o, "a.list");
    o.extend_from_slice(&9u32.to_le_bytes());
    o.extend_from_slice(&8u32.to_le_bytes());
    o.extend_from_slice(&2u64.to_le_bytes());
    put_str(&mut o, "x");
    put_str(&mut o, "yz");
    put_str(&mut o, "w");
    o.extend_from_slice(&2u32.to_le_bytes());
    o.extend_from_slice(&4u64.to_le_bytes());
    o.extend_from_slice(&2u64.to_le_bytes());
    o.extend_from_slice(&0u32.to_le_bytes());
    o.extend_from_slice(&0u64.to_le_bytes());
    while o.len() % 32 != 0 {
        o.push(0);
    }
    for i in 0..8 {
        o.extend_from_slice(&(i as f32).to_le_bytes());
    }
    o
}
