//! The foundation backbone's first layers as the trainer sees them: the
//! weights the device runs (dequantized from the firmware's packed
//! layouts), frozen, in candle so that gradients flow through them to the
//! adapter's LoRA factors and input projection. Same math as the engine:
//! RMSNorm, RoPE on adjacent pairs (GGUF's q/k order), causal GQA
//! attention, SwiGLU.

use candle_core::{Device, Result, Tensor, D};
use vnpu_engine::compute::quant::{Q4_1Mat, Q8_0Mat};
use vnpu_engine::{DType as EDType, QMat, Region};
use vnpu_engine::{LlamaConfig, TensorTable};

use crate::lora::Lora;

pub struct Layer {
    attn_norm: Tensor,
    /// `[out, in]`, as in `y = x W^T`.
    wq: Tensor,
    wk: Tensor,
    wv: Tensor,
    wo: Tensor,
    ffn_norm: Tensor,
    wgate: Tensor,
    wup: Tensor,
    wdown: Tensor,
}

pub struct Frozen {
    pub cfg: LlamaConfig,
    pub layers: Vec<Layer>,
    out_norm: Tensor,
    dev: Device,
}

/// Dequantizes a packed matrix of the region (`[rows, k]`, row-major).
pub(crate) fn matrix(reg: &Region<'_>, name: &str) -> std::result::Result<(usize, usize, Vec<f32>), String> {
    let e = reg.entry(name).map_err(|e| e.to_string())?;
    let (rows, k) = match e.shape[..] {
        [r, k] => (r, k),
        _ => return Err(format!("{name}: not a matrix")),
    };
    let mut out = vec![0f32; rows * k];
    match e.dtype {
        EDType::Q4_1R => {
            let m: Q4_1Mat<'_> = reg.q4_1(name, rows, k).map_err(|e| e.to_string())?;
            out.chunks_exact_mut(k).enumerate().for_each(|(r, o)| m.row_f32(r, o));
        }
        EDType::Q8_0R => {
            let m: Q8_0Mat<'_> = reg.q8_0(name, rows, k).map_err(|e| e.to_string())?;
            out.chunks_exact_mut(k).enumerate().for_each(|(r, o)| m.row_f32(r, o));
        }
        EDType::F32 => out.copy_from_slice(reg.f32s(name, &[rows, k]).map_err(|e| e.to_string())?),
        d => return Err(format!("{name}: dtype {d:?} not supported by the trainer")),
    }
    Ok((rows, k, out))
}

/// The backbone's token embeddings of `ids` (`[ids.len(), d_model]`), as
/// the engine looks them up for the device (the same dequantizing rows of
/// the firmware's packed table): only these rows, as the whole table is
/// most of the backbone.
pub fn token_embeddings(table: &TensorTable, weights: &[u8], ids: &[u32]) -> std::result::Result<Vec<f32>, String> {
    let cfg = LlamaConfig::from_meta(table).map_err(|e| e.to_string())?;
    let reg = Region::new(table, weights).map_err(|e| e.to_string())?;
    let embd = QMat::from_region(&reg, "token_embd.weight", cfg.vocab, cfg.d_model).map_err(|e| e.to_string())?;
    let mut out = vec![0f32; ids.len() * cfg.d_model];
    for (&id, row) in ids.iter().zip(out.chunks_exact_mut(cfg.d_model)) {
        if id as usize >= cfg.vocab {
            return Err(format!("token {id} outside the backbone's vocabulary of {}", cfg.vocab));
        }
        embd.row_f32(id as usize, row);
    }
    Ok(out)
}

/// Rows `r0..r0+n` of a `[rows, k]` matrix, as a tensor.
fn rows(m: &(usize, usize, Vec<f32>), r0: usize, n: usize, dev: &Device) -> Result<Tensor> {
    Tensor::from_slice(&m.2[r0 * m.1..(r0 + n) * m.1], (n, m.1), dev)
}

impl Frozen {
    /// The first `n_layers` layers of the backbone in `table`/`weights`
    /// (a firmware's `backbone.table` / `backbone.weights`).
    pub fn load(table: &TensorTable, weights: &[u8], n_layers: usize, dev: &Device) -> std::result::Result<Self, String> {
        let cfg = LlamaConfig::from_meta(table).map_err(|e| e.to_string())?;
        let reg = Region::new(table, weights).map_err(|e| e.to_string())?;
        let (d, kvd, ff) = (cfg.d_model, cfg.kv_dim(), cfg.d_ff);
        let ce = |e: candle_core::Error| e.to_string();
        let vec = |name: &str, n: usize| -> std::result::Result<Tensor, String> {
            Tensor::from_slice(reg.f32s(name, &[n]).map_err(|e| e.to_string())?, n, dev).map_err(ce)
        };
        let mut layers = Vec::new();
        for l in 0..n_layers.min(cfg.n_layer) {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            // Fused q|k|v and gate|up when the packer stacked them.
            let (wq, wk, wv) = if reg.entry(&n("attn_qkv")).is_ok() {
                let m = matrix(&reg, &n("attn_qkv"))?;
                (rows(&m, 0, d, dev).map_err(ce)?, rows(&m, d, kvd, dev).map_err(ce)?, rows(&m, d + kvd, kvd, dev).map_err(ce)?)
            } else {
                let one = |s: &str, r| matrix(&reg, &n(s)).and_then(|m| rows(&m, 0, r, dev).map_err(ce));
                (one("attn_q", d)?, one("attn_k", kvd)?, one("attn_v", kvd)?)
            };
            let (wgate, wup) = if reg.entry(&n("ffn_gateup")).is_ok() {
                let m = matrix(&reg, &n("ffn_gateup"))?;
                (rows(&m, 0, ff, dev).map_err(ce)?, rows(&m, ff, ff, dev).map_err(ce)?)
            } else {
                let one = |s: &str| matrix(&reg, &n(s)).and_then(|m| rows(&m, 0, ff, dev).map_err(ce));
                (one("ffn_gate")?, one("ffn_up")?)
            };
            let full = |s: &str| matrix(&reg, &n(s)).and_then(|m| rows(&m, 0, m.0, dev).map_err(ce));
            layers.push(Layer {
                attn_norm: vec(&n("attn_norm"), d)?,
                wq,
                wk,
                wv,
                wo: full("attn_output")?,
                ffn_norm: vec(&n("ffn_norm"), d)?,
                wgate,
                wup,
                wdown: full("ffn_down")?,
            });
        }
        let out_norm = vec("output_norm.weight", d)?;
        Ok(Frozen { cfg, layers, out_norm, dev: dev.clone() })
    }

    fn rms_norm(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        let ms = x.sqr()?.mean_keepdim(D::Minus1)?;
        x.broadcast_div(&(ms + f64::from(self.cfg.rms_eps))?.sqrt()?)?.broadcast_mul(w)
    }

    /// `x [b, t, in] W^T` plus the LoRA delta when there is one, as 2-D
    /// matmuls (candle's batched broadcast path is several times slower).
    pub(crate) fn proj(x: &Tensor, w: &Tensor, lora: Option<&(Tensor, Tensor, f64)>) -> Result<Tensor> {
        let (b, t, i) = x.dims3()?;
        let x2 = x.reshape((b * t, i))?;
        let mut y = x2.matmul(&w.t()?)?;
        if let Some((la, lb, scale)) = lora {
            y = (y + (x2.matmul(&la.t()?)?.matmul(&lb.t()?)? * *scale)?)?;
        }
        y.reshape((b, t, w.dim(0)?))
    }

    /// RoPE on `[b, t, heads, hd]`, pairs (2i, 2i+1) rotated by position.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (b, t, h, hd) = x.dims4()?;
        let x = x.reshape((b, t, h, hd / 2, 2))?;
        let a = x.narrow(4, 0, 1)?.squeeze(4)?;
        let c = x.narrow(4, 1, 1)?.squeeze(4)?;
        // cos/sin: [t, hd/2] -> [1, t, 1, hd/2]
        let (cos, sin) = (cos.unsqueeze(0)?.unsqueeze(2)?, sin.unsqueeze(0)?.unsqueeze(2)?);
        let a2 = (a.broadcast_mul(&cos)? - c.broadcast_mul(&sin)?)?;
        let c2 = (a.broadcast_mul(&sin)? + c.broadcast_mul(&cos)?)?;
        Tensor::stack(&[a2, c2], 4)?.reshape((b, t, h, hd))
    }

    /// The engine's RoPE tables for positions `0..t`, as tensors `[t, hd/2]`.
    fn rope_tables(&self, t: usize) -> Result<(Tensor, Tensor)> {
        let half = self.cfg.head_dim / 2;
        let (cos, sin) = self.cfg.rope_tables(0, t);
        Ok((Tensor::from_vec(cos, (t, half), &self.dev)?, Tensor::from_vec(sin, (t, half), &self.dev)?))
    }

    /// Final-norm hidden states `[b, t, d]` of embeddings `x [b, t, d]`
    /// after the loaded layers, with `lora`'s deltas.
    pub fn forward(&self, x: &Tensor, lora: &Lora) -> Result<Tensor> {
        let c = &self.cfg;
        let (b, t, _) = x.dims3()?;
        let (h, hk, hd) = (c.n_head, c.n_head_kv, c.head_dim);
        let (cos, sin) = self.rope_tables(t)?;
        let mask: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 }).collect();
        let mask = Tensor::from_vec(mask, (t, t), &self.dev)?;
        let mut x = x.clone();
        for (li, l) in self.layers.iter().enumerate() {
            let hn = self.rms_norm(&x, &l.attn_norm)?;
            let q = Self::proj(&hn, &l.wq, lora.get(li, "q"))?.reshape((b, t, h, hd))?;
            let k = Self::proj(&hn, &l.wk, lora.get(li, "k"))?.reshape((b, t, hk, hd))?;
            let v = Self::proj(&hn, &l.wv, lora.get(li, "v"))?.reshape((b, t, hk, hd))?;
            let q = self.rope(&q, &cos, &sin)?.transpose(1, 2)?.contiguous()?; // [b, h, t, hd]
            let k = self.rope(&k, &cos, &sin)?.transpose(1, 2)?.contiguous()?;
            let v = v.transpose(1, 2)?.contiguous()?;
            // Grouped-query: each KV head serves h / hk query heads.
            let rep = h / hk;
            let k = Tensor::cat(&vec![k.unsqueeze(2)?; rep], 2)?.reshape((b, h, t, hd))?;
            let v = Tensor::cat(&vec![v.unsqueeze(2)?; rep], 2)?.reshape((b, h, t, hd))?;
            let att = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?.broadcast_add(&mask)?;
            let att = candle_nn::ops::softmax_last_dim(&att)?;
            let o = att.matmul(&v)?.transpose(1, 2)?.reshape((b, t, h * hd))?;
            x = (x + Self::proj(&o, &l.wo, lora.get(li, "o"))?)?;
            let hn = self.rms_norm(&x, &l.ffn_norm)?;
            let g = Self::proj(&hn, &l.wgate, lora.get(li, "gate"))?;
            let u = Self::proj(&hn, &l.wup, lora.get(li, "up"))?;
            let m = (candle_nn::ops::silu(&g)? * u)?;
            x = (x + Self::proj(&m, &l.wdown, lora.get(li, "down"))?)?;
        }
        self.rms_norm(&x, &self.out_norm)
    }
}

#[cfg(test)]
mod tests {
    use vnpu_engine::models::synthetic::tiny_llama;
    use vnpu_engine::Llama;

    #[test]
    fn token_rows_are_the_engines() {
        let t = tiny_llama(5);
        let llama = Llama::from_region(&t.table, &t.blob).unwrap();
        let ids = [3, 0, 95, 3, 41];
        let ours = super::token_embeddings(&t.table, &t.blob, &ids).unwrap();
        let engine = llama.token_embeddings(&ids).unwrap();
        assert!(ours.iter().zip(&engine).all(|(a, b)| a.to_bits() == b.to_bits()) && ours.len() == engine.len());
        assert!(super::token_embeddings(&t.table, &t.blob, &[96]).is_err());
    }
}
