//! The decoder layers: matmuls on the shared weights, the row passes
//! between them on the executor, attention over each sequence's KV cache,
//! and LoRA on each adapter's rows.

use super::{Group, Llama, Seq, Span, TCHUNK};
use crate::compute::kernels;
use crate::compute::lora::{apply_lora_rows, lora_deltas};
use crate::compute::norm::rms_norm_row;
use crate::compute::quant::ActQ8;
use crate::compute::rows::{ActRows, Rows};
use crate::compute::{Exec, QMat};
use crate::error::Result;
use crate::formats::tensor::Region;
use crate::models::adapter::{Lora, Proj};
use std::sync::Mutex;

/// Projections sharing one input, either stacked row-wise in one packed
/// matrix (what the packer emits) or as separate tensors.
pub(super) enum Stacked<'a> {
    Fused(QMat<'a>),
    Split(Vec<QMat<'a>>),
}

impl<'a> Stacked<'a> {
    pub(super) fn load(
        reg: &Region<'a>,
        fused: &str,
        parts: &[(&str, usize)],
        k: usize,
    ) -> Result<Stacked<'a>> {
        if reg.table.get(fused).is_ok() {
            let rows = parts.iter().map(|p| p.1).sum();
            return Ok(Stacked::Fused(QMat::from_region(reg, fused, rows, k)?));
        }
        parts
            .iter()
            .map(|&(n, r)| QMat::from_region(reg, n, r, k))
            .collect::<Result<Vec<_>>>()
            .map(Stacked::Split)
    }

    fn rows(&self) -> usize {
        match self {
            Stacked::Fused(m) => m.rows(),
            Stacked::Split(ms) => ms.iter().map(|m| m.rows()).sum(),
        }
    }

    pub(super) fn bytes(&self) -> usize {
        match self {
            Stacked::Fused(m) => m.bytes(),
            Stacked::Split(ms) => ms.iter().map(|m| m.bytes()).sum(),
        }
    }

    /// Runs all parts on `act` into `out` `[n, rows]`, parts side by side.
    fn matmul(&self, exec: &Exec, act: &ActQ8, out: &mut [f32]) {
        match self {
            Stacked::Fused(m) => exec.matmul(m, act, out),
            Stacked::Split(ms) => {
                let ld = self.rows();
                let mut c = 0;
                for m in ms {
                    exec.matmul_into(m, act, &mut out[c..], ld);
                    c += m.rows();
                }
            }
        }
    }
}

pub(super) struct Layer<'a> {
    pub(super) attn_norm: &'a [f32],
    pub(super) qkv: Stacked<'a>,
    pub(super) wo: QMat<'a>,
    pub(super) ffn_norm: &'a [f32],
    pub(super) gate_up: Stacked<'a>,
    pub(super) w_down: QMat<'a>,
}

#[derive(Default)]
pub(super) struct Scratch {
    act: ActQ8,
    /// Normalized layer input `[n, d]` (kept for LoRA).
    h: Vec<f32>,
    /// q | k | v side by side `[n, d + 2 kvd]`.
    qkv: Vec<f32>,
    att: Vec<f32>,
    o: Vec<f32>,
    /// gate | up side by side `[n, 2 ff]`; silu(gate) * up lands in the gate half.
    gu: Vec<f32>,
}

impl Layer<'_> {
    /// Bytes of the layer's weights (norm vectors included).
    pub(super) fn bytes(&self) -> usize {
        self.qkv.bytes()
            + self.wo.bytes()
            + self.gate_up.bytes()
            + self.w_down.bytes()
            + 4 * (self.attn_norm.len() + self.ffn_norm.len())
    }
}

impl Llama<'_> {
    /// The first `n_layers` decoder layers over `x` (`[n, d]`: the rows of
    /// all `seqs`, in order), each sequence at its own positions in its own
    /// KV cache, each LoRA group on its own rows; leaves the residual stream
    /// (before the final norm) in `x`. `forward` runs one sequence of `n`
    /// tokens through it, `decode_batch` `n` sequences of one token, and
    /// they agree bitwise: every step is per row (int8 activations are
    /// quantized per row and 32-block; a GEMM tile accumulates each token's
    /// dots in the same order whatever the number of tokens).
    pub(super) fn run_layers(
        &self,
        x: &mut [f32],
        seqs: &mut [Seq],
        groups: &[Group],
        n_layers: usize,
    ) -> Result<()> {
        let c = &self.cfg;
        let (d, kvd, ff) = (c.d_model, c.kv_dim(), c.d_ff);
        let n = x.len() / d;
        let exec = &*self.exec;
        let isa = exec.isa;
        let spans: Vec<Span> = seqs.iter().map(|s| s.span).collect();
        debug_assert!(spans
            .iter()
            .scan(0, |t, s| {
                let ok = s.t0 == *t;
                *t += s.n;
                Some(ok)
            })
            .all(|ok| ok));
        // Per row: its RoPE angles.
        let half = c.head_dim / 2;
        let (mut cos, mut sin) = (Vec::with_capacity(n * half), Vec::with_capacity(n * half));
        for s in &spans {
            let (cs, sn) = c.rope_tables(s.pos0, s.n);
            cos.extend(cs);
            sin.extend(sn);
        }
        // Attention work: chunks of query rows of one sequence.
        let units: Vec<(usize, usize)> = spans
            .iter()
            .enumerate()
            .flat_map(|(si, s)| (0..s.n.div_ceil(TCHUNK)).map(move |tc| (si, tc)))
            .collect();

        // Reuse activation buffers across jobs: fresh multi-MB allocations
        // cost page faults on every prefill. Concurrent jobs just allocate.
        let mut sc = self
            .scratch
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_default();
        let Scratch {
            act,
            h,
            qkv,
            att,
            o,
            gu,
        } = &mut sc;
        let wq = d + 2 * kvd;
        for (buf, len) in [
            (&mut *h, n * d),
            (&mut *qkv, n * wq),
            (&mut *att, n * d),
            (&mut *o, n * d),
            (&mut *gu, n * 2 * ff),
        ] {
            buf.clear();
            buf.resize(len, 0.0);
        }
        let (h, qkv, att, o, gu) = (
            &mut h[..],
            &mut qkv[..],
            &mut att[..],
            &mut o[..],
            &mut gu[..],
        );

        // Row passes between the matmuls run over token ranges in parallel
        // (inline for one token), each task on its own rows of the buffers.
        // x += o (pending residual), h = rms_norm(x) * w, act = q8(h).
        let norm_quant =
            |act: &mut ActQ8, x: &mut [f32], h: &mut [f32], o: &[f32], w: &[f32], add_o: bool| {
                let rows = (Rows::new(x, d), Rows::new(h, d), ActRows::new(act, n, d));
                exec.par_rows_mut(n, rows, |t, (xr, hr, ar)| {
                    if add_o {
                        xr.iter_mut()
                            .zip(&o[t * d..][..d])
                            .for_each(|(a, b)| *a += b);
                    }
                    rms_norm_row(xr, w, c.rms_eps, hr);
                    ar.quantize(isa, hr);
                });
            };

        for (li, l) in self.layers[..n_layers].iter().enumerate() {
            norm_quant(act, x, h, o, l.attn_norm, li > 0);
            l.qkv.matmul(exec, act, qkv);
            let qkv_parts = [(Proj::Q, 0, d), (Proj::K, d, kvd), (Proj::V, d + kvd, kvd)];
            self.apply_loras(groups, li, &qkv_parts, h, d, d, qkv, wq)?;
            let mut kv: Vec<(&mut [f32], &mut [f32])> = seqs
                .iter_mut()
                .map(|s| kv_layer(s.kv, li, s.slots, kvd))
                .collect();
            // Row t's k and v cache slots: a sequence's rows are consecutive
            // and at consecutive positions (`pos0 + n <= slots` was checked).
            let mut slots: Vec<(&mut [f32], &mut [f32])> = Vec::with_capacity(n);
            for ((k, v), s) in kv.iter_mut().zip(&spans) {
                let w = s.pos0 * kvd..(s.pos0 + s.n) * kvd;
                slots.extend(k[w.clone()].chunks_mut(kvd).zip(v[w].chunks_mut(kvd)));
            }
            // RoPE on q and k in place; k and v into the cache.
            exec.par_rows_mut(
                n,
                (Rows::new(&mut *qkv, wq), &mut slots[..]),
                |t, (r, (kd, vd))| {
                    let (cs, sn) = (&cos[t * half..][..half], &sin[t * half..][..half]);
                    rope_row(&mut r[..d + kvd], c.head_dim, cs, sn);
                    kd.copy_from_slice(&r[d..d + kvd]);
                    vd.copy_from_slice(&r[d + kvd..]);
                },
            );
            self.attention(qkv, wq, &kv, &spans, &units, att);
            let att: &[f32] = att;
            exec.par_rows_mut(n, ActRows::new(act, n, d), |t, ar| {
                ar.quantize(isa, &att[t * d..(t + 1) * d])
            });
            exec.matmul(&l.wo, act, o);
            self.apply_loras(groups, li, &[(Proj::O, 0, d)], att, d, d, o, d)?;

            norm_quant(act, x, h, o, l.ffn_norm, true);
            l.gate_up.matmul(exec, act, gu);
            let gu_parts = [(Proj::Gate, 0, ff), (Proj::Up, ff, ff)];
            self.apply_loras(groups, li, &gu_parts, h, d, d, gu, 2 * ff)?;
            let rows = (Rows::new(&mut *gu, 2 * ff), ActRows::new(act, n, ff));
            exec.par_rows_mut(n, rows, |_, (r, ar)| {
                let (g, u) = r.split_at_mut(ff);
                kernels::silu_mul(isa, g, u);
                ar.quantize(isa, g);
            });
            exec.matmul(&l.w_down, act, o);
            self.apply_loras(groups, li, &[(Proj::Down, 0, d)], gu, 2 * ff, ff, o, d)?;
        }
        x.iter_mut().zip(o.iter()).for_each(|(a, b)| *a += b);
        if let Ok(mut s) = self.scratch.lock() {
            s.push(sc);
        }
        Ok(())
    }

    /// Adds layer `li`'s LoRAs of `parts` (projection, first column in
    /// `y`, width) on input `x` (`in_dim` wide) to each group's rows of `y`.
    /// One group (always so for `forward`) runs in place; several run
    /// side by side on the pool, each computing its deltas apart, which are
    /// then added here (the same single rounding as adding in place).
    fn apply_loras(
        &self,
        groups: &[Group],
        li: usize,
        parts: &[(Proj, usize, usize)],
        x: &[f32],
        ldx: usize,
        in_dim: usize,
        y: &mut [f32],
        ldy: usize,
    ) -> Result<()> {
        if groups.len() < 2 {
            for g in groups {
                for &(p, c0, od) in parts {
                    if let Some(lr) = &g.loras[li][p as usize] {
                        apply_lora_rows(lr, x, ldx, &g.rows, in_dim, &mut y[c0..], ldy, od)?;
                    }
                }
            }
            return Ok(());
        }
        let jobs: Vec<(&Group, usize, usize, Lora)> = groups
            .iter()
            .flat_map(|g| {
                parts
                    .iter()
                    .filter_map(move |&(p, c0, od)| g.loras[li][p as usize].map(|l| (g, c0, od, l)))
            })
            .collect();
        let deltas: Vec<Mutex<Result<Vec<f32>>>> =
            jobs.iter().map(|_| Mutex::new(Ok(Vec::new()))).collect();
        self.exec.pool.run(jobs.len(), &|i| {
            let (g, _, od, l) = &jobs[i];
            let r = lora_deltas(l, x, ldx, &g.rows, in_dim, *od);
            *deltas[i].lock().unwrap_or_else(|e| e.into_inner()) = r;
        });
        for ((g, c0, od, _), dl) in jobs.iter().zip(deltas) {
            let dl = dl.into_inner().unwrap_or_else(|e| e.into_inner())?;
            for (&t, dr) in g.rows.iter().zip(dl.chunks_exact(*od)) {
                let yr = &mut y[t * ldy + c0..][..*od];
                yr.iter_mut().zip(dr).for_each(|(a, b)| *a += b);
            }
        }
        Ok(())
    }

    /// Causal GQA attention: row `t0 + t` of each sequence (`spans`, with
    /// its layer cache in `kv`) attends over its slots `0..=pos0 + t`. `q`
    /// row r starts at `r * ldq`; `units` are (sequence, chunk of TCHUNK rows).
    fn attention(
        &self,
        q: &[f32],
        ldq: usize,
        kv: &[(&mut [f32], &mut [f32])],
        spans: &[Span],
        units: &[(usize, usize)],
        out: &mut [f32],
    ) {
        let c = &self.cfg;
        let (hd, kvd) = (c.head_dim, c.kv_dim());
        let group = c.n_head / c.n_head_kv;
        let scale = 1.0 / (hd as f32).sqrt();
        let isa = self.exec.isa;
        // Tasks are (unit, head): unit g's rows, head h's columns of `out`.
        let rows: Vec<usize> = units
            .iter()
            .map(|&(si, tc)| (spans[si].n - tc * TCHUNK).min(TCHUNK))
            .collect();
        self.exec
            .par_blocks_mut(out, c.n_head, hd, &rows, &|task, oh| {
                let (h, (si, tc)) = (task % c.n_head, units[task / c.n_head]);
                let (s, (kc, vc)) = (spans[si], &kv[si]);
                let g = h / group;
                let t0 = tc * TCHUNK;
                let qs: Vec<&[f32]> = (t0..t0 + oh.len())
                    .map(|t| &q[(s.t0 + t) * ldq + h * hd..][..hd])
                    .collect();
                let lens: Vec<usize> = (t0..t0 + oh.len()).map(|t| s.pos0 + t + 1).collect();
                let mut sc = Vec::new();
                kernels::attend_rows(
                    isa,
                    &qs,
                    &kc[g * hd..],
                    &vc[g * hd..],
                    kvd,
                    &lens,
                    scale,
                    &mut sc,
                    oh,
                );
            });
    }
}

fn kv_layer(kv: &mut [f32], l: usize, slots: usize, kvd: usize) -> (&mut [f32], &mut [f32]) {
    let per = slots * kvd;
    let (k, v) = kv[2 * l * per..2 * (l + 1) * per].split_at_mut(per);
    (k, v)
}

/// GGUF ("normal") RoPE on one token's heads (`x` = whole heads of
/// `hd`): rotates adjacent pairs (x[2i], x[2i+1]); the GGUF converter
/// permuted q/k rows so this equals HF's half-split rotation.
fn rope_row(x: &mut [f32], hd: usize, cos: &[f32], sin: &[f32]) {
    for v in x.chunks_exact_mut(hd) {
        for (i, (&c, &s)) in cos.iter().zip(sin).enumerate() {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            v[2 * i] = a * c - b * s;
            v[2 * i + 1] = a * s + b * c;
        }
    }
}
