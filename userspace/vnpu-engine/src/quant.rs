//! Quantized formats: packed weight matrices (views into the region) and
//! int8 activation blocks, plus the one-time conversions used by the packer.
//!
//! Both weight formats use 32-element blocks along K so they dot directly
//! against [`ActQ8`] (llama.cpp's q8_1 idea: int8 + scale + scaled sum per
//! block; the sum lets Q4_1's offset `m` be applied once per block).

use half::f16;

pub const QK: usize = 32;

/// Packed Q4_1 matrix `[rows, k]`, value = d*q + m with q in 0..16.
#[derive(Clone, Copy)]
pub struct Q4_1Mat<'a> {
    pub rows: usize,
    pub k: usize,
    /// `rows * k/2` bytes; per block: byte j = elem j (low nibble) | elem j+16 (high).
    pub qs: &'a [u8],
    /// Per-block scale and offset as f16 bits (as in GGUF: decode streams
    /// weights from memory, so 20 bytes/block rather than 24 matters).
    pub d: &'a [u16],
    pub m: &'a [u16],
}

/// Packed Q8_0 matrix `[rows, k]`, value = d*q.
#[derive(Clone, Copy)]
pub struct Q8_0Mat<'a> {
    pub rows: usize,
    pub k: usize,
    pub qs: &'a [i8],
    /// Per-block scale, f16 bits.
    pub d: &'a [u16],
}

fn split_f16(b: &[u8]) -> Result<&[u16], String> {
    bytemuck::try_cast_slice(b).map_err(|_| "scales misaligned".to_string())
}

#[inline]
pub fn f16_to_f32(bits: u16) -> f32 {
    f16::from_bits(bits).to_f32()
}

impl<'a> Q4_1Mat<'a> {
    pub fn from_bytes(b: &'a [u8], rows: usize, k: usize) -> Result<Self, String> {
        if k % QK != 0 {
            return Err(format!("k={k} not a multiple of {QK}"));
        }
        let nq = rows * k / 2;
        let nb = rows * k / QK;
        if b.len() != nq + 4 * nb {
            return Err(format!("size {} != {}", b.len(), nq + 4 * nb));
        }
        let (qs, rest) = b.split_at(nq);
        let (d, m) = rest.split_at(2 * nb);
        Ok(Q4_1Mat {
            rows,
            k,
            qs,
            d: split_f16(d)?,
            m: split_f16(m)?,
        })
    }

    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let nb = self.k / QK;
        for b in 0..nb {
            let q = &self.qs[(r * nb + b) * 16..][..16];
            let (d, m) = (
                f16_to_f32(self.d[r * nb + b]),
                f16_to_f32(self.m[r * nb + b]),
            );
            for j in 0..16 {
                out[b * QK + j] = d * (q[j] & 15) as f32 + m;
                out[b * QK + j + 16] = d * (q[j] >> 4) as f32 + m;
            }
        }
    }
}

impl<'a> Q8_0Mat<'a> {
    pub fn from_bytes(b: &'a [u8], rows: usize, k: usize) -> Result<Self, String> {
        if k % QK != 0 {
            return Err(format!("k={k} not a multiple of {QK}"));
        }
        let nq = rows * k;
        let nb = rows * k / QK;
        if b.len() != nq + 2 * nb {
            return Err(format!("size {} != {}", b.len(), nq + 2 * nb));
        }
        let (qs, d) = b.split_at(nq);
        Ok(Q8_0Mat {
            rows,
            k,
            qs: bytemuck::cast_slice(qs),
            d: split_f16(d)?,
        })
    }

    pub fn row_f32(&self, r: usize, out: &mut [f32]) {
        let nb = self.k / QK;
        for b in 0..nb {
            let d = f16_to_f32(self.d[r * nb + b]);
            for j in 0..QK {
                out[b * QK + j] = d * self.qs[r * self.k + b * QK + j] as f32;
            }
        }
    }
}

fn f16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// GGUF Q4_1 blocks (f16 d, f16 m, 16 bytes) -> packed Q4_1R bytes.
pub fn repack_gguf_q4_1(raw: &[u8], rows: usize, k: usize) -> Result<Vec<u8>, String> {
    let nb = rows * k / QK;
    if k % QK != 0 || raw.len() != nb * 20 {
        return Err(format!("Q4_1 size {} for {rows}x{k}", raw.len()));
    }
    let mut qs = Vec::with_capacity(nb * 16);
    let mut d = Vec::with_capacity(nb);
    let mut m = Vec::with_capacity(nb);
    for blk in raw.chunks_exact(20) {
        d.push(f16_at(blk, 0));
        m.push(f16_at(blk, 2));
        qs.extend_from_slice(&blk[4..20]);
    }
    qs.extend_from_slice(bytemuck::cast_slice(&d));
    qs.extend_from_slice(bytemuck::cast_slice(&m));
    Ok(qs)
}

/// GGUF Q8_0 blocks (f16 d, 32 x i8) -> packed Q8_0R bytes.
pub fn repack_gguf_q8_0(raw: &[u8], rows: usize, k: usize) -> Result<Vec<u8>, String> {
    let nb = rows * k / QK;
    if k % QK != 0 || raw.len() != nb * 34 {
        return Err(format!("Q8_0 size {} for {rows}x{k}", raw.len()));
    }
    let mut qs = Vec::with_capacity(nb * 34);
    let mut d = Vec::with_capacity(nb);
    for blk in raw.chunks_exact(34) {
        d.push(f16_at(blk, 0));
        qs.extend_from_slice(&blk[2..34]);
    }
    qs.extend_from_slice(bytemuck::cast_slice(&d));
    Ok(qs)
}

/// F32 `[rows, k]` -> packed Q8_0R (symmetric, per 32-block absmax scale).
pub fn quantize_q8_0(w: &[f32], rows: usize, k: usize) -> Vec<u8> {
    let mut qs: Vec<u8> = Vec::with_capacity(rows * k + rows * k / 8);
    let mut d = Vec::with_capacity(rows * k / QK);
    for blk in w.chunks_exact(QK) {
        let amax = blk.iter().fold(0f32, |a, &x| a.max(x.abs()));
        // Quantize against the f16-rounded scale that will be stored.
        let s = f16::from_f32(amax / 127.0);
        let inv = if s.to_f32() > 0.0 {
            1.0 / s.to_f32()
        } else {
            0.0
        };
        d.push(s.to_bits());
        qs.extend(
            blk.iter()
                .map(|&x| (x * inv).round().clamp(-127.0, 127.0) as i8 as u8),
        );
    }
    qs.extend_from_slice(bytemuck::cast_slice(&d));
    qs
}

/// F32 `[rows, k]` -> packed Q4_1R (min/max per block), for synthetic models.
pub fn quantize_q4_1(w: &[f32], rows: usize, k: usize) -> Vec<u8> {
    let nb = rows * k / QK;
    let mut qs = Vec::with_capacity(nb * 20);
    let mut d = Vec::with_capacity(nb);
    let mut m = Vec::with_capacity(nb);
    for blk in w.chunks_exact(QK) {
        let mn = blk.iter().fold(f32::INFINITY, |a, &x| a.min(x));
        let mx = blk.iter().fold(f32::NEG_INFINITY, |a, &x| a.max(x));
        let s = f16::from_f32((mx - mn) / 15.0);
        let mn16 = f16::from_f32(mn);
        let (sf, mnf) = (s.to_f32(), mn16.to_f32());
        let inv = if sf > 0.0 { 1.0 / sf } else { 0.0 };
        d.push(s.to_bits());
        m.push(mn16.to_bits());
        let q = |x: f32| ((x - mnf) * inv).round().clamp(0.0, 15.0) as u8;
        for j in 0..16 {
            qs.push(q(blk[j]) | (q(blk[j + 16]) << 4));
        }
    }
    qs.extend_from_slice(bytemuck::cast_slice(&d));
    qs.extend_from_slice(bytemuck::cast_slice(&m));
    qs
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
}

impl ActQ8 {
    pub fn quantize(&mut self, x: &[f32], n: usize, k: usize) {
        debug_assert!(k % QK == 0 && x.len() >= n * k);
        self.n = n;
        self.k = k;
        self.qs.resize(n * k, 0);
        self.d.resize(n * k / QK, 0.0);
        // 8 spare entries: SIMD kernels read `s` in 8-block vectors (the
        // extra lanes meet zero-padded weight offsets).
        self.s.resize(n * k / QK + 8, 0.0);
        let nb = n * k / QK;
        crate::kernels::quantize_row_q8(&x[..n * k], &mut self.qs, &mut self.d, &mut self.s[..nb]);
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
