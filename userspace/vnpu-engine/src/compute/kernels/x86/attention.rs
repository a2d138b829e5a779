//! Attention over a few query rows at once (x86): a block of 8 keys is
//! loaded from L2 once for every row of the group, as are the value rows
//! (attention over a long prompt is bound by those loads).
//!
//! Every row's arithmetic is that of the one-row kernel, operation for
//! operation: scores of a row's whole 8-key blocks from 8 FMA chains and one
//! horizontal-sum tree, its last `len % 8` keys one by one; its softmax over
//! its own keys; its weighted sum in key order. So a row's result does not
//! depend on the rows beside it (prefill groups a chunk's rows, decode has
//! one), and both ISAs compute the same bits: the AVX-512 build runs two
//! rows' whole blocks in the halves of one register (`pair_block`, each
//! half the AVX2 operations) and widens the weighted sum, whose every
//! element is the same FMA sequence — the guest (QEMU TCG: AVX2) and the
//! host (AVX-512) give equal answers.

use super::float::{exp8, hsum, hsum8};
use crate::compute::kernels::scalar;
use std::arch::x86_64::*;

/// Query rows per group.
pub const ROWS: usize = 4;

/// Emits `$name::<C, R>`: the scores and softmax of R rows (head dim
/// `8 * C`), probabilities into row r of `sc` (`ld` apart); returns each
/// row's `1 / sum`.
macro_rules! scores_softmax {
    ($name:ident, $tf:literal $(, pairs: $pair:ident)?) => {
        /// # Safety
        /// The target features; see [`attend_rows_avx2`].
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn $name<const C: usize, const R: usize>(
            q: [*const f32; R],
            k: *const f32,
            stride: usize,
            lens: [usize; R],
            scale: f32,
            sc: *mut f32,
            ld: usize,
        ) -> [f32; R] {
            let maxlen = lens.iter().copied().max().unwrap_or(0);
            let vs = _mm256_set1_ps(scale);
            let mut mx = [_mm256_set1_ps(f32::NEG_INFINITY); R];
            let mut m = [f32::NEG_INFINITY; R];
            let mut j = 0;
            while j < maxlen {
                let mut r = 0;
                while r < R {
                    $(
                        // Two rows' whole blocks at once, when the ISA can.
                        if r + 1 < R && j + 8 <= lens[r] && j + 8 <= lens[r + 1] {
                            let (s0, s1) = $pair::<C>(q[r], q[r + 1], k, stride, j, scale);
                            mx[r] = _mm256_max_ps(mx[r], s0);
                            mx[r + 1] = _mm256_max_ps(mx[r + 1], s1);
                            _mm256_storeu_ps(sc.add(r * ld + j), s0);
                            _mm256_storeu_ps(sc.add((r + 1) * ld + j), s1);
                            r += 2;
                            continue;
                        }
                    )?
                    let (qp, sp) = (q[r], sc.add(r * ld));
                    if j + 8 <= lens[r] {
                        let mut acc = [_mm256_setzero_ps(); 8];
                        for c in 0..C {
                            let qv = _mm256_loadu_ps(qp.add(8 * c));
                            for (i, a) in acc.iter_mut().enumerate() {
                                *a = _mm256_fmadd_ps(
                                    qv,
                                    _mm256_loadu_ps(k.add((j + i) * stride + 8 * c)),
                                    *a,
                                );
                            }
                        }
                        let s = _mm256_mul_ps(hsum8(&acc), vs);
                        mx[r] = _mm256_max_ps(mx[r], s);
                        _mm256_storeu_ps(sp.add(j), s);
                    } else {
                        for jj in j..lens[r].min(j + 8) {
                            let mut a = _mm256_setzero_ps();
                            for c in 0..C {
                                a = _mm256_fmadd_ps(
                                    _mm256_loadu_ps(qp.add(8 * c)),
                                    _mm256_loadu_ps(k.add(jj * stride + 8 * c)),
                                    a,
                                );
                            }
                            let s = hsum(a) * scale;
                            m[r] = m[r].max(s);
                            *sp.add(jj) = s;
                        }
                    }
                    r += 1;
                }
                j += 8;
            }
            let mut inv = [0f32; R];
            for r in 0..R {
                let v = mx[r];
                let m4 = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
                let m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
                let m = m[r].max(_mm_cvtss_f32(_mm_max_ss(m4, _mm_movehdup_ps(m4))));
                // exp(s - max) in place, and its sum.
                let (sp, len) = (sc.add(r * ld), lens[r]);
                let vm = _mm256_set1_ps(m);
                let mut sum = _mm256_setzero_ps();
                let mut j = 0;
                while j + 8 <= len {
                    let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(sp.add(j)), vm));
                    sum = _mm256_add_ps(sum, e);
                    _mm256_storeu_ps(sp.add(j), e);
                    j += 8;
                }
                inv[r] = 1.0 / scalar::exp_sub_from(sp, j, len, m, hsum(sum));
            }
            inv
        }
    };
}

scores_softmax!(scores_avx2, "avx2,fma");
scores_softmax!(scores_avx512, "avx2,fma,avx512f", pairs: pair_block);

/// `hadd` of AVX2 on each 128-bit lane of 512-bit registers: the same
/// additions, operand for operand.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn hadd512(x: __m512, y: __m512) -> __m512 {
    _mm512_add_ps(
        _mm512_shuffle_ps::<0b10_00_10_00>(x, y),
        _mm512_shuffle_ps::<0b11_01_11_01>(x, y),
    )
}

/// One whole 8-key block for two query rows at once: each 256-bit half of
/// a register runs one row's AVX2 block (the same FMA chains and [`hsum8`]
/// tree, lane for lane), so both rows' scores are the bits the one-row code
/// gives them. Returns the two rows' 8 scaled scores.
#[inline]
#[target_feature(enable = "avx2,fma,avx512f")]
unsafe fn pair_block<const C: usize>(
    q0: *const f32,
    q1: *const f32,
    k: *const f32,
    stride: usize,
    j: usize,
    scale: f32,
) -> (__m256, __m256) {
    let mut acc = [_mm512_setzero_ps(); 8];
    for c in 0..C {
        let lo = _mm512_castps256_ps512(_mm256_loadu_ps(q0.add(8 * c)));
        let qv = _mm512_castpd_ps(_mm512_insertf64x4::<1>(
            _mm512_castps_pd(lo),
            _mm256_castps_pd(_mm256_loadu_ps(q1.add(8 * c))),
        ));
        for (i, a) in acc.iter_mut().enumerate() {
            let kv = _mm256_loadu_pd(k.add((j + i) * stride + 8 * c) as *const f64);
            *a = _mm512_fmadd_ps(qv, _mm512_castpd_ps(_mm512_broadcast_f64x4(kv)), *a);
        }
    }
    // hsum8 on both halves.
    let h01 = hadd512(acc[0], acc[1]);
    let h23 = hadd512(acc[2], acc[3]);
    let h45 = hadd512(acc[4], acc[5]);
    let h67 = hadd512(acc[6], acc[7]);
    let (a, b) = (hadd512(h01, h23), hadd512(h45, h67));
    let lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
    let hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    let s = _mm512_add_ps(
        _mm512_permutex2var_ps(a, lo, b),
        _mm512_permutex2var_ps(a, hi, b),
    );
    let s = _mm512_mul_ps(s, _mm512_set1_ps(scale));
    let s1 = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(s)));
    (_mm512_castps512_ps256(s), s1)
}

/// R query rows of attention (head dim `8 * C`), row r over keys
/// `0..lens[r]` (see [`crate::compute::kernels::attend_rows`]); the
/// weighted sums row by row (16 ymm registers hold one row's output).
///
/// # Safety
/// Requires AVX2 and FMA; each of `q`, `out` `8 * C` floats; rows
/// `j * stride .. j * stride + 8 * C` of `k` and `v` in bounds for
/// `j < max(lens)`; `sc` at least `R * max(lens)`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn attend_rows_avx2<const C: usize, const R: usize>(
    q: [*const f32; R],
    k: *const f32,
    v: *const f32,
    stride: usize,
    lens: [usize; R],
    scale: f32,
    sc: &mut [f32],
    out: [*mut f32; R],
) {
    let ld = lens.iter().copied().max().unwrap_or(0);
    let inv = scores_avx2::<C, R>(q, k, stride, lens, scale, sc.as_mut_ptr(), ld);
    for r in 0..R {
        let sp = sc.as_ptr().add(r * ld);
        let mut o = [_mm256_setzero_ps(); C];
        for j in 0..lens[r] {
            let p = _mm256_broadcast_ss(&*sp.add(j));
            for (c, oc) in o.iter_mut().enumerate() {
                *oc = _mm256_fmadd_ps(p, _mm256_loadu_ps(v.add(j * stride + 8 * c)), *oc);
            }
        }
        let iv = _mm256_set1_ps(inv[r]);
        for (c, oc) in o.iter().enumerate() {
            _mm256_storeu_ps(out[r].add(8 * c), _mm256_mul_ps(*oc, iv));
        }
    }
}

/// [`attend_rows_avx2`] with the weighted sums on 512-bit registers, all
/// rows of the group at once: a value row is loaded once for the group
/// (`Z` = `C / 2` registers a row, `C` even).
///
/// # Safety
/// As [`attend_rows_avx2`], plus AVX-512 F.
#[target_feature(enable = "avx2,fma,avx512f")]
pub unsafe fn attend_rows_avx512<const C: usize, const Z: usize, const R: usize>(
    q: [*const f32; R],
    k: *const f32,
    v: *const f32,
    stride: usize,
    lens: [usize; R],
    scale: f32,
    sc: &mut [f32],
    out: [*mut f32; R],
) {
    debug_assert_eq!(2 * Z, C);
    let ld = lens.iter().copied().max().unwrap_or(0);
    let minlen = lens.iter().copied().min().unwrap_or(0);
    let inv = scores_avx512::<C, R>(q, k, stride, lens, scale, sc.as_mut_ptr(), ld);
    let sp = sc.as_ptr();
    let mut o = [[_mm512_setzero_ps(); Z]; R];
    for j in 0..minlen {
        let mut vj = [_mm512_setzero_ps(); Z];
        for (c, x) in vj.iter_mut().enumerate() {
            *x = _mm512_loadu_ps(v.add(j * stride + 16 * c));
        }
        for r in 0..R {
            let p = _mm512_set1_ps(*sp.add(r * ld + j));
            for c in 0..Z {
                o[r][c] = _mm512_fmadd_ps(p, vj[c], o[r][c]);
            }
        }
    }
    for r in 0..R {
        for j in minlen..lens[r] {
            let p = _mm512_set1_ps(*sp.add(r * ld + j));
            for c in 0..Z {
                o[r][c] = _mm512_fmadd_ps(p, _mm512_loadu_ps(v.add(j * stride + 16 * c)), o[r][c]);
            }
        }
        let iv = _mm512_set1_ps(inv[r]);
        for c in 0..Z {
            _mm512_storeu_ps(out[r].add(16 * c), _mm512_mul_ps(o[r][c], iv));
        }
    }
}
