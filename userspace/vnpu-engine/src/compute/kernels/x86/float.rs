//! f32 kernels on AVX2 + FMA (attention, activations, activation
//! quantization); the AVX-512 path runs these too.

use crate::compute::kernels::scalar;
use crate::compute::quant::QK;
use std::arch::x86_64::*;

/// Cephes expf: ln 2 split in two (exact high part, then the rest).
pub(super) const LN2_HI: f32 = 0.693_359_4;
pub(super) const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes expf polynomial, highest power first.
pub(super) const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];
/// erf, Abramowitz & Stegun 7.1.26: t = 1 / (1 + P z), then the
/// polynomial in t, highest power first (as [`scalar::erf`]).
pub(super) const ERF_P: f32 = 0.327_591_1;
pub(super) const ERF_POLY: [f32; 5] = [
    1.061_405_4,
    -1.453_152_1,
    1.421_413_7,
    -0.284_496_74,
    0.254_829_6,
];

#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// # Safety
/// Requires AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
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
/// Requires AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
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
/// [`crate::compute::quant::quantize_q8_scalar`]; ties round to even instead of away).
///
/// # Safety
/// Requires AVX2 and FMA; `x.len()` a multiple of 32 and the outputs sized to match.
#[target_feature(enable = "avx2,fma")]
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
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn exp8(x: __m256) -> __m256 {
    let x = _mm256_min_ps(
        _mm256_max_ps(x, _mm256_set1_ps(-87.3)),
        _mm256_set1_ps(88.3),
    );
    let fx = _mm256_floor_ps(_mm256_fmadd_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
        _mm256_set1_ps(0.5),
    ));
    let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(LN2_HI), x);
    let x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(LN2_LO), x);
    let mut y = _mm256_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(*c));
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
/// Requires AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
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
        g[i] = scalar::silu(g[i]) * u[i];
        i += 1;
    }
}

/// Exact-form GELU `0.5 x (1 + erf(x / sqrt 2))` in place; erf by
/// Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7), as [`scalar::erf`].
///
/// # Safety
/// Requires AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
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
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(z, _mm256_set1_ps(ERF_P), one));
        let mut poly = _mm256_set1_ps(ERF_POLY[0]);
        for c in &ERF_POLY[1..] {
            poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(*c));
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
        x[i] = scalar::gelu(x[i]);
        i += 1;
    }
}

/// Horizontal sums of 8 vectors at once -> `[sum(v0), .., sum(v7)]`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hsum8(v: &[__m256; 8]) -> __m256 {
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
