//! AVX-512 VNNI kernels: 256-bit `vpdpbusd` (AVX512VL) accumulates the u8 x i8
//! dots into i32 (no 16-bit stage). Same tiling as AVX2 (generated from
//! avx2.rs by gen_avx512.sh: do not edit).
//!
//! GEMM over the 8-row panel layout (see [`crate::quant`]): one 32-byte
//! weight vector holds 4 quants of each of 8 rows, so `vpmaddubsw` against 4
//! activation bytes broadcast to every lane yields the 8 rows' partial dots
//! in place. A tile is P panels x T tokens; per 32-block the partial dots
//! accumulate in integer lanes (AVX2 Q4_1: 16-bit, as 8 x 2 x 15 x 127 <
//! 2^15; VNNI: 32-bit) and are converted and scaled once per block, never
//! summed horizontally.

use super::OutMat;
use crate::quant::{ActQ8, Q4_1Mat, Q8_0Mat, PANEL, Q4_1_PB, Q8_0_PB, QK};
use std::arch::x86_64::*;

#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

// The three integer-dot helpers below are the only lines gen_avx512.sh
// rewrites for VNNI (`vpdpbusd` accumulates u8 x i8 straight into i32).

/// Q4_1 inner step: 16-bit accumulate of u8 x i8 pair products.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn acc_q4(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, w, a)
}

/// Q4_1 block end: 16-bit pair sums -> one i32 per row.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn finish_q4(acc: __m256i) -> __m256i {
    acc
}

/// Q8_0 inner step (`w` = |weights|, `a` = activations with the weights'
/// signs): |w| * |a| * 2 < 2^15 fits one maddubs, but not two, so widen each.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn acc_q8(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    _mm256_dpbusd_epi32(acc, w, a)
}

/// 4 activation bytes of token row `x` at byte offset `o`, in every lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn bcast4(x: *const i8, o: usize) -> __m256i {
    _mm256_set1_epi32((x.add(o) as *const i32).read_unaligned())
}

/// Stores 8 row results of token `t` for panel `p` (rows past `rows` dropped).
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store8(out: &OutMat, t: usize, p: usize, rows: usize, v: __m256) {
    let r = p * PANEL;
    let dst = out.ptr.add(t * out.ldo + r);
    if r + PANEL <= rows {
        _mm256_storeu_ps(dst, v);
    } else {
        let mut tmp = [0f32; 8];
        _mm256_storeu_ps(tmp.as_mut_ptr(), v);
        std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, rows - r);
    }
}

/// Software prefetch distance, in panel-blocks (~2.5 KB), of the
/// single-token tiles: decode streams every weight once from DRAM, and
/// asking early measured ~10-15% more tokens per CPU-second than relying on
/// the hardware prefetcher (16, 24, 48 alike; 0 and 4 worse). A prefetch
/// past the end of the weights is only a hint, never a fault.
const PREFETCH: usize = 16;

/// P panels from `p0` x T tokens from `t`, Q4_1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_1_tile<const P: usize, const T: usize>(
    w: &Q4_1Mat,
    x: &ActQ8,
    p0: usize,
    t: usize,
    out: &OutMat,
) {
    let nb = w.k / QK;
    let k = x.k;
    let base = w.data.as_ptr().add(p0 * nb * Q4_1_PB);
    let pstride = nb * Q4_1_PB;
    let xq = x.qs.as_ptr().add(t * k);
    let xd = x.d.as_ptr().add(t * nb);
    let xs = x.s.as_ptr().add(t * nb);
    let mask = _mm256_set1_epi8(15);
    let mut acc = [[_mm256_setzero_ps(); T]; P];
    for b in 0..nb {
        if T == 1 {
            for p in 0..P {
                let a = base.wrapping_add(p * pstride + (b + PREFETCH) * Q4_1_PB) as *const i8;
                for l in 0..Q4_1_PB.div_ceil(64) {
                    _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(64 * l));
                }
            }
        }
        let mut a16 = [[_mm256_setzero_si256(); T]; P];
        for h in 0..4 {
            let mut lo = [_mm256_setzero_si256(); P];
            let mut hi = [_mm256_setzero_si256(); P];
            for p in 0..P {
                let v = _mm256_loadu_si256(
                    base.add(p * pstride + b * Q4_1_PB + h * 32) as *const __m256i
                );
                lo[p] = _mm256_and_si256(v, mask);
                hi[p] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
            }
            for j in 0..T {
                let al = bcast4(xq, j * k + b * QK + 4 * h);
                let ah = bcast4(xq, j * k + b * QK + 16 + 4 * h);
                for p in 0..P {
                    a16[p][j] = acc_q4(a16[p][j], lo[p], al);
                    a16[p][j] = acc_q4(a16[p][j], hi[p], ah);
                }
            }
        }
        for p in 0..P {
            let sc = base.add(p * pstride + b * Q4_1_PB + 128);
            let dv = _mm256_cvtph_ps(_mm_loadu_si128(sc as *const __m128i));
            let mv = _mm256_cvtph_ps(_mm_loadu_si128(sc.add(16) as *const __m128i));
            for j in 0..T {
                let s = _mm256_cvtepi32_ps(finish_q4(a16[p][j]));
                let da = _mm256_broadcast_ss(&*xd.add(j * nb + b));
                acc[p][j] = _mm256_fmadd_ps(s, _mm256_mul_ps(dv, da), acc[p][j]);
                let sa = _mm256_broadcast_ss(&*xs.add(j * nb + b));
                acc[p][j] = _mm256_fmadd_ps(mv, sa, acc[p][j]);
            }
        }
    }
    for p in 0..P {
        for j in 0..T {
            store8(out, t + j, p0 + p, w.rows, acc[p][j]);
        }
    }
}

/// P panels from `p0` x T tokens from `t`, Q8_0.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_tile<const P: usize, const T: usize>(
    w: &Q8_0Mat,
    x: &ActQ8,
    p0: usize,
    t: usize,
    out: &OutMat,
) {
    let nb = w.k / QK;
    let k = x.k;
    let base = w.data.as_ptr().add(p0 * nb * Q8_0_PB);
    let pstride = nb * Q8_0_PB;
    let xq = x.qs.as_ptr().add(t * k);
    let xd = x.d.as_ptr().add(t * nb);
    let mut acc = [[_mm256_setzero_ps(); T]; P];
    for b in 0..nb {
        if T == 1 {
            for p in 0..P {
                let a = base.wrapping_add(p * pstride + (b + PREFETCH) * Q8_0_PB) as *const i8;
                for l in 0..Q8_0_PB.div_ceil(64) {
                    _mm_prefetch::<_MM_HINT_T0>(a.wrapping_add(64 * l));
                }
            }
        }
        let mut a32 = [[_mm256_setzero_si256(); T]; P];
        for g in 0..8 {
            let mut v = [_mm256_setzero_si256(); P];
            let mut u = [_mm256_setzero_si256(); P];
            for p in 0..P {
                v[p] = _mm256_loadu_si256(
                    base.add(p * pstride + b * Q8_0_PB + g * 32) as *const __m256i
                );
                u[p] = _mm256_sign_epi8(v[p], v[p]);
            }
            for j in 0..T {
                let a = bcast4(xq, j * k + b * QK + 4 * g);
                for p in 0..P {
                    a32[p][j] = acc_q8(a32[p][j], u[p], _mm256_sign_epi8(a, v[p]));
                }
            }
        }
        for p in 0..P {
            let sc = base.add(p * pstride + b * Q8_0_PB + 256);
            let dv = _mm256_cvtph_ps(_mm_loadu_si128(sc as *const __m128i));
            for j in 0..T {
                let s = _mm256_cvtepi32_ps(a32[p][j]);
                let da = _mm256_broadcast_ss(&*xd.add(j * nb + b));
                acc[p][j] = _mm256_fmadd_ps(s, _mm256_mul_ps(dv, da), acc[p][j]);
            }
        }
    }
    for p in 0..P {
        for j in 0..T {
            store8(out, t + j, p0 + p, w.rows, acc[p][j]);
        }
    }
}

// Tokens in tiles of 4 (register budget: 4 x 16-bit + 4 f32 accumulators,
// 2 unpacked weight vectors, 2 broadcasts) inside each panel, so a panel's
// weights stay in L1 while the activations stream; a single token (decode)
// takes 2 panels at a time for two independent dependency chains.
//
// (Tried and measured slower here: widening Q4_1 panels to a byte per quant
// in a per-thread buffer to drop the in-loop unpack, with 1 x 4 and 2 x 2
// tiles, from intrinsics and from asm: 140-147 GOPS against 160.)
macro_rules! tiled {
    ($w:expr, $x:expr, $r0:expr, $r1:expr, $out:expr, $tile:ident) => {{
        let (w, x, out) = ($w, $x, &$out);
        debug_assert!($r0 % PANEL == 0 && ($r1 % PANEL == 0 || $r1 == w.rows));
        let (p0, p1) = ($r0 / PANEL, $r1.div_ceil(PANEL));
        let n = x.n;
        if n == 1 {
            let mut p = p0;
            while p + 2 <= p1 {
                $tile::<2, 1>(w, x, p, 0, out);
                p += 2;
            }
            if p < p1 {
                $tile::<1, 1>(w, x, p, 0, out);
            }
        } else {
            // Token blocks of ~128 KB of activations, so they stay in L2
            // while every panel of the row range streams past them (a
            // 32-sentence MiniLM batch has 1024 token rows).
            let tb = ((128 << 10) / x.k.max(1)).max(4) / 4 * 4;
            let mut t0 = 0;
            while t0 < n {
                let t1 = (t0 + tb).min(n);
                for p in p0..p1 {
                    let mut t = t0;
                    while t + 4 <= t1 {
                        $tile::<1, 4>(w, x, p, t, out);
                        t += 4;
                    }
                    match t1 - t {
                        3 => $tile::<1, 3>(w, x, p, t, out),
                        2 => $tile::<1, 2>(w, x, p, t, out),
                        1 => $tile::<1, 1>(w, x, p, t, out),
                        _ => {}
                    }
                }
                t0 = t1;
            }
        }
    }};
}

/// # Safety
/// See [`super::gemm_q4_1`]; requires AVX-512 F/BW/VL/VNNI, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemm_q4_1(w: &Q4_1Mat, x: &ActQ8, r0: usize, r1: usize, out: OutMat) {
    tiled!(w, x, r0, r1, out, q4_1_tile)
}

/// # Safety
/// See [`super::gemm_q4_1`]; requires AVX-512 F/BW/VL/VNNI, FMA, F16C.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn gemm_q8_0(w: &Q8_0Mat, x: &ActQ8, r0: usize, r1: usize, out: OutMat) {
    tiled!(w, x, r0, r1, out, q8_0_tile)
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
        g[i] = crate::kernels::scalar::silu(g[i]) * u[i];
        i += 1;
    }
}

/// Exact-form GELU `0.5 x (1 + erf(x / sqrt 2))` in place; erf by
/// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as [`crate::kernels::scalar::erf`].
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
        x[i] = crate::kernels::scalar::gelu(x[i]);
        i += 1;
    }
}

/// Horizontal sums of 8 vectors at once -> `[sum(v0), .., sum(v7)]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn hsum8(v: &[__m256; 8]) -> __m256 {
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

/// One query row of attention, head dim `8 * C` (see [`super::attend_row`]).
///
/// # Safety
/// Requires AVX-512 F/BW/VL/VNNI; `q.len() == out.len() == 8 * C`, rows
/// `j * stride .. j * stride + 8 * C` of `k` and `v` in bounds for `j < len`,
/// `sc.len() >= len`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub unsafe fn attend_row<const C: usize>(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    stride: usize,
    len: usize,
    scale: f32,
    sc: &mut [f32],
    out: &mut [f32],
) {
    let (qp, kp, vp, sp) = (q.as_ptr(), k.as_ptr(), v.as_ptr(), sc.as_mut_ptr());
    // Scores, 8 keys at a time: 8 accumulators, one horizontal-sum tree.
    let vs = _mm256_set1_ps(scale);
    let mut mx = _mm256_set1_ps(f32::NEG_INFINITY);
    let mut j = 0;
    while j + 8 <= len {
        let mut acc = [_mm256_setzero_ps(); 8];
        for c in 0..C {
            let qv = _mm256_loadu_ps(qp.add(8 * c));
            for (i, a) in acc.iter_mut().enumerate() {
                *a = _mm256_fmadd_ps(qv, _mm256_loadu_ps(kp.add((j + i) * stride + 8 * c)), *a);
            }
        }
        let s = _mm256_mul_ps(hsum8(&acc), vs);
        mx = _mm256_max_ps(mx, s);
        _mm256_storeu_ps(sp.add(j), s);
        j += 8;
    }
    let mut m = {
        let m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)))
    };
    while j < len {
        let mut a = _mm256_setzero_ps();
        for c in 0..C {
            a = _mm256_fmadd_ps(
                _mm256_loadu_ps(qp.add(8 * c)),
                _mm256_loadu_ps(kp.add(j * stride + 8 * c)),
                a,
            );
        }
        let s = hsum(a) * scale;
        m = m.max(s);
        *sp.add(j) = s;
        j += 1;
    }
    // exp(s - max) in place, and its sum.
    let vm = _mm256_set1_ps(m);
    let mut sum = _mm256_setzero_ps();
    let mut j = 0;
    while j + 8 <= len {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sp.add(j)), vm));
        sum = _mm256_add_ps(sum, e);
        _mm256_storeu_ps(sp.add(j), e);
        j += 8;
    }
    let mut total = hsum(sum);
    while j < len {
        let e = (*sp.add(j) - m).exp();
        total += e;
        *sp.add(j) = e;
        j += 1;
    }
    // Weighted sum of value rows, output kept in registers; normalized once.
    let mut o = [_mm256_setzero_ps(); C];
    for j in 0..len {
        let p = _mm256_broadcast_ss(&*sp.add(j));
        for (c, oc) in o.iter_mut().enumerate() {
            *oc = _mm256_fmadd_ps(p, _mm256_loadu_ps(vp.add(j * stride + 8 * c)), *oc);
        }
    }
    let inv = _mm256_set1_ps(1.0 / total);
    for (c, oc) in o.iter().enumerate() {
        _mm256_storeu_ps(out.as_mut_ptr().add(8 * c), _mm256_mul_ps(*oc, inv));
    }
}
