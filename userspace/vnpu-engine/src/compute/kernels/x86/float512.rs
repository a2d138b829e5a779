//! f32 kernels on 512-bit registers for the AVX-512 ISA: attention over a
//! few query rows at once.

use super::float::hsum8;
use crate::compute::kernels::scalar;
use crate::compute::quant::QK;
use std::arch::x86_64::*;

/// Query rows per [`attend_rows`] call.
pub const ROWS: usize = 4;

/// The two 256-bit halves of `v` added: 8 lanes of partial sums.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn fold(v: __m512) -> __m256 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    _mm256_add_ps(_mm512_castps512_ps256(v), hi)
}

#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn hsum(v: __m512) -> f32 {
    _mm512_reduce_add_ps(v)
}

/// exp(x) for 16 lanes: [`super::float`]'s Cephes polynomial on zmm.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn exp16(x: __m512) -> __m512 {
    let x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.3)), _mm512_set1_ps(88.3));
    let fx = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(
        _mm512_fmadd_ps(x, _mm512_set1_ps(std::f32::consts::LOG2_E), _mm512_set1_ps(0.5)),
    );
    let x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693_359_4), x);
    let x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.121_944_4e-4), x);
    let mut y = _mm512_set1_ps(1.987_569_1e-4);
    for c in [1.398_199_9e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(c));
    }
    let y = _mm512_add_ps(_mm512_fmadd_ps(y, _mm512_mul_ps(x, x), x), _mm512_set1_ps(1.0));
    let pow2 = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvttps_epi32(fx),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(y, _mm512_castsi512_ps(pow2))
}

/// Up to [`ROWS`] query rows of attention against the same keys and values,
/// head dim `16 * C` (see [`crate::compute::kernels::attend_rows`]): row r
/// attends over keys `0..lens[r]`. A block of 8 keys is loaded once from L2
/// for every row (attention over a long prompt is bound by those loads, not
/// by its multiplies). Every key's score takes the same operations whatever
/// its position in a block or the rows beside it (a partial block is padded
/// with zero keys), and each row's softmax and weighted sum run over its own
/// keys in order, so a row's result does not depend on its group.
///
/// # Safety
/// Requires AVX-512 F, AVX2 and FMA; `1 <= R <= ROWS`; each of `q`, `out`
/// `16 * C` floats; rows `j * stride .. j * stride + 16 * C` of `k` and `v`
/// in bounds for `j < max(lens)`; `sc` at least `R * max(lens).next_multiple_of(8)`.
#[target_feature(enable = "avx2,fma,avx512f")]
pub unsafe fn attend_rows<const C: usize, const R: usize>(
    q: [*const f32; R],
    k: *const f32,
    v: *const f32,
    stride: usize,
    lens: [usize; R],
    scale: f32,
    sc: &mut [f32],
    out: [*mut f32; R],
) {
    let maxlen = lens.iter().copied().max().unwrap_or(0);
    let minlen = lens.iter().copied().min().unwrap_or(0);
    let ld = maxlen.next_multiple_of(8);
    let sp = sc.as_mut_ptr();
    // Scores, 8 keys at a time: 8 accumulators folded to 256 bits, one
    // horizontal-sum tree; each row's max on the way.
    let vs = _mm256_set1_ps(scale);
    let mut mx = [_mm256_set1_ps(f32::NEG_INFINITY); R];
    let mut j = 0;
    while j < maxlen {
        let nk = (maxlen - j).min(8);
        for r in 0..R {
            if j >= lens[r] {
                continue;
            }
            let mut acc = [_mm512_setzero_ps(); 8];
            for c in 0..C {
                let qv = _mm512_loadu_ps(q[r].add(16 * c));
                for (i, a) in acc.iter_mut().enumerate().take(nk) {
                    *a = _mm512_fmadd_ps(qv, _mm512_loadu_ps(k.add((j + i) * stride + 16 * c)), *a);
                }
            }
            let s = _mm256_mul_ps(hsum8(&acc.map(|a| fold(a))), vs);
            // Lanes past the row's keys (zero or other rows' keys) stay out of its max.
            let valid = (lens[r] - j).min(8);
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(valid as i32), lane));
            mx[r] = _mm256_max_ps(mx[r], _mm256_blendv_ps(_mm256_set1_ps(f32::NEG_INFINITY), s, keep));
            _mm256_storeu_ps(sp.add(r * ld + j), s);
        }
        j += 8;
    }
    // Per row: exp(s - max) in place over its own keys, and their sum.
    let mut inv = [0f32; R];
    for r in 0..R {
        let m = {
            let v = mx[r];
            let m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            _mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4)))
        };
        let (row, len) = (sp.add(r * ld), lens[r]);
        let vm = _mm512_set1_ps(m);
        let mut sum = _mm512_setzero_ps();
        let mut j = 0;
        while j + 16 <= len {
            let e = exp16(_mm512_sub_ps(_mm512_loadu_ps(row.add(j)), vm));
            sum = _mm512_add_ps(sum, e);
            _mm512_storeu_ps(row.add(j), e);
            j += 16;
        }
        inv[r] = 1.0 / scalar::exp_sub_from(row, j, len, m, hsum(sum));
    }
    // Weighted sums of value rows, in key order per row: keys every row
    // has, loaded once for all; then each row's own last keys.
    let mut o = [[_mm512_setzero_ps(); C]; R];
    for j in 0..minlen {
        let mut vj = [_mm512_setzero_ps(); C];
        for (c, x) in vj.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(v.add(j * stride + 16 * c));
        }
        for r in 0..R {
            let p = _mm512_set1_ps(*sp.add(r * ld + j));
            for c in 0..C {
                o[r][c] = _mm512_fmadd_ps(p, vj[c], o[r][c]);
            }
        }
    }
    for r in 0..R {
        for j in minlen..lens[r] {
            let p = _mm512_set1_ps(*sp.add(r * ld + j));
            for c in 0..C {
                o[r][c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v.add(j * stride + 16 * c)), o[r][c]);
            }
        }
        let iv = _mm512_set1_ps(inv[r]);
        for c in 0..C {
            _mm512_storeu_ps(out[r].add(16 * c), _mm512_mul_ps(o[r][c], iv));
        }
    }
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
        let t = _mm512_div_ps(one, _mm512_fmadd_ps(z, _mm512_set1_ps(0.327_591_1), one));
        let mut poly = _mm512_set1_ps(1.061_405_4);
        for c in [-1.453_152_1, 1.421_413_7, -0.284_496_74, 0.254_829_6] {
            poly = _mm512_fmadd_ps(poly, t, _mm512_set1_ps(c));
        }
        poly = _mm512_mul_ps(poly, t);
        let e = exp16(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(z, z)));
        let r = _mm512_fnmadd_ps(poly, e, one);
        // erf takes u's sign: r >= 0, so copying the sign bit is enough.
        let sign = _mm512_and_si512(_mm512_castps_si512(u), _mm512_set1_epi32(i32::MIN));
        let erf = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(r), sign));
        _mm512_storeu_ps(
            p.add(i),
            _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(0.5), v), _mm512_add_ps(one, erf)),
        );
        i += 16;
    }
    while i < n {
        x[i] = scalar::gelu(x[i]);
        i += 1;
    }
}
