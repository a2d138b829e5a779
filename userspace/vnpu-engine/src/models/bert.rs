//! BERT sentence encoder (all-MiniLM-L6-v2): Q8_0 linear layers, f32
//! LayerNorm/softmax/GELU, mean pooling + L2 normalization as
//! sentence-transformers does. A batch is run as one stacked matrix through
//! every linear layer (no padding); attention stays per sequence. A batch
//! may run one adapter's LoRA on Q, K, V (the parts of the stacked qkv),
//! O, Up (ff1) and Down (ff2).

use crate::compute::kernels;
use crate::compute::lora::apply_lora;
use crate::compute::norm::{layer_norm_apply, layer_norm_row, layer_norm_stats};
use crate::compute::quant::ActQ8;
use crate::compute::rows::{ActRows, RowSplit, Rows};
use crate::compute::{Exec, QMat};
use crate::error::{Error, Result};
use crate::formats::tensor::{Region, TensorTable};
use crate::models::adapter::{Adapter, Proj};
use std::sync::Arc;

#[derive(Clone, Debug, PartialEq)]
pub struct BertConfig {
    pub n_layer: usize,
    pub d_model: usize,
    pub n_head: usize,
    pub d_ff: usize,
    pub vocab: usize,
    pub max_pos: usize,
    pub ln_eps: f32,
}

impl BertConfig {
    /// (input, output) width of a projection a LoRA may adapt; BERT has no
    /// gate.
    pub fn proj_dims(&self, p: Proj) -> Option<(usize, usize)> {
        let (d, ff) = (self.d_model, self.d_ff);
        match p {
            Proj::Q | Proj::K | Proj::V | Proj::O => Some((d, d)),
            Proj::Up => Some((d, ff)),
            Proj::Down => Some((ff, d)),
            Proj::Gate => None,
        }
    }
}

struct Dense<'a> {
    w: QMat<'a>,
    b: &'a [f32],
}

struct Layer<'a> {
    /// q | k | v stacked `[3 d, d]`.
    qkv: Dense<'a>,
    o: Dense<'a>,
    ln1: (&'a [f32], &'a [f32]),
    ff1: Dense<'a>,
    ff2: Dense<'a>,
    ln2: (&'a [f32], &'a [f32]),
}

pub struct Bert<'a> {
    pub cfg: BertConfig,
    word: &'a [f32],
    pos: &'a [f32],
    type0: &'a [f32],
    emb_ln: (&'a [f32], &'a [f32]),
    layers: Vec<Layer<'a>>,
    exec: Arc<Exec>,
    /// Activation buffers reused across jobs: a 32-sentence batch needs
    /// ~20 MB, and fresh allocations cost page faults on every call.
    scratch: std::sync::Mutex<Vec<Scratch>>,
}

#[derive(Default)]
struct Scratch {
    act: ActQ8,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    o: Vec<f32>,
    f: Vec<f32>,
}

impl<'a> Bert<'a> {
    pub fn from_region(table: &'a TensorTable, bytes: &'a [u8]) -> Result<Bert<'a>> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        Self::from_region_with(table, bytes, Arc::new(Exec::new(threads)))
    }

    pub fn from_region_with(
        table: &'a TensorTable,
        bytes: &'a [u8],
        exec: Arc<Exec>,
    ) -> Result<Bert<'a>> {
        if table.meta_str("arch")? != "bert" {
            return Err(Error::Meta("arch != bert".into()));
        }
        let cfg = BertConfig {
            n_layer: table.meta_usize("n_layer")?,
            d_model: table.meta_usize("d_model")?,
            n_head: table.meta_usize("n_head")?,
            d_ff: table.meta_usize("d_ff")?,
            vocab: table.meta_usize("vocab")?,
            max_pos: table.meta_usize("max_pos")?,
            ln_eps: table.meta_f64("ln_eps")? as f32,
        };
        if cfg.n_head == 0
            || cfg.d_model % cfg.n_head != 0
            || cfg.d_model % 32 != 0
            || cfg.d_ff % 32 != 0
        {
            return Err(Error::Meta(format!("inconsistent bert config {cfg:?}")));
        }
        let reg = Region::new(table, bytes)?;
        let (d, ff) = (cfg.d_model, cfg.d_ff);
        let dense = |n: &str, rows, k| -> Result<Dense<'a>> {
            Ok(Dense {
                w: QMat::from_region(&reg, &format!("{n}.w"), rows, k)?,
                b: reg.f32s(&format!("{n}.b"), &[rows])?,
            })
        };
        let ln = |n: &str| -> Result<(&'a [f32], &'a [f32])> {
            Ok((
                reg.f32s(&format!("{n}.w"), &[d])?,
                reg.f32s(&format!("{n}.b"), &[d])?,
            ))
        };
        let mut layers = Vec::new();
        for l in 0..cfg.n_layer {
            layers.push(Layer {
                qkv: dense(&format!("l{l}.qkv"), 3 * d, d)?,
                o: dense(&format!("l{l}.o"), d, d)?,
                ln1: ln(&format!("l{l}.ln1"))?,
                ff1: dense(&format!("l{l}.ff1"), ff, d)?,
                ff2: dense(&format!("l{l}.ff2"), d, ff)?,
                ln2: ln(&format!("l{l}.ln2"))?,
            });
        }
        Ok(Bert {
            word: reg.f32s("emb.word", &[cfg.vocab, d])?,
            pos: reg.f32s("emb.pos", &[cfg.max_pos, d])?,
            type0: reg.f32s("emb.type0", &[d])?,
            emb_ln: ln("emb.ln")?,
            layers,
            cfg,
            exec,
            scratch: Default::default(),
        })
    }

    pub fn set_exec(&mut self, exec: Arc<Exec>) {
        self.exec = exec;
    }

    /// Sentence embedding (mean-pooled, L2-normalized) of one token sequence
    /// (ids including [CLS]/[SEP], as the tokenizer produces them).
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>> {
        Ok(self.embed_batch(&[ids])?.remove(0))
    }

    pub fn embed_batch(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        self.embed_batch_with(seqs, None)
    }

    /// As [`Bert::embed_batch`], every sequence with `adapter`'s LoRA.
    pub fn embed_batch_with(
        &self,
        seqs: &[&[u32]],
        adapter: Option<&dyn Adapter>,
    ) -> Result<Vec<Vec<f32>>> {
        let h = self.encode_batch_with(seqs, adapter)?;
        let d = self.cfg.d_model;
        let mut out = Vec::with_capacity(seqs.len());
        let mut start = 0;
        for s in seqs {
            let mut e = vec![0f32; d];
            for t in 0..s.len() {
                e.iter_mut()
                    .zip(&h[(start + t) * d..])
                    .for_each(|(a, b)| *a += b);
            }
            let inv_n = 1.0 / s.len() as f32;
            e.iter_mut().for_each(|v| *v *= inv_n);
            let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            e.iter_mut().for_each(|v| *v /= norm);
            out.push(e);
            start += s.len();
        }
        Ok(out)
    }

    /// Last-layer token states of all sequences, stacked `[sum(len), d]`.
    pub fn encode_batch(&self, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        self.encode_batch_with(seqs, None)
    }

    /// As [`Bert::encode_batch`], every sequence with `adapter`'s LoRA.
    pub fn encode_batch_with(
        &self,
        seqs: &[&[u32]],
        adapter: Option<&dyn Adapter>,
    ) -> Result<Vec<f32>> {
        let c = &self.cfg;
        let d = c.d_model;
        if seqs.is_empty() || seqs.iter().any(|s| s.is_empty() || s.len() > c.max_pos) {
            return Err(Error::Input(format!(
                "each sequence needs 1..={} tokens",
                c.max_pos
            )));
        }
        let n: usize = seqs.iter().map(|s| s.len()).sum();
        let mut x = vec![0f32; n * d];
        let mut row = 0;
        for s in seqs {
            for (p, &id) in s.iter().enumerate() {
                let id = id as usize;
                if id >= c.vocab {
                    return Err(Error::Input(format!("token {id} >= vocab {}", c.vocab)));
                }
                let xr = &mut x[row * d..(row + 1) * d];
                for (i, v) in xr.iter_mut().enumerate() {
                    *v = self.word[id * d + i] + self.pos[p * d + i] + self.type0[i];
                }
                row += 1;
            }
        }
        let starts: Vec<(usize, usize)> = seqs
            .iter()
            .scan(0, |st, s| {
                let r = (*st, s.len());
                *st += s.len();
                Some(r)
            })
            .collect();
        let (exec, isa, eps, ff) = (&*self.exec, self.exec.isa, c.ln_eps, c.d_ff);
        let mut sc = self
            .scratch
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default();
        let Scratch {
            act,
            qkv,
            ctx,
            o,
            f,
        } = &mut sc;
        for (buf, len) in [
            (&mut *qkv, n * 3 * d),
            (&mut *ctx, n * d),
            (&mut *o, n * d),
            (&mut *f, n * ff),
        ] {
            buf.clear();
            buf.resize(len, 0.0);
        }
        let (qkv, ctx, o, f) = (&mut qkv[..], &mut ctx[..], &mut o[..], &mut f[..]);
        // Row passes between the matmuls run over token ranges in parallel,
        // each task on its own rows of the buffers.
        // x = LN(x [+ o + bias]) ; act = q8(x).
        let ln_quant = |act: &mut ActQ8,
                        x: &mut [f32],
                        o: &[f32],
                        ln: (&[f32], &[f32]),
                        res: Option<&[f32]>| {
            let residual = |t: usize, xr: &mut [f32]| {
                if let Some(b) = res {
                    for ((a, &r), &bb) in xr.iter_mut().zip(&o[t * d..][..d]).zip(b) {
                        *a += r + bb;
                    }
                }
            };
            let rows = (Rows::new(x, d), ActRows::new(act, n, d));
            // Four rows at a time: their LayerNorm sums run side by side.
            exec.par_row_groups_mut(n, rows, 4, |t0, m, part| {
                if m < 4 {
                    let mut part = part;
                    for t in t0..t0 + m {
                        let ((xr, ar), rest) = part.split_first_row();
                        residual(t, xr);
                        layer_norm_row(xr, ln.0, ln.1, eps);
                        ar.quantize(isa, xr);
                        part = rest;
                    }
                    return;
                }
                let ((x0, a0), p) = part.split_first_row();
                let ((x1, a1), p) = p.split_first_row();
                let ((x2, a2), p) = p.split_first_row();
                let ((x3, a3), _) = p.split_first_row();
                let mut xs = [x0, x1, x2, x3];
                for (i, xr) in xs.iter_mut().enumerate() {
                    residual(t0 + i, xr);
                }
                let st = layer_norm_stats([&*xs[0], &*xs[1], &*xs[2], &*xs[3]], eps);
                for ((xr, ar), st) in xs.into_iter().zip([a0, a1, a2, a3]).zip(st) {
                    layer_norm_apply(xr, st, ln.0, ln.1);
                    ar.quantize(isa, xr);
                }
            });
        };
        ln_quant(act, &mut x, o, self.emb_ln, None);
        // LoRA deltas `(proj, first column, width)` of layer `li` on input
        // `xin` (`ldx` wide rows) into `y` (`ldy` wide rows), in f32.
        let lora = |li: usize,
                    parts: &[(Proj, usize, usize)],
                    xin: &[f32],
                    ldx: usize,
                    y: &mut [f32],
                    ldy: usize|
         -> Result<()> {
            let Some(a) = adapter else { return Ok(()) };
            for &(p, c0, od) in parts {
                if let Some(l) = a.lora(li, p) {
                    apply_lora(&l, xin, ldx, n, ldx, &mut y[c0..], ldy, od)?;
                }
            }
            Ok(())
        };
        for (li, l) in self.layers.iter().enumerate() {
            exec.matmul(&l.qkv.w, act, qkv);
            let qkv_parts = [(Proj::Q, 0, d), (Proj::K, d, d), (Proj::V, 2 * d, d)];
            lora(li, &qkv_parts, &x, d, qkv, 3 * d)?;
            exec.par_rows_mut(n, Rows::new(&mut *qkv, 3 * d), |_, r| {
                r.iter_mut().zip(l.qkv.b).for_each(|(a, b)| *a += b);
            });
            self.attention(qkv, &starts, ctx);
            let ctx: &[f32] = ctx;
            exec.par_rows_mut(n, ActRows::new(act, n, d), |t, ar| {
                ar.quantize(isa, &ctx[t * d..(t + 1) * d])
            });
            exec.matmul(&l.o.w, act, o);
            lora(li, &[(Proj::O, 0, d)], ctx, d, o, d)?;
            ln_quant(act, &mut x, o, l.ln1, Some(l.o.b));
            exec.matmul(&l.ff1.w, act, f);
            lora(li, &[(Proj::Up, 0, ff)], &x, d, f, ff)?;
            let rows = (Rows::new(&mut *f, ff), ActRows::new(act, n, ff));
            exec.par_rows_mut(n, rows, |_, (r, ar)| {
                r.iter_mut().zip(l.ff1.b).for_each(|(a, b)| *a += b);
                kernels::gelu(isa, r);
                ar.quantize(isa, r);
            });
            exec.matmul(&l.ff2.w, act, o);
            lora(li, &[(Proj::Down, 0, d)], f, ff, o, d)?;
            // The last quantization feeds the next layer (unused after the last).
            ln_quant(act, &mut x, o, l.ln2, Some(l.ff2.b));
        }
        if let Ok(mut s) = self.scratch.lock() {
            s.push(sc);
        }
        Ok(x)
    }

    /// `qkv` rows are q | k | v `[n, 3 d]`; writes the context `[n, d]`.
    fn attention(&self, qkv: &[f32], seqs: &[(usize, usize)], out: &mut [f32]) {
        let c = &self.cfg;
        let (d, nh) = (c.d_model, c.n_head);
        let hd = d / nh;
        let w = 3 * d;
        let scale = 1.0 / (hd as f32).sqrt();
        let isa = self.exec.isa;
        // Tasks are (sequence, head): that head's columns of the sequence's rows.
        let lens: Vec<usize> = seqs.iter().map(|&(_, len)| len).collect();
        // Every query row of a sequence attends over all its keys.
        let lens_all: Vec<Vec<usize>> = lens.iter().map(|&l| vec![l; l]).collect();
        self.exec.par_blocks_mut(out, nh, hd, &lens, &|task, oh| {
            let (s0, len) = seqs[task / nh];
            let h = task % nh;
            let qs: Vec<&[f32]> = (0..len)
                .map(|t| &qkv[(s0 + t) * w + h * hd..][..hd])
                .collect();
            let mut sc = Vec::new();
            kernels::attend_rows(
                isa,
                &qs,
                &qkv[s0 * w + d + h * hd..],
                &qkv[s0 * w + 2 * d + h * hd..],
                w,
                &lens_all[task / nh],
                scale,
                &mut sc,
                oh,
            );
        });
    }
}
