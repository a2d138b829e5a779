//! BERT sentence encoder (all-MiniLM-L6-v2): Q8_0 linear layers, f32
//! LayerNorm/softmax/GELU, mean pooling + L2 normalization as
//! sentence-transformers does. A batch is run as one stacked matrix through
//! every linear layer (no padding); attention stays per sequence.

use crate::error::{Error, Result};
use crate::kernels;
use crate::ops::{layer_norm, softmax, Exec, QMat};
use crate::quant::ActQ8;
use crate::tensor::{Region, TensorTable};
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

struct Dense<'a> {
    w: QMat<'a>,
    b: &'a [f32],
}

struct Layer<'a> {
    q: Dense<'a>,
    k: Dense<'a>,
    v: Dense<'a>,
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
}

#[derive(Clone, Copy)]
struct SyncPtr(*mut f32);
// Safety: attention tasks write disjoint (token, head) slices.
unsafe impl Send for SyncPtr {}
unsafe impl Sync for SyncPtr {}

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
                q: dense(&format!("l{l}.q"), d, d)?,
                k: dense(&format!("l{l}.k"), d, d)?,
                v: dense(&format!("l{l}.v"), d, d)?,
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
        let h = self.encode_batch(seqs)?;
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
        layer_norm(&mut x, self.emb_ln.0, self.emb_ln.1, c.ln_eps);
        let starts: Vec<(usize, usize)> = seqs
            .iter()
            .scan(0, |st, s| {
                let r = (*st, s.len());
                *st += s.len();
                Some(r)
            })
            .collect();
        let mut act = ActQ8::default();
        let (mut q, mut k, mut v, mut ctx, mut o) = (
            vec![0f32; n * d],
            vec![0f32; n * d],
            vec![0f32; n * d],
            vec![0f32; n * d],
            vec![0f32; n * d],
        );
        let mut f = vec![0f32; n * c.d_ff];
        for l in &self.layers {
            act.quantize(&x, n, d);
            self.dense(&l.q, &act, &mut q);
            self.dense(&l.k, &act, &mut k);
            self.dense(&l.v, &act, &mut v);
            self.attention(&q, &k, &v, &starts, &mut ctx);
            act.quantize(&ctx, n, d);
            self.dense(&l.o, &act, &mut o);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            layer_norm(&mut x, l.ln1.0, l.ln1.1, c.ln_eps);
            act.quantize(&x, n, d);
            self.dense(&l.ff1, &act, &mut f);
            let isa = self.exec.isa;
            self.exec
                .par_rows(&mut f, c.d_ff, 8, &|fs, _| kernels::gelu(isa, fs));
            act.quantize(&f, n, c.d_ff);
            self.dense(&l.ff2, &act, &mut o);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            layer_norm(&mut x, l.ln2.0, l.ln2.1, c.ln_eps);
        }
        Ok(x)
    }

    fn dense(&self, dn: &Dense, act: &ActQ8, out: &mut [f32]) {
        self.exec.matmul(&dn.w, act, out);
        let rows = dn.b.len();
        for r in out.chunks_exact_mut(rows) {
            r.iter_mut().zip(dn.b).for_each(|(a, b)| *a += b);
        }
    }

    fn attention(&self, q: &[f32], k: &[f32], v: &[f32], seqs: &[(usize, usize)], out: &mut [f32]) {
        let c = &self.cfg;
        let (d, nh) = (c.d_model, c.n_head);
        let hd = d / nh;
        let scale = 1.0 / (hd as f32).sqrt();
        let optr = SyncPtr(out.as_mut_ptr());
        let isa = self.exec.isa;
        self.exec.pool.run(seqs.len() * nh, &|task| {
            let optr = optr;
            let (s0, len) = seqs[task / nh];
            let h = task % nh;
            let mut sc = vec![0f32; len];
            for t in 0..len {
                let qh = &q[(s0 + t) * d + h * hd..][..hd];
                for (j, s) in sc.iter_mut().enumerate() {
                    *s = kernels::dot_f32(isa, qh, &k[(s0 + j) * d + h * hd..][..hd]) * scale;
                }
                softmax(&mut sc);
                // Safety: (token, head) slices are disjoint across tasks and inside out [n, d].
                let oh = unsafe {
                    std::slice::from_raw_parts_mut(optr.0.add((s0 + t) * d + h * hd), hd)
                };
                oh.fill(0.0);
                for (j, &p) in sc.iter().enumerate() {
                    kernels::axpy_f32(isa, p, &v[(s0 + j) * d + h * hd..][..hd], oh);
                }
            }
        });
    }
}
