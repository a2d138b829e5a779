//! The foundation's text encoder (MiniLM) as the trainer sees it: the
//! weights the device runs (Q8_0 dequantized), frozen, in candle so that
//! gradients reach the adapter's LoRA factors. Same math as the engine's
//! `Bert`: post-LN layers, exact (erf) GELU, attention over each sentence's
//! own tokens (a padding mask, since a batch pads to its longest), mean
//! pooling over the real tokens, L2 normalization.

use std::ops::Range;

use candle_core::{Device, Result, Tensor, D};
use vnpu_engine::{Bert, BertConfig, Region, TensorTable};

use crate::frozen::{matrix, Frozen};
use crate::lora::Lora;

/// `y = x W^T + b`, `W: [out, in]`.
struct Dense {
    w: Tensor,
    b: Tensor,
}

pub struct BertLayer {
    q: Dense,
    k: Dense,
    v: Dense,
    o: Dense,
    ln1: (Tensor, Tensor),
    ff1: Dense,
    ff2: Dense,
    ln2: (Tensor, Tensor),
}

pub struct FrozenBert {
    pub cfg: BertConfig,
    word: Vec<f32>,
    pos: Vec<f32>,
    type0: Vec<f32>,
    emb_ln: (Tensor, Tensor),
    pub layers: Vec<BertLayer>,
    dev: Device,
}

/// A batch of sentences padded to the longest: the additive attention mask
/// `[b, 1, 1, t]` (padding keys get nothing) and the pooling weights
/// `[b, t, 1]` (1 / length on real tokens).
pub struct Padding {
    pub mask: Tensor,
    pub pool: Tensor,
}

impl Padding {
    pub fn new(lens: &[usize], dev: &Device) -> Result<Self> {
        let t = lens.iter().copied().max().unwrap_or(0);
        let mut mask = Vec::with_capacity(lens.len() * t);
        let mut pool = Vec::with_capacity(lens.len() * t);
        for &n in lens {
            for i in 0..t {
                mask.push(if i < n { 0.0 } else { -1e9f32 });
                pool.push(if i < n { 1.0 / n as f32 } else { 0.0 });
            }
        }
        Ok(Padding {
            mask: Tensor::from_vec(mask, (lens.len(), 1, 1, t), dev)?,
            pool: Tensor::from_vec(pool, (lens.len(), t, 1), dev)?,
        })
    }
}

impl FrozenBert {
    /// The encoder in `table`/`weights` (a firmware's `text_encoder.*`).
    pub fn load(table: &TensorTable, weights: &[u8], dev: &Device) -> std::result::Result<Self, String> {
        let cfg = Bert::from_region(table, weights).map_err(|e| e.to_string())?.cfg;
        let reg = Region::new(table, weights).map_err(|e| e.to_string())?;
        let ce = |e: candle_core::Error| e.to_string();
        let d = cfg.d_model;
        let vec = |name: &str, n: usize| -> std::result::Result<Tensor, String> {
            Tensor::from_slice(reg.f32s(name, &[n]).map_err(|e| e.to_string())?, n, dev).map_err(ce)
        };
        let ln = |n: &str| Ok::<_, String>((vec(&format!("{n}.w"), d)?, vec(&format!("{n}.b"), d)?));
        let dense = |n: &str| -> std::result::Result<Dense, String> {
            let (rows, k, m) = matrix(&reg, &format!("{n}.w"))?;
            let b = reg.f32s(&format!("{n}.b"), &[rows]).map_err(|e| e.to_string())?;
            Ok(Dense { w: Tensor::from_vec(m, (rows, k), dev).map_err(ce)?, b: Tensor::from_slice(b, rows, dev).map_err(ce)? })
        };
        let mut layers = Vec::new();
        for l in 0..cfg.n_layer {
            let n = |s: &str| format!("l{l}.{s}");
            // The packer stacks q | k | v into one matrix and bias.
            let (_, k, m) = matrix(&reg, &n("qkv.w"))?;
            let b = reg.f32s(&n("qkv.b"), &[3 * d]).map_err(|e| e.to_string())?;
            let qkv = |part: usize| {
                Ok::<_, String>(Dense {
                    w: Tensor::from_slice(&m[part * d * k..(part + 1) * d * k], (d, k), dev).map_err(ce)?,
                    b: Tensor::from_slice(&b[part * d..(part + 1) * d], d, dev).map_err(ce)?,
                })
            };
            layers.push(BertLayer {
                q: qkv(0)?,
                k: qkv(1)?,
                v: qkv(2)?,
                o: dense(&n("o"))?,
                ln1: ln(&n("ln1"))?,
                ff1: dense(&n("ff1"))?,
                ff2: dense(&n("ff2"))?,
                ln2: ln(&n("ln2"))?,
            });
        }
        Ok(FrozenBert {
            word: reg.f32s("emb.word", &[cfg.vocab, d]).map_err(|e| e.to_string())?.to_vec(),
            pos: reg.f32s("emb.pos", &[cfg.max_pos, d]).map_err(|e| e.to_string())?.to_vec(),
            type0: reg.f32s("emb.type0", &[d]).map_err(|e| e.to_string())?.to_vec(),
            emb_ln: ln("emb.ln")?,
            layers,
            cfg,
            dev: dev.clone(),
        })
    }

    fn layer_norm(&self, x: &Tensor, (w, b): &(Tensor, Tensor)) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        xc.broadcast_div(&(var + f64::from(self.cfg.ln_eps))?.sqrt()?)?.broadcast_mul(w)?.broadcast_add(b)
    }

    /// The embedding layer's output `[b, t, d]` for token ids (each
    /// checked against the vocabulary and positions), padded to the longest.
    pub fn embed_tokens(&self, seqs: &[&[u32]]) -> Result<Tensor> {
        let (c, d) = (&self.cfg, self.cfg.d_model);
        let t = seqs.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut x = vec![0f32; seqs.len() * t * d];
        for (s, ids) in seqs.iter().enumerate() {
            if ids.len() > c.max_pos {
                candle_core::bail!("{} tokens > {} positions", ids.len(), c.max_pos);
            }
            for (p, &id) in ids.iter().enumerate() {
                let id = id as usize;
                if id >= c.vocab {
                    candle_core::bail!("token {id} >= vocab {}", c.vocab);
                }
                let row = &mut x[(s * t + p) * d..][..d];
                for (i, v) in row.iter_mut().enumerate() {
                    *v = self.word[id * d + i] + self.pos[p * d + i] + self.type0[i];
                }
            }
        }
        self.layer_norm(&Tensor::from_vec(x, (seqs.len(), t, d), &self.dev)?, &self.emb_ln)
    }

    fn dense(x: &Tensor, l: &Dense, lora: Option<&(Tensor, Tensor, f64)>) -> Result<Tensor> {
        Frozen::proj(x, &l.w, lora)?.broadcast_add(&l.b)
    }

    /// Runs `layers` (indices into the encoder) over `x [b, t, d]`, with
    /// `lora`'s deltas.
    pub fn run_layers(&self, x: &Tensor, pad: &Padding, layers: Range<usize>, lora: &Lora) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (h, hd) = (self.cfg.n_head, d / self.cfg.n_head);
        let heads = |y: Tensor| y.reshape((b, t, h, hd))?.transpose(1, 2)?.contiguous();
        let mut x = x.clone();
        for li in layers {
            let l = &self.layers[li];
            let q = heads(Self::dense(&x, &l.q, lora.get(li, "q"))?)?;
            let k = heads(Self::dense(&x, &l.k, lora.get(li, "k"))?)?;
            let v = heads(Self::dense(&x, &l.v, lora.get(li, "v"))?)?;
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&pad.mask)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let ctx = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, d))?;
            let o = Self::dense(&ctx, &l.o, lora.get(li, "o"))?;
            x = self.layer_norm(&(x + o)?, &l.ln1)?;
            let f = Self::dense(&x, &l.ff1, lora.get(li, "up"))?.gelu_erf()?;
            let o = Self::dense(&f, &l.ff2, lora.get(li, "down"))?;
            x = self.layer_norm(&(x + o)?, &l.ln2)?;
        }
        Ok(x)
    }

    /// The sentence embeddings `[b, d]`: mean over the real tokens, L2-normalized.
    pub fn pool(&self, h: &Tensor, pad: &Padding) -> Result<Tensor> {
        let e = h.broadcast_mul(&pad.pool)?.sum(1)?;
        let norm = e.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
        e.broadcast_div(&norm)
    }

    /// Sentence embeddings `[b, d]` of token id sequences, with `lora`.
    pub fn embed(&self, seqs: &[&[u32]], lora: &Lora) -> Result<Tensor> {
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let pad = Padding::new(&lens, &self.dev)?;
        let h = self.run_layers(&self.embed_tokens(seqs)?, &pad, 0..self.layers.len(), lora)?;
        self.pool(&h, &pad)
    }
}
