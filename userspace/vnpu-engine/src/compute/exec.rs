//! The executor: one thread pool and one ISA, shared between models; it
//! runs the quantized matmuls split over output rows and the row passes
//! between them.

use crate::compute::kernels::{self, Isa, OutMat};
use crate::compute::quant::{ActQ8, Q4_1Mat, Q8_0Mat};
use crate::compute::rows::RowSplit;
use crate::compute::threadpool::ThreadPool;
use crate::error::{Error, Result};
use std::sync::Mutex;

/// Where compute runs: one pool and one ISA, shareable between models.
pub struct Exec {
    pub pool: ThreadPool,
    pub isa: Isa,
}

impl Exec {
    pub fn new(threads: usize) -> Exec {
        Exec {
            pool: ThreadPool::new(threads.max(1)),
            isa: kernels::detect(),
        }
    }
    pub fn with_isa(threads: usize, isa: Isa) -> Result<Exec> {
        if !isa.available() {
            return Err(Error::Unsupported(format!(
                "{isa:?} not available on this CPU"
            )));
        }
        Ok(Exec {
            pool: ThreadPool::new(threads.max(1)),
            isa,
        })
    }
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs `f(t, row)` for every row `t < n` of `rows`, token ranges in
    /// parallel (inline for a single token: decode steps pay no dispatch).
    /// Each task owns its rows of every buffer in `rows`, so the row passes
    /// between the matmuls share buffers without raw pointers.
    pub fn par_rows_mut<S, F>(&self, n: usize, rows: S, f: F)
    where
        S: RowSplit,
        F: Fn(usize, S::Row) + Sync,
    {
        self.par_row_groups_mut(n, rows, 1, |t, _, part| f(t, part.split_first_row().0));
    }

    /// As [`Exec::par_rows_mut`], but `f(t0, m, part)` gets up to `g`
    /// consecutive rows at once (`m` of them, from row `t0`): for row passes
    /// that interleave independent rows to hide an operation's latency.
    pub fn par_row_groups_mut<S, F>(&self, n: usize, rows: S, g: usize, f: F)
    where
        S: RowSplit,
        F: Fn(usize, usize, S) + Sync,
    {
        if n == 0 {
            return;
        }
        let chunks = (self.threads() * 2).min(n);
        let per = n.div_ceil(chunks);
        let run = |t0: usize, mut part: S| {
            let end = (t0 + per).min(n);
            let mut t = t0;
            while t < end {
                let m = g.max(1).min(end - t);
                let (head, rest) = part.split_rows(m);
                f(t, m, head);
                part = rest;
                t += m;
            }
        };
        if per >= n {
            return run(0, rows);
        }
        let mut rest = Some(rows);
        let parts = (0..n.div_ceil(per)).map(|c| {
            let (part, r) = rest
                .take()
                .expect("one part per chunk")
                .split_rows(per.min(n - c * per));
            rest = Some(r);
            part
        });
        self.par_parts(parts, &|c, part| run(c * per, part));
    }

    /// Runs `f(i, part)` for each of `parts` on the pool (one dispatch),
    /// task `i` owning part `i`.
    pub fn par_parts<P: Send>(
        &self,
        parts: impl IntoIterator<Item = P>,
        f: &(dyn Fn(usize, P) + Sync),
    ) {
        let slots: Vec<Mutex<Option<P>>> = parts.into_iter().map(|p| Mutex::new(Some(p))).collect();
        self.pool.run(slots.len(), &|i| {
            let part = slots[i].lock().unwrap_or_else(|e| e.into_inner()).take();
            f(i, part.expect("the pool runs each task once"));
        });
    }

    /// Runs `f(task, blocks)` over (row group, column block) tasks of
    /// `out` (`[n, nb * w]`): `groups` are the sizes of consecutive row
    /// ranges from row 0, and task `g * nb + b` gets column block `b` (`w`
    /// wide) of each row of group `g`, in row order (attention: a head of a
    /// chunk of query rows). One dispatch.
    pub fn par_blocks_mut(
        &self,
        out: &mut [f32],
        nb: usize,
        w: usize,
        groups: &[usize],
        f: &(dyn Fn(usize, &mut [&mut [f32]]) + Sync),
    ) {
        let mut blocks: Vec<Option<&mut [f32]>> = out.chunks_mut(w).map(Some).collect();
        let mut order: Vec<&mut [f32]> = Vec::with_capacity(blocks.len());
        let mut r0 = 0;
        for &g in groups {
            for b in 0..nb {
                for r in r0..r0 + g {
                    order.push(blocks[r * nb + b].take().expect("groups are disjoint rows"));
                }
            }
            r0 += g;
        }
        let mut rest = &mut order[..];
        let parts = groups
            .iter()
            .flat_map(|&g| std::iter::repeat_n(g, nb))
            .map(|g| {
                let (part, r) = std::mem::take(&mut rest).split_at_mut(g);
                rest = r;
                part
            });
        self.par_parts(parts, f);
    }

    /// `out[t, r] = W[r] . x[t]` for all rows, split over rows across threads.
    pub fn matmul(&self, w: &QMat, x: &ActQ8, out: &mut [f32]) {
        self.matmul_into(w, x, out, w.rows());
    }

    /// As [`Exec::matmul`], into the first `w.rows()` columns of an `[n, ldo]`
    /// matrix (`out` may start at a column offset: stacked projections).
    pub fn matmul_into(&self, w: &QMat, x: &ActQ8, out: &mut [f32], ldo: usize) {
        let rows = w.rows();
        debug_assert_eq!(w.k(), x.k);
        let o = OutMat::strided(out, x.n, ldo, rows);
        // Several chunks per thread so a core slowed by other load (kernel
        // builds share this machine) does not stall the whole step; twice
        // as many for several tokens, whose chunks are long enough to pay
        // for it (prefill looked faster with 8 than 4 in a noisy A/B).
        // Chunks are whole pairs of 8-row panels (the SIMD kernels' unit).
        let unit = 2 * crate::compute::quant::PANEL;
        let chunks = (self.threads() * if x.n > 1 { 8 } else { 4 }).min(rows.div_ceil(unit)).max(1);
        let per = rows.div_ceil(chunks).div_ceil(unit) * unit;
        let n = rows.div_ceil(per);
        let isa = self.isa;
        self.pool.run(n, &|c| {
            let r0 = c * per;
            let r1 = (r0 + per).min(rows);
            // SAFETY: chunk c owns rows r0..r1 of `out`; shapes checked by the caller.
            unsafe {
                match w {
                    QMat::Q4_1(m) => kernels::gemm_q4_1(isa, m, x, r0, r1, o),
                    QMat::Q8_0(m) => kernels::gemm_q8_0(isa, m, x, r0, r1, o),
                }
            }
        });
    }
}

#[derive(Clone, Copy)]
pub enum QMat<'a> {
    Q4_1(Q4_1Mat<'a>),
    Q8_0(Q8_0Mat<'a>),
}

impl<'a> QMat<'a> {
    pub fn rows(&self) -> usize {
        match self {
            QMat::Q4_1(m) => m.rows,
            QMat::Q8_0(m) => m.rows,
        }
    }
    pub fn k(&self) -> usize {
        match self {
            QMat::Q4_1(m) => m.k,
            QMat::Q8_0(m) => m.k,
        }
    }
    /// Bytes of the packed matrix: what one pass over it reads.
    pub fn bytes(&self) -> usize {
        match self {
            QMat::Q4_1(m) => m.data.len(),
            QMat::Q8_0(m) => m.data.len(),
        }
    }
    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        match self {
            QMat::Q4_1(m) => m.row_f32(r, out),
            QMat::Q8_0(m) => m.row_f32(r, out),
        }
    }
    pub fn from_region(
        reg: &crate::formats::tensor::Region<'a>,
        name: &str,
        rows: usize,
        k: usize,
    ) -> Result<QMat<'a>> {
        match reg.entry(name)?.dtype {
            crate::formats::tensor::DType::Q4_1R => Ok(QMat::Q4_1(reg.q4_1(name, rows, k)?)),
            _ => Ok(QMat::Q8_0(reg.q8_0(name, rows, k)?)),
        }
    }
}
