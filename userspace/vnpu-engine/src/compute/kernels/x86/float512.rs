//! f32 element-wise kernels on 512-bit registers for the AVX-512 ISA, each
//! lane the same operations as [`super::float`]'s.

use super::float::{ERF_P, ERF_POLY, EXP_POLY, LN2_HI, LN2_LO};
use crate::compute::kernels::scalar;
use crate::compute::quant::QK;
use std::arch::x86_64::*;

/// exp(x) for 16 lanes: [`super::float`]'s Cephes polynomial on zmm.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn exp16(x: __m512) -> __m512 {
    let x = _mm512_min_ps(
        _mm512_max_ps(x, _mm512_set1_ps(-87.3)),
        _mm512_set1_ps(88.3),
    );
    let fx =
        _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(_mm512_fmadd_ps(
            x,
            _mm512_set1_ps(std::f32::consts::LOG2_E),
            _mm512_set1_ps(0.5),
        ));
    let x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(LN2_HI), x);
    let x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(LN2_LO), x);
    let mut y = _mm512_set1_ps(EXP_POLY[0]);
    for c in &EXP_POLY[1..] {
        y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(*c));
    }
    let y = _mm512_add_ps(
        _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), x),
        _mm512_set1_ps(1.0),
    );
    let pow2 = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvttps_epi32(fx),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(y, _mm512_castsi512_ps(pow2))
}

/// Per-32-block int8 quantization (contract of
/// [`crate::compute::quant::quantize_q8_scalar`], ties to even), also
/// writing each block's [`crate::compute::quant::ActQ8::off`].
///
/// # Safety
/// Requires AVX-512 F; `x.len()` a multiple of 32 and the outputs sized to match.
#[target_feature(enable = "avx2,fma,avx512f")]
pub unsafe fn quantize_q8(x: &[f32], qs: &mut [i8], d: &mut [f32], s: &mut [f32], off: &mut [i32]) {
    for b in 0..x.len() / QK {
        let p = x.as_ptr().add(b * QK);
        let (v0, v1) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
        let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v0), _mm512_abs_ps(v1)));
        let sc = amax / 127.0;
        let inv = _mm512_set1_ps(if sc > 0.0 { 1.0 / sc } else { 0.0 });
        // cvtps rounds to nearest even (MXCSR default), as the AVX2 kernel.
        let i0 = _mm512_cvtps_epi32(_mm512_mul_ps(v0, inv));
        let i1 = _mm512_cvtps_epi32(_mm512_mul_ps(v1, inv));
        let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(i0, i1));
        let q = qs.as_mut_ptr().add(b * QK) as *mut __m128i;
        _mm_storeu_si128(q, _mm512_cvtsepi32_epi8(i0));
        _mm_storeu_si128(q.add(1), _mm512_cvtsepi32_epi8(i1));
        d[b] = sc;
        s[b] = sc * sum as f32;
        off[b] = -128 * sum;
    }
}

/// `g = silu(g) * u` (SwiGLU).
///
/// # Safety
/// Requires AVX-512 F, AVX2 and FMA.
#[target_feature(enable = "avx2,fma,avx512f")]
pub unsafe fn silu_mul(g: &mut [f32], u: &[f32]) {
    let n = g.len().min(u.len());
    let (pg, pu) = (g.as_mut_ptr(), u.as_ptr());
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i + 16 <= n {
        let x = _mm512_loadu_ps(pg.add(i));
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), x));
        let s = _mm512_div_ps(x, _mm512_add_ps(one, e));
        _mm512_storeu_ps(pg.add(i), _mm512_mul_ps(s, _mm512_loadu_ps(pu.add(i))));
        i += 16;
    }
    while i < n {
        g[i] = scalar::silu(g[i]) * u[i];
        i += 1;
    }
}

/// Exact-form GELU in place, as [`super::float::gelu`] on 16 lanes.
///
/// # Safety
/// Requires AVX-512 F, AVX2 and FMA.
#[target_feature(enable = "avx2,fma,avx512f")]
pub unsafe fn gelu(x: &mut [f32]) {
    let n = x.len();
    let p = x.as_mut_ptr();
    let one = _mm512_set1_ps(1.0);
    let mut i = 0;
    while i + 16 <= n {
        let v = _mm512_loadu_ps(p.add(i));
        let u = _mm512_mul_ps(v, _mm512_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let z = _mm512_abs_ps(u);
        let t = _mm512_div_ps(one, _mm512_fmadd_ps(z, _mm512_set1_ps(ERF_P), one));
        let mut poly = _mm512_set1_ps(ERF_POLY[0]);
        for c in &ERF_POLY[1..] {
            poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(*c));
        }
        poly = _mm512_mul_ps(poly, t);
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z)));
        let r = _mm512_fnmadd_ps(poly, e, one);
        // erf takes u's sign: r >= 0, so copying the sign bit is enough.
        let sign = _mm512_and_si512(_mm512_castps_si512(u), _mm512_set1_epi32(i32::MIN));
        let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), sign));
        _mm512_storeu_ps(
            p.add(i),
            _mm512_mul_ps(
                _mm512_mul_ps(_mm512_set1_ps(0.5), v),
                _mm512_add_ps(one, erf),
            ),
        );
        i += 16;
    }
    while i < n {
        x[i] = scalar::gelu(x[i]);
        i += 1;
    }
}
