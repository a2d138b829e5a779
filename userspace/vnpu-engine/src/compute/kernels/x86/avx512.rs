//! AVX-512 VNNI int8 GEMM: `vpdpbusd` accumulates the u8 x i8 dots straight
//! into i32 (no 16-bit stage). Single tokens (decode) run the shared
//! 256-bit panel tiles; several tokens run wide tiles on 512-bit registers
//! ([`q4_1_wide`], [`q8_0_wide`]: 4 panels x 4 tokens, or 2 x 8): one
//! `vpdpbusd zmm` serves two 8-row panels, so a token's broadcast
//! activations feed twice the rows per instruction, and 32 registers hold
//! the accumulators.
//!
//! A wide tile's lane computes exactly what the 256-bit tile's lane does
//! (the same i32 block sum, converted and scaled by the same float ops in
//! the same order), so a token's output does not depend on how many
//! tokens share its GEMM: batched and single-token jobs stay bitwise equal.

panel_gemm! {
    target_feature = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni";

    /// Q4_1 inner step: u8 x i8 quadruple products into i32.
    fn acc_q4(acc, w, a) {
        _mm256_dpbusd_epi32(acc, w, a)
    }

    /// Q4_1 block end: already one i32 per row.
    fn finish_q4(acc) {
        acc
    }

    /// Q8_0 inner step (`w` = |weights|, `a` = activations with the weights' signs).
    fn acc_q8(acc, w, a) {
        _mm256_dpbusd_epi32(acc, w, a)
    }
}

panel_gemm_entries!(
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    wide: q4_1_wide,
    q8_0_wide
);

/// The same 32 bytes of panels `p` and `p + 1` (`pstride` apart) at byte
/// offset `o` of a panel, as one register: panel `p` low, `p + 1` high.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn load_pair(base: *const u8, pstride: usize, o: usize) -> __m512i {
    let lo = _mm256_loadu_si256(base.add(o) as *const __m256i);
    let hi = _mm256_loadu_si256(base.add(pstride + o) as *const __m256i);
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// The 8 f16 values at offset `o` of panels `p` and `p + 1`, as 16 f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn scales_pair(base: *const u8, pstride: usize, o: usize) -> __m512 {
    let lo = _mm_loadu_si128(base.add(o) as *const __m128i);
    let hi = _mm_loadu_si128(base.add(pstride + o) as *const __m128i);
    _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi))
}

/// Token `t`'s 16 results (panels `p`, `p + 1`) into `out`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn store16(out: &OutMat, t: usize, p: usize, rows: usize, v: __m512) {
    store8(out, t, p, rows, _mm512_castps512_ps256(v));
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    store8(out, t, p + 1, rows, hi);
}

/// `2 Q` panels from `p0` x T tokens from `t`, Q4_1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q4_1_wide<const Q: usize, const T: usize>(
    w: &Q4_1Mat,
    x: &ActQ8,
    p0: usize,
    t: usize,
    out: &OutMat,
) {
    let TileAt {
        nb,
        k,
        pstride,
        base,
        xq,
        xd,
        xs,
    } = TileAt::new(w.k, w.data, Q4_1_PB, x, p0, t);
    let mask = _mm512_set1_epi8(15);
    let mut acc = [[_mm512_setzero_ps(); T]; Q];
    for b in 0..nb {
        let blk = base.add(b * Q4_1_PB);
        let mut ai = [[_mm512_setzero_si512(); T]; Q];
        for h in 0..4 {
            let mut lo = [_mm512_setzero_si512(); Q];
            let mut hi = [_mm512_setzero_si512(); Q];
            for q in 0..Q {
                let v = load_pair(blk.add(2 * q * pstride), pstride, h * 32);
                lo[q] = _mm512_and_si512(v, mask);
                hi[q] = _mm512_and_si512(_mm512_srli_epi16::<4>(v), mask);
            }
            for j in 0..T {
                let x4 = xq.add(j * k + b * QK + 4 * h);
                let al = _mm512_set1_epi32((x4 as *const i32).read_unaligned());
                let ah = _mm512_set1_epi32((x4.add(16) as *const i32).read_unaligned());
                for q in 0..Q {
                    ai[q][j] = _mm512_dpbusd_epi32(ai[q][j], lo[q], al);
                    ai[q][j] = _mm512_dpbusd_epi32(ai[q][j], hi[q], ah);
                }
            }
        }
        for q in 0..Q {
            let dv = scales_pair(blk.add(2 * q * pstride), pstride, 128);
            let mv = scales_pair(blk.add(2 * q * pstride), pstride, 144);
            for j in 0..T {
                let s = _mm512_cvtepi32_ps(ai[q][j]);
                let da = _mm512_set1_ps(*xd.add(j * nb + b));
                acc[q][j] = _mm512_fmadd_ps(s, _mm512_mul_ps(dv, da), acc[q][j]);
                let sa = _mm512_set1_ps(*xs.add(j * nb + b));
                acc[q][j] = _mm512_fmadd_ps(mv, sa, acc[q][j]);
            }
        }
    }
    for q in 0..Q {
        for j in 0..T {
            store16(out, t + j, p0 + 2 * q, w.rows, acc[q][j]);
        }
    }
}

/// `2 Q` panels from `p0` x T tokens from `t`, Q8_0: the weights offset
/// by +128 (u8) against the activations, each token's block sum starting
/// at its [`ActQ8::off`] so that it ends at the exact i32 dot.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn q8_0_wide<const Q: usize, const T: usize>(
    w: &Q8_0Mat,
    x: &ActQ8,
    p0: usize,
    t: usize,
    out: &OutMat,
) {
    let TileAt {
        nb,
        k,
        pstride,
        base,
        xq,
        xd,
        ..
    } = TileAt::new(w.k, w.data, Q8_0_PB, x, p0, t);
    let xo = x.off.as_ptr().add(t * nb);
    let bias = _mm512_set1_epi8(-128);
    let mut acc = [[_mm512_setzero_ps(); T]; Q];
    for b in 0..nb {
        let blk = base.add(b * Q8_0_PB);
        let mut ai = [[_mm512_setzero_si512(); T]; Q];
        for j in 0..T {
            let o = _mm512_set1_epi32(*xo.add(j * nb + b));
            for a in ai.iter_mut() {
                a[j] = o;
            }
        }
        for g in 0..8 {
            let mut u = [_mm512_setzero_si512(); Q];
            for (q, u) in u.iter_mut().enumerate() {
                *u = _mm512_xor_si512(load_pair(blk.add(2 * q * pstride), pstride, g * 32), bias);
            }
            for j in 0..T {
                let x4 = xq.add(j * k + b * QK + 4 * g);
                let x4 = _mm512_set1_epi32((x4 as *const i32).read_unaligned());
                for q in 0..Q {
                    ai[q][j] = _mm512_dpbusd_epi32(ai[q][j], u[q], x4);
                }
            }
        }
        for q in 0..Q {
            let dv = scales_pair(blk.add(2 * q * pstride), pstride, 256);
            for j in 0..T {
                let s = _mm512_cvtepi32_ps(ai[q][j]);
                let da = _mm512_set1_ps(*xd.add(j * nb + b));
                acc[q][j] = _mm512_fmadd_ps(s, _mm512_mul_ps(dv, da), acc[q][j]);
            }
        }
    }
    for q in 0..Q {
        for j in 0..T {
            store16(out, t + j, p0 + 2 * q, w.rows, acc[q][j]);
        }
    }
}
