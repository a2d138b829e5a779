//! Quantized formats: packed weight matrices (views into the region) and
//! int8 activation blocks, plus the one-time conversions used by the packer.
//!
//! Both weight formats use 32-element blocks along K so they dot directly
//! against [`ActQ8`] (llama.cpp's q8_1 idea: int8 + scale + scaled sum per
//! block; the sum lets Q4_1's offset `m` be applied once per block).
//!
//! Packed matrices are stored in panels of [`PANEL`] = 8 rows: for each
//! panel and K-block, the 8 rows' quants are interleaved 4 bytes at a time
//! (one 32-byte vector = 4 consecutive quant bytes of each of the 8 rows),
//! followed by the 8 rows' f16 scales. A SIMD kernel then multiplies one
//! such vector by 4 activation bytes broadcast to all lanes and gets the 8
//! rows' partial dots in 8 lanes: no horizontal sums, one contiguous weight
//! stream per panel, results stored 8 rows at a time. Rows are padded to a
//! multiple of 8 with zero quants and scales.
//!
//! Q4_1 panel-block (160 bytes): 4 x 32 bytes of quants, word h (h = 0..4)
//! holding each row's GGUF quant bytes 4h..4h+4 (low nibbles = elements
//! 4h..4h+4, high nibbles = elements 16+4h..), then d[8] f16, then m[8] f16.
//! Q8_0 panel-block (272 bytes): 8 x 32 bytes of quants, word g holding each
//! row's elements 4g..4g+4, then d[8] f16.

use half::f16;

pub const QK: usize = 32;
/// Rows per panel of the packed layouts.
pub const PANEL: usize = 8;
/// Bytes of one (panel, K-block) of a packed Q4_1 matrix.
pub const Q4_1_PB: usize = PANEL * 16 + PANEL * 4;
/// Bytes of one (panel, K-block) of a packed Q8_0 matrix.
pub const Q8_0_PB: usize = PANEL * 32 + PANEL * 2;

/// Byte size of a packed matrix: `rows` rounded up to whole panels.
pub fn packed_bytes(rows: usize, k: usize, panel_block: usize) -> Option<usize> {
    rows.div_ceil(PANEL)
        .checked_mul(k / QK)?
        .checked_mul(panel_block)
}

/// Packed Q4_1 matrix `[rows, k]`, value = d*q + m with q in 0..16.
#[derive(Clone, Copy)]
pub struct Q4_1Mat<'a> {
    pub rows: usize,
    pub k: usize,
    /// Panel layout (module docs); scales stay f16 as in GGUF: decode
    /// streams weights from memory, so 20 bytes/block rather than 24 matters.
    pub data: &'a [u8],
}

/// Packed Q8_0 matrix `[rows, k]`, value = d*q.
#[derive(Clone, Copy)]
pub struct Q8_0Mat<'a> {
    pub rows: usize,
    pub k: usize,
    /// Panel layout (module docs).
    pub data: &'a [u8],
}

#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

fn check_packed(b: &[u8], rows: usize, k: usize, pb: usize) -> Result<(), String> {
    if k % QK != 0 {
        return Err(format!("k={k} not a multiple of {QK}"));
    }
    match packed_bytes(rows, k, pb) {
        Some(n) if n == b.len() => Ok(()),
        n => Err(format!("size {} != {n:?}", b.len())),
    }
}

#[inline]
fn rd16(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

impl<'a> Q4_1Mat<'a> {
    pub fn from_bytes(b: &'a [u8], rows: usize, k: usize) -> Result<Self, String> {
        check_packed(b, rows, k, Q4_1_PB)?;
        Ok(Q4_1Mat { rows, k, data: b })
    }

    /// Row `r`, block `b` in GGUF form: 16 quant bytes (byte j = element j
    /// low nibble | element j+16 high nibble), d and m as f16 bits.
    pub fn block(&self, r: usize, b: usize) -> ([u8; 16], u16, u16) {
        let nb = self.k / QK;
        let pb = &self.data[((r / PANEL) * nb + b) * Q4_1_PB..][..Q4_1_PB];
        let i = r % PANEL;
        let mut q = [0u8; 16];
        for h in 0..4 {
            q[4 * h..4 * h + 4].copy_from_slice(&pb[h * 32 + i * 4..][..4]);
        }
        (q, rd16(pb, 128 + 2 * i), rd16(pb, 144 + 2 * i))
    }

    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        for b in 0..self.k / QK {
            let (q, d, m) = self.block(r, b);
            let (d, m) = (f16_to_f32(d), f16_to_f32(m));
            for j in 0..16 {
                out[b * QK + j] = d * (q[j] & 15) as f32 + m;
                out[b * QK + j + 16] = d * (q[j] >> 4) as f32 + m;
            }
        }
    }
}

impl<'a> Q8_0Mat<'a> {
    pub fn from_bytes(b: &'a [u8], rows: usize, k: usize) -> Result<Self, String> {
        check_packed(b, rows, k, Q8_0_PB)?;
        Ok(Q8_0Mat { rows, k, data: b })
    }

    /// Row `r`, block `b`: 32 quants and d as f16 bits.
    pub fn block(&self, r: usize, b: usize) -> ([i8; 32], u16) {
        let nb = self.k / QK;
        let pb = &self.data[((r / PANEL) * nb + b) * Q8_0_PB..][..Q8_0_PB];
        let i = r % PANEL;
        let mut q = [0i8; 32];
        for g in 0..8 {
            for e in 0..4 {
                q[4 * g + e] = pb[g * 32 + i * 4 + e] as i8;
            }
        }
        (q, rd16(pb, 256 + 2 * i))
    }

    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        for b in 0..self.k / QK {
            let (q, d) = self.block(r, b);
            let d = f16_to_f32(d);
            for j in 0..QK {
                out[b * QK + j] = d * q[j] as f32;
            }
        }
    }
}

/// Builds a packed Q4_1 matrix from per-(row, block) GGUF-form blocks.
pub fn pack_q4_1(
    rows: usize,
    k: usize,
    mut block: impl FnMut(usize, usize) -> ([u8; 16], u16, u16),
) -> Vec<u8> {
    let nb = k / QK;
    let mut out = vec![0u8; packed_bytes(rows, k, Q4_1_PB).expect("size")];
    for r in 0..rows {
        let i = r % PANEL;
        for b in 0..nb {
            let (q, d, m) = block(r, b);
            let pb = &mut out[((r / PANEL) * nb + b) * Q4_1_PB..][..Q4_1_PB];
            for h in 0..4 {
                pb[h * 32 + i * 4..][..4].copy_from_slice(&q[4 * h..4 * h + 4]);
            }
            pb[128 + 2 * i..][..2].copy_from_slice(&d.to_le_bytes());
            pb[144 + 2 * i..][..2].copy_from_slice(&m.to_le_bytes());
        }
    }
    out
}

/// Builds a packed Q8_0 matrix from per-(row, block) quants and f16 scale bits.
pub fn pack_q8_0(
    rows: usize,
    k: usize,
    mut block: impl FnMut(usize, usize) -> ([i8; 32], u16),
) -> Vec<u8> {
    let nb = k / QK;
    let mut out = vec![0u8; packed_bytes(rows, k, Q8_0_PB).expect("size")];
    for r in 0..rows {
        let i = r % PANEL;
        for b in 0..nb {
            let (q, d) = block(r, b);
            let pb = &mut out[((r / PANEL) * nb + b) * Q8_0_PB..][..Q8_0_PB];
            for g in 0..8 {
                for e in 0..4 {
                    pb[g * 32 + i * 4 + e] = q[4 * g + e] as u8;
                }
            }
            pb[256 + 2 * i..][..2].copy_from_slice(&d.to_le_bytes());
        }
    }
    out
}

fn f16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// GGUF Q4_1 blocks (f16 d, f16 m, 16 bytes), row-major -> packed Q4_1 (lossless).
pub fn repack_gguf_q4_1(raw: &[u8], rows: usize, k: usize) -> Result<Vec<u8>, String> {
    let nb = rows * k / QK;
    if k % QK != 0 || raw.len() != nb * 20 {
        return Err(format!("Q4_1 size {} for {rows}x{k}", raw.len()));
    }
    let nbr = k / QK;
    Ok(pack_q4_1(rows, k, |r, b| {
        let blk = &raw[(r * nbr + b) * 20..][..20];
        let mut q = [0u8; 16];
        q.copy_from_slice(&blk[4..20]);
        (q, f16_at(blk, 0), f16_at(blk, 2))
    }))
}

/// GGUF Q8_0 blocks (f16 d, 32 x i8), row-major -> packed Q8_0 (lossless).
pub fn repack_gguf_q8_0(raw: &[u8], rows: usize, k: usize) -> Result<Vec<u8>, String> {
    let nb = rows * k / QK;
    if k % QK != 0 || raw.len() != nb * 34 {
        return Err(format!("Q8_0 size {} for {rows}x{k}", raw.len()));
    }
    let nbr = k / QK;
    Ok(pack_q8_0(rows, k, |r, b| {
        let blk = &raw[(r * nbr + b) * 34..][..34];
        let mut q = [0i8; 32];
        q.iter_mut()
            .zip(&blk[2..34])
            .for_each(|(a, &v)| *a = v as i8);
        (q, f16_at(blk, 0))
    }))
}

/// F32 `[rows, k]` -> packed Q8_0 (symmetric, per 32-block absmax scale).
pub fn quantize_q8_0(w: &[f32], rows: usize, k: usize) -> Vec<u8> {
    pack_q8_0(rows, k, |r, b| {
        let blk = &w[r * k + b * QK..][..QK];
        let amax = blk.iter().fold(0f32, |a, &x| a.max(x.abs()));
        // Quantize against the f16-rounded scale that will be stored.
        let s = f16::from_f32(amax / 127.0);
        let inv = if s.to_f32() > 0.0 {
            1.0 / s.to_f32()
        } else {
            0.0
        };
        let mut q = [0i8; 32];
        for (q, &x) in q.iter_mut().zip(blk) {
            *q = (x * inv).round().clamp(-127.0, 127.0) as i8;
        }
        (q, s.to_bits())
    })
}

/// F32 `[rows, k]` -> packed Q4_1 (min/max per block), for synthetic models.
pub fn quantize_q4_1(w: &[f32], rows: usize, k: usize) -> Vec<u8> {
    pack_q4_1(rows, k, |r, b| {
        let blk = &w[r * k + b * QK..][..QK];
        let mn = blk.iter().fold(f32::INFINITY, |a, &x| a.min(x));
        let mx = blk.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        let s = f16::from_f32((mx - mn) / 15.0);
        let mn16 = f16::from_f32(mn);
        let (sf, mnf) = (s.to_f32(), mn16.to_f32());
        let inv = if sf > 0.0 { 1.0 / sf } else { 0.0 };
        let qf = |x: f32| ((x - mnf) * inv).round().clamp(0.0, 15.0) as u8;
        let mut q = [0u8; 16];
        for j in 0..16 {
            q[j] = qf(blk[j]) | (qf(blk[j + 16]) << 4);
        }
        (q, s.to_bits(), mn16.to_bits())
    })
}

/// Int8 activations for `n` rows of length `k`, quantized per 32-block.
#[derive(Default, Clone)]
pub struct ActQ8 {
    pub n: usize,
    pub k: usize,
    pub qs: Vec<i8>,
    /// Per block scale.
    pub d: Vec<f32>,
    /// Per block d * sum(qs): applies Q4_1's offset in one multiply.
    pub s: Vec<f32>,
    /// Per block -128 * sum(qs): where an i32 dot against weights offset
    /// by +128 (u8, for `vpdpbusd`) starts, so it ends at the exact dot.
    pub off: Vec<i32>,
}

impl ActQ8 {
    /// Sizes the buffers for `[n, k]` (contents unspecified until quantized).
    pub fn reset(&mut self, n: usize, k: usize) {
        assert!(k % QK == 0);
        self.n = n;
        self.k = k;
        self.qs.resize(n * k, 0);
        self.d.resize(n * k / QK, 0.0);
        self.s.resize(n * k / QK, 0.0);
        self.off.resize(n * k / QK, 0);
    }

    pub fn quantize(&mut self, x: &[f32], n: usize, k: usize) {
        debug_assert!(k % QK == 0 && x.len() >= n * k);
        self.reset(n, k);
        let nb = n * k / QK;
        crate::compute::kernels::quantize_row_q8(
            &x[..n * k],
            &mut self.qs,
            &mut self.d,
            &mut self.s[..nb],
            &mut self.off[..nb],
        );
    }
}

/// [`ActQ8::off`] of quantized blocks `qs`.
pub fn block_offsets(qs: &[i8], off: &mut [i32]) {
    for (o, b) in off.iter_mut().zip(qs.chunks_exact(QK)) {
        *o = -128 * b.iter().map(|&q| q as i32).sum::<i32>();
    }
}

/// Scalar reference quantizer (the SIMD ones must match it bit-exactly on
/// the int8 values up to rounding ties).
pub fn quantize_q8_scalar(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    for (b, blk) in x.chunks_exact(QK).enumerate() {
        let amax = blk.iter().fold(0f32, |a, &v| a.max(v.abs()));
        let sc = amax / 127.0;
        let inv = if sc > 0.0 { 1.0 / sc } else { 0.0 };
        let mut sum = 0i32;
        for j in 0..QK {
            let q = (blk[j] * inv).round() as i32;
            let q = q.clamp(-127, 127);
            qs[b * QK + j] = q as i8;
            sum += q;
        }
        d[b] = sc;
        s[b] = sc * sum as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panel_packing_round_trips_gguf_blocks() {
        let (rows, k) = (11usize, 64usize);
        let nb = k / QK;
        // Row-major GGUF Q4_1 and Q8_0 blocks with distinct bytes.
        let raw4: Vec<u8> = (0..rows * nb * 20).map(|i| (i * 7 + 3) as u8).collect();
        let raw8: Vec<u8> = (0..rows * nb * 34).map(|i| (i * 5 + 1) as u8).collect();
        let p4 = repack_gguf_q4_1(&raw4, rows, k).expect("q4");
        let p8 = repack_gguf_q8_0(&raw8, rows, k).expect("q8");
        assert_eq!(p4.len(), 2 * nb * Q4_1_PB);
        let m4 = Q4_1Mat::from_bytes(&p4, rows, k).expect("q4 view");
        let m8 = Q8_0Mat::from_bytes(&p8, rows, k).expect("q8 view");
        for r in 0..rows {
            for b in 0..nb {
                let g4 = &raw4[(r * nb + b) * 20..][..20];
                let (q, d, m) = m4.block(r, b);
                assert_eq!(&q[..], &g4[4..]);
                assert_eq!(d.to_le_bytes(), [g4[0], g4[1]]);
                assert_eq!(m.to_le_bytes(), [g4[2], g4[3]]);
                let g8 = &raw8[(r * nb + b) * 34..][..34];
                let (q, d) = m8.block(r, b);
                assert!(q.iter().zip(&g8[2..]).all(|(a, b)| *a as u8 == *b));
                assert_eq!(d.to_le_bytes(), [g8[0], g8[1]]);
            }
        }
        // Padding rows of the last panel are zero.
        let last = &p4[nb * Q4_1_PB..];
        for b in 0..nb {
            let pb = &last[b * Q4_1_PB..][..Q4_1_PB];
            for i in 3..8 {
                for h in 0..4 {
                    assert_eq!(&pb[h * 32 + i * 4..][..4], &[0; 4]);
                }
            }
        }
    }
}
