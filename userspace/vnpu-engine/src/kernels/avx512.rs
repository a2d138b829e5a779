//! AVX-512 VNNI kernels: 256-bit `vpdpbusd` (AVX512VL) replaces maddubs+madd,
//! which also removes the i16 saturation concern. Same tiling as AVX2
//! (generated from avx2.rs by gen_avx512.sh: do not edit).
//!
//! GEMM tiles are R weight rows x T tokens: each unpacked weight block is
//! reused T times and each activation block R times, keeping R*T float
//! accumulators in registers (16 ymm available).

use super::OutMat;
use crate::quant::{ActQ8, Q4_1Mat, Q8_0Mat, QK};
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 packed bytes -> 32 u8 lanes in element order (low nibbles, then high):
/// broadcast the 16 bytes to both halves, shift the upper half by 4, mask.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(crate) unsafe fn unpack_q4(p: *const u8) -> __m256i {
    let v = _mm256_broadcastsi128_si256(_mm_loadu_si128(p as *const __m128i));
    let v = _mm256_srlv_epi64(v, _mm256_set_epi64x(4, 4, 0, 0));
    _mm256_and_si256(v, _mm256_set1_epi8(15))
}

/// u8 x i8 block dot -> 8 i32 partial sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn dot_u8i8(w: __m256i, a: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, a)
}

/// f16 scale bits of rows `r..r+R` -> f32 `dst[i * nb + b]` (F16C, 8 at a time).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn prep_scales(src: &[u16], r: usize, rows: usize, nb: usize, dst: &mut [f32]) {
    let n = rows * nb;
    let s = src.as_ptr().add(r * nb);
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(
            dst.as_mut_ptr().add(i),
            _mm256_cvtph_ps(_mm_loadu_si128(s.add(i) as *const __m128i)),
        );
        i += 8;
    }
    if i < n {
        // Tail through a zero-padded copy: no read past `src`, and padded
        // destination lanes become 0.0 (the offset sums rely on that).
        let mut tmp = [0u16; 8];
        tmp[..n - i].copy_from_slice(&src[r * nb + i..r * nb + n]);
        let v = _mm256_cvtph_ps(_mm_loadu_si128(tmp.as_ptr() as *const __m128i));
        if dst.len() >= i + 8 {
            _mm256_storeu_ps(dst.as_mut_ptr().add(i), v);
        } else {
            let mut f = [0f32; 8];
            _mm256_storeu_ps(f.as_mut_ptr(), v);
            dst[i..n].copy_from_slice(&f[..n - i]);
        }
    }
}

/// Generic R rows x T tokens Q4_1 tile; `sd`/`sm` are the rows' f32 scales.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_1_tile<const R: usize, const T: usize>(
    w: &Q4_1Mat,
    x: &ActQ8,
    r: usize,
    t: usize,
    ss: usize,
    sd: &[f32],
    sm: &[f32],
    out: &OutMat,
) {
    let nb = w.k / QK;
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let wq = w.qs.as_ptr();
    let xq = x.qs.as_ptr();
    let xd = x.d.as_ptr();
    for b in 0..nb {
        let mut wv = [_mm256_setzero_si256(); R];
        for i in 0..R {
            let p = wq.add(((r + i) * nb + b) * 16);
            wv[i] = unpack_q4(p);
        }
        for j in 0..T {
            let a = _mm256_loadu_si256(xq.add((t + j) * w.k + b * QK) as *const __m256i);
            let da = _mm256_broadcast_ss(&*xd.add((t + j) * nb + b));
            for i in 0..R {
                let p = _mm256_cvtepi32_ps(dot_u8i8(wv[i], a));
                let sc = _mm256_mul_ps(_mm256_broadcast_ss(&sd[i * ss + b]), da);
                acc[i][j] = _mm256_fmadd_ps(p, sc, acc[i][j]);
            }
        }
    }
    // Offsets lane-wise into the accumulators (rows of `sm` are zero-padded
    // to `ss` >= nb rounded up to 8; ActQ8::s has 8 spare entries).
    let mut b = 0;
    while b < nb {
        for i in 0..R {
            let mv = _mm256_loadu_ps(sm.as_ptr().add(i * ss + b));
            for j in 0..T {
                let sv = _mm256_loadu_ps(x.s.as_ptr().add((t + j) * nb + b));
                acc[i][j] = _mm256_fmadd_ps(mv, sv, acc[i][j]);
            }
        }
        b += 8;
    }
    for i in 0..R {
        for j in 0..T {
            out.set(t + j, r + i, hsum(acc[i][j]));
        }
    }
}

/// Hand-unrolled 2 rows x 4 tokens Q4_1 tile (the prefill hot loop): named
/// accumulators keep LLVM from spilling the generic version's arrays.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_1_tile_2x4(
    w: &Q4_1Mat,
    x: &ActQ8,
    r: usize,
    t: usize,
    ss: usize,
    sd: &[f32],
    sm: &[f32],
    out: &OutMat,
) {
    let nb = w.k / QK;
    let k = w.k;
    let w0 = w.qs.as_ptr().add(r * nb * 16);
    let w1 = w0.add(nb * 16);
    let d0 = sd.as_ptr();
    let d1 = d0.add(ss);
    let xq = x.qs.as_ptr().add(t * k);
    let xd = x.d.as_ptr().add(t * nb);
    let z = _mm256_setzero_ps();
    let (mut a00, mut a01, mut a02, mut a03) = (z, z, z, z);
    let (mut a10, mut a11, mut a12, mut a13) = (z, z, z, z);
    for b in 0..nb {
        let q0 = unpack_q4(w0.add(b * 16));
        let q1 = unpack_q4(w1.add(b * 16));
        let s0 = _mm256_broadcast_ss(&*d0.add(b));
        let s1 = _mm256_broadcast_ss(&*d1.add(b));
        macro_rules! tok {
            ($j:expr, $acc0:ident, $acc1:ident) => {{
                let a = _mm256_loadu_si256(xq.add($j * k + b * QK) as *const __m256i);
                let da = _mm256_broadcast_ss(&*xd.add($j * nb + b));
                let p0 = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), q0, a));
                let p1 = _mm256_cvtepi32_ps(_mm256_dpbusd_epi32(_mm256_setzero_si256(), q1, a));
                $acc0 = _mm256_fmadd_ps(p0, _mm256_mul_ps(s0, da), $acc0);
                $acc1 = _mm256_fmadd_ps(p1, _mm256_mul_ps(s1, da), $acc1);
            }};
        }
        tok!(0, a00, a10);
        tok!(1, a01, a11);
        tok!(2, a02, a12);
        tok!(3, a03, a13);
    }
    // Q4_1 offsets: sum_b m[r,b] * s[t,b], lane-wise into the accumulators
    // (scale rows and ActQ8::s are padded to a multiple of 8 blocks).
    let m0 = sm.as_ptr();
    let m1 = m0.add(ss);
    let xs = x.s.as_ptr().add(t * nb);
    let mut b = 0;
    while b < nb {
        let (mv0, mv1) = (_mm256_loadu_ps(m0.add(b)), _mm256_loadu_ps(m1.add(b)));
        let s0 = _mm256_loadu_ps(xs.add(b));
        let s1 = _mm256_loadu_ps(xs.add(nb + b));
        let s2 = _mm256_loadu_ps(xs.add(2 * nb + b));
        let s3 = _mm256_loadu_ps(xs.add(3 * nb + b));
        a00 = _mm256_fmadd_ps(mv0, s0, a00);
        a01 = _mm256_fmadd_ps(mv0, s1, a01);
        a02 = _mm256_fmadd_ps(mv0, s2, a02);
        a03 = _mm256_fmadd_ps(mv0, s3, a03);
        a10 = _mm256_fmadd_ps(mv1, s0, a10);
        a11 = _mm256_fmadd_ps(mv1, s1, a11);
        a12 = _mm256_fmadd_ps(mv1, s2, a12);
        a13 = _mm256_fmadd_ps(mv1, s3, a13);
        b += 8;
    }
    let sums = hsum8([a00, a01, a02, a03, a10, a11, a12, a13]);
    let mut v = [0f32; 8];
    _mm256_storeu_ps(v.as_mut_ptr(), sums);
    for i in 0..2 {
        for j in 0..4 {
            out.set(t + j, r + i, v[i * 4 + j]);
        }
    }
}

/// Horizontal sums of 8 vectors at once -> one vector `[sum(v0), .., sum(v7)]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn hsum8(v: [__m256; 8]) -> __m256 {
    let h01 = _mm256_hadd_ps(v[0], v[1]);
    let h23 = _mm256_hadd_ps(v[2], v[3]);
    let h45 = _mm256_hadd_ps(v[4], v[5]);
    let h67 = _mm256_hadd_ps(v[6], v[7]);
    let a = _mm256_hadd_ps(h01, h23);
    let b = _mm256_hadd_ps(h45, h67);
    _mm256_add_ps(
        _mm256_permute2f128_ps(a, b, 0x20),
        _mm256_permute2f128_ps(a, b, 0x31),
    )
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_tile<const R: usize, const T: usize>(
    w: &Q8_0Mat,
    x: &ActQ8,
    r: usize,
    t: usize,
    ss: usize,
    sd: &[f32],
    _sm: &[f32],
    out: &OutMat,
) {
    let nb = w.k / QK;
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    let wq = w.qs.as_ptr();
    let xq = x.qs.as_ptr();
    let xd = x.d.as_ptr();
    for b in 0..nb {
        let mut wabs = [_mm256_setzero_si256(); R];
        let mut wsrc = [_mm256_setzero_si256(); R];
        for i in 0..R {
            let p = wq.add((r + i) * w.k + b * QK);
            let v = _mm256_loadu_si256(p as *const __m256i);
            wsrc[i] = v;
            wabs[i] = _mm256_sign_epi8(v, v);
        }
        for j in 0..T {
            let a = _mm256_loadu_si256(xq.add((t + j) * w.k + b * QK) as *const __m256i);
            let da = _mm256_broadcast_ss(&*xd.add((t + j) * nb + b));
            for i in 0..R {
                // |w| * (a * sign(w)) keeps maddubs' unsigned operand in range.
                let p = _mm256_cvtepi32_ps(dot_u8i8(wabs[i], _mm256_sign_epi8(a, wsrc[i])));
                let sc = _mm256_mul_ps(_mm256_broadcast_ss(&sd[i * ss + b]), da);
                acc[i][j] = _mm256_fmadd_ps(p, sc, acc[i][j]);
            }
        }
    }
    for i in 0..R {
        for j in 0..T {
            out.set(t + j, r + i, hsum(acc[i][j]));
        }
    }
}

// Prefill: 2 rows x 4 tokens (8 accumulators + 2 weights + operands fit
// the 16 ymm registers; weight unpack amortized over 4 tokens), looping
// token tiles inside blocks of ROW_BLOCK rows so both the block's weights
// and the current 4 activation rows stay in L1. Leftover tokens (and
// decode, n = 1) use 4-row tiles to keep weight loads in flight. Scales of
// a row block are widened to f32 once, outside the token loop.
const ROW_BLOCK: usize = 32;

macro_rules! tiled {
    ($w:expr, $x:expr, $r0:expr, $r1:expr, $out:expr, $has_m:expr, $t24:expr, $tile:ident) => {{
        let (w, x, out) = ($w, $x, &$out);
        let nb = w.k / QK;
        // Rows padded to a multiple of 8 blocks for the vectorized offset sums.
        let nbp = nb.div_ceil(8) * 8;
        let mut sd = vec![0f32; ROW_BLOCK * nbp];
        let mut sm = vec![0f32; ROW_BLOCK * nbp];
        let (n, r1) = (x.n, $r1);
        let n4 = n / 4 * 4;
        let mut rb = $r0;
        while rb < r1 {
            let re = (rb + ROW_BLOCK).min(r1);
            for r in rb..re {
                let o = (r - rb) * nbp;
                prep_scales(w.d, r, 1, nb, &mut sd[o..o + nbp]);
                if $has_m {
                    prep_scales(w.m_bits(), r, 1, nb, &mut sm[o..o + nbp]);
                }
            }
            let mut t = 0;
            while t < n4 {
                let mut r = rb;
                while r + 2 <= re {
                    let o = (r - rb) * nbp;
                    $t24(w, x, r, t, nbp, &sd[o..], &sm[o..], out);
                    r += 2;
                }
                if r < re {
                    let o = (r - rb) * nbp;
                    $tile::<1, 4>(w, x, r, t, nbp, &sd[o..], &sm[o..], out);
                }
                t += 4;
            }
            for t in n4..n {
                let mut r = rb;
                while r + 4 <= re {
                    let o = (r - rb) * nbp;
                    $tile::<4, 1>(w, x, r, t, nbp, &sd[o..], &sm[o..], out);
                    r += 4;
                }
                while r < re {
                    let o = (r - rb) * nbp;
                    $tile::<1, 1>(w, x, r, t, nbp, &sd[o..], &sm[o..], out);
                    r += 1;
                }
            }
            rb = re;
        }
    }};
}

trait MBits {
    fn m_bits(&self) -> &[u16];
}
impl MBits for Q4_1Mat<'_> {
    fn m_bits(&self) -> &[u16] {
        self.m
    }
}
impl MBits for Q8_0Mat<'_> {
    fn m_bits(&self) -> &[u16] {
        &[]
    }
}

/// # Safety
/// See [`super::gemm_q4_1`]; requires AVX-512 F/BW/VL/VNNI, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemm_q4_1(w: &Q4_1Mat, x: &ActQ8, r0: usize, r1: usize, out: OutMat) {
    tiled!(w, x, r0, r1, out, true, q4_1_tile_2x4, q4_1_tile)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_tile_2x4(
    w: &Q8_0Mat,
    x: &ActQ8,
    r: usize,
    t: usize,
    ss: usize,
    sd: &[f32],
    sm: &[f32],
    out: &OutMat,
) {
    // The generic tile compiles well here (an unrolled variant spilled).
    q8_0_tile::<2, 4>(w, x, r, t, ss, sd, sm, out)
}

/// # Safety
/// See [`super::gemm_q4_1`]; requires AVX-512 F/BW/VL/VNNI, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemm_q8_0(w: &Q8_0Mat, x: &ActQ8, r0: usize, r1: usize, out: OutMat) {
    tiled!(w, x, r0, r1, out, false, q8_0_tile_2x4, q8_0_tile)
}

/// # Safety
/// Requires AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm256_setzero_ps();
    let mut acc1 = _mm256_setzero_ps();
    let mut i = 0;
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), acc0);
        acc1 = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i + 8)),
            _mm256_loadu_ps(pb.add(i + 8)),
            acc1,
        );
        i += 16;
    }
    let mut s = hsum(_mm256_add_ps(acc0, acc1));
    while i < n {
        s += a[i] * b[i];
        i += 1;
    }
    s
}

/// # Safety
/// Requires AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn axpy_f32(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let va = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        _mm256_storeu_ps(
            py.add(i),
            _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i))),
        );
        i += 8;
    }
    while i < n {
        y[i] += a * x[i];
        i += 1;
    }
}

/// Per-32-block int8 quantization (same contract as
/// [`crate::quant::quantize_q8_scalar`]; ties round to even instead of away).
///
/// # Safety
/// Requires AVX-512 F/BW/VL/VNNI; `x.len()` a multiple of 32 and the outputs sized to match.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn quantize_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32]) {
    let nb = x.len() / QK;
    let sign = _mm256_set1_ps(-0.0);
    for b in 0..nb {
        let p = x.as_ptr().add(b * QK);
        let v = [
            _mm256_loadu_ps(p),
            _mm256_loadu_ps(p.add(8)),
            _mm256_loadu_ps(p.add(16)),
            _mm256_loadu_ps(p.add(24)),
        ];
        let mut m = _mm256_andnot_ps(sign, v[0]);
        for vi in &v[1..] {
            m = _mm256_max_ps(m, _mm256_andnot_ps(sign, *vi));
        }
        let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        let m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        let amax = _mm_cvtss_f32(m4);
        let sc = amax / 127.0;
        let inv = _mm256_set1_ps(if sc > 0.0 { 1.0 / sc } else { 0.0 });
        let mut iv = [_mm256_setzero_si256(); 4];
        for i in 0..4 {
            iv[i] = _mm256_cvtps_epi32(_mm256_round_ps(
                _mm256_mul_ps(v[i], inv),
                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC,
            ));
        }
        let sum = _mm256_add_epi32(
            _mm256_add_epi32(iv[0], iv[1]),
            _mm256_add_epi32(iv[2], iv[3]),
        );
        let s4 = _mm_add_epi32(
            _mm256_castsi256_si128(sum),
            _mm256_extracti128_si256(sum, 1),
        );
        let s4 = _mm_hadd_epi32(s4, s4);
        let s4 = _mm_hadd_epi32(s4, s4);
        // packs interleave 128-bit lanes; the permute restores element order.
        let a = _mm256_packs_epi32(iv[0], iv[1]);
        let c = _mm256_packs_epi32(iv[2], iv[3]);
        let q = _mm256_packs_epi16(a, c);
        let q = _mm256_permutevar8x32_epi32(q, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256(qs.as_mut_ptr().add(b * QK) as *mut __m256i, q);
        d[b] = sc;
        s[b] = sc * _mm_cvtsi128_si32(s4) as f32;
    }
}

/// exp(x) for 8 lanes (Cephes expf polynomial, ~2 ulp; clamped to the f32 range).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
        _mm256_set1_ps(88.3),
    );
    let fx = _mm256_floor_ps(_mm256_fmadd_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
        _mm256_set1_ps(0.5),
    ));
    let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693_359_4), x);
    let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.121_944_4e-4), x);
    let mut y = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(c));
    }
    let y = _mm256_add_ps(
        _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), x),
        _mm256_set1_ps(1.0),
    );
    let pow2 = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)),
        23,
    );
    _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
}

/// `g = silu(g) * u` (SwiGLU).
///
/// # Safety
/// Requires AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn silu_mul(g: &mut [f32], u: &[f32]) {
    let n = g.len().min(u.len());
    let (pg, pu) = (g.as_mut_ptr(), u.as_ptr());
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        let x = _mm256_loadu_ps(pg.add(i));
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
        let s = _mm256_div_ps(x, _mm256_add_ps(one, e));
        _mm256_storeu_ps(pg.add(i), _mm256_mul_ps(s, _mm256_loadu_ps(pu.add(i))));
        i += 8;
    }
    while i < n {
        g[i] = crate::ops::silu(g[i]) * u[i];
        i += 1;
    }
}

/// Exact-form GELU `0.5 x (1 + erf(x / sqrt 2))` in place; erf by
/// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as [`crate::ops::erf`].
///
/// # Safety
/// Requires AVX-512 F/BW/VL/VNNI.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gelu(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let sign = _mm256_set1_ps(-0.0);
    let one = _mm256_set1_ps(1.0);
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_loadu_ps(p.add(i));
        let u = _mm256_mul_ps(v, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let z = _mm256_andnot_ps(sign, u);
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(z, _mm256_set1_ps(0.327_591_1), one));
        let mut poly = _mm256_set1_ps(1.061_405_4);
        for c in [-1.453_152_1, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
            poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
        }
        poly = _mm256_mul_ps(poly, t);
        let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(z, z)));
        let r = _mm256_fnmadd_ps(poly, e, one);
        let erf = _mm256_or_ps(r, _mm256_and_ps(u, sign));
        _mm256_storeu_ps(
            p.add(i),
            _mm256_mul_ps(
                _mm256_mul_ps(_mm256_set1_ps(0.5), v),
                _mm256_add_ps(one, erf),
            ),
        );
        i += 8;
    }
    while i < n {
        x[i] = crate::ops::gelu(x[i]);
        i += 1;
    }
}
