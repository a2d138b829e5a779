//! LoRA deltas `y += scale * B (A x)` on top of the base projections, in
//! f32 on the unquantized input (never merged into the shared weights).

use crate::compute::kernels;
use crate::error::Result;
use crate::models::adapter::Lora;

/// `y[n, out] += scale * B (A x)` in f32 on the unquantized input; row `t`
/// of `x` / `y` starts at `t * ldx` / `t * ldy`.
pub fn apply_lora(
    l: &Lora,
    x: &[f32],
    ldx: usize,
    n: usize,
    in_dim: usize,
    y: &mut [f32],
    ldy: usize,
    out_dim: usize,
) -> Result<()> {
    let rows: Vec<usize> = (0..n).collect();
    apply_lora_rows(l, x, ldx, &rows, in_dim, y, ldy, out_dim)
}

/// As [`apply_lora`] on the listed rows only (the rows of one adapter in a
/// batch, as Punica's SGMV segments): each factor row is fetched once per
/// block of rows, not per row. Every row's arithmetic is that of a lone row.
pub fn apply_lora_rows(
    l: &Lora,
    x: &[f32],
    ldx: usize,
    rows: &[usize],
    in_dim: usize,
    y: &mut [f32],
    ldy: usize,
    out_dim: usize,
) -> Result<()> {
    lora_rows(l, x, ldx, rows, in_dim, out_dim, |_, t, o, v| {
        y[t * ldy + o] += v
    })
}

/// The deltas [`apply_lora_rows`] adds, `[rows.len(), out_dim]`, for a
/// caller that adds them itself (`y += delta` is the same rounding).
pub fn lora_deltas(
    l: &Lora,
    x: &[f32],
    ldx: usize,
    rows: &[usize],
    in_dim: usize,
    out_dim: usize,
) -> Result<Vec<f32>> {
    let mut out = vec![0f32; rows.len() * out_dim];
    lora_rows(l, x, ldx, rows, in_dim, out_dim, |j, _, o, v| {
        out[j * out_dim + o] = v
    })?;
    Ok(out)
}

/// Calls `emit(j, rows[j], o, scale * (B A x[rows[j]])[o])` for every row and output.
fn lora_rows(
    l: &Lora,
    x: &[f32],
    ldx: usize,
    rows: &[usize],
    in_dim: usize,
    out_dim: usize,
    mut emit: impl FnMut(usize, usize, usize, f32),
) -> Result<()> {
    l.check(in_dim, out_dim)?;
    let r = l.rank;
    // Blocks of rows whose y lines stay in L1 while B's rows stream past
    // (rows `ldy` apart often share one cache set).
    const RB: usize = 8;
    let mut h = vec![0f32; RB.min(rows.len()) * r];
    let mut w = vec![0f32; in_dim.max(r)];
    for (b, blk) in rows.chunks(RB).enumerate() {
        // h[j] = A x[blk[j]]
        for i in 0..r {
            l.a.row(i, in_dim, &mut w[..in_dim]);
            for (j, &t) in blk.iter().enumerate() {
                h[j * r + i] = kernels::scalar::dot_f32(&w[..in_dim], &x[t * ldx..][..in_dim]);
            }
        }
        for o in 0..out_dim {
            l.b.row(o, r, &mut w[..r]);
            for (j, &t) in blk.iter().enumerate() {
                let v = l.scale * kernels::scalar::dot_f32(&w[..r], &h[j * r..][..r]);
                emit(b * RB + j, t, o, v);
            }
        }
    }
    Ok(())
}
