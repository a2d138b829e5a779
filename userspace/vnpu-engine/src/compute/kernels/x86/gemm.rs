//! The int8 panel GEMM, written once and stamped per ISA by [`panel_gemm!`].
//!
//! GEMM over the 8-row panel layout (see [`crate::compute::quant`]): one 32-byte
//! weight vector holds 4 quants of each of 8 rows, so a u8 x i8 dot step
//! against 4 activation bytes broadcast to every lane yields the 8 rows'
//! partial dots in place. A tile is P panels x T tokens; per 32-block the
//! partial dots accumulate in integer lanes (AVX2 Q4_1: 16-bit, as
//! 8 x 2 x 15 x 127 < 2^15; VNNI: 32-bit) and are converted and scaled once
//! per block, never summed horizontally.
//!
//! The ISAs differ only in those dot steps and in the `target_feature` list,
//! so each ISA module passes its three steps (`acc_q4`, `finish_q4`,
//! `acc_q8`) and its features; the macro emits them and every tile, all
//! compiled for those features, so the steps inline into the tiles' loops.

/// Emits, into the invoking module, the ISA's dot steps, the tiles and the
/// panel GEMM entry points `gemm_q4_1` / `gemm_q8_0` (contract:
/// [`crate::compute::kernels::gemm_q4_1`]; the tiling driver is the shared
/// `tiled_gemm!` of `kernels/tiling.rs`), every function
/// `#[target_feature(enable = $tf)]`.
macro_rules! panel_gemm {
    (
        target_feature = $tf:literal;
        $(#[$d4:meta])* fn acc_q4($acc4:ident, $w4:ident, $a4:ident) $acc_q4:block
        $(#[$df:meta])* fn finish_q4($accf:ident) $finish_q4:block
        $(#[$d8:meta])* fn acc_q8($acc8:ident, $w8:ident, $a8:ident) $acc_q8:block
    ) => {
        use $crate::compute::kernels::tiling::{prefetch_ahead, TileAt};
        use $crate::compute::kernels::OutMat;
        use $crate::compute::quant::{ActQ8, Q4_1Mat, Q8_0Mat, Q4_1_PB, Q8_0_PB, QK};
        use std::arch::x86_64::*;

        $(#[$d4])*
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn acc_q4($acc4: __m256i, $w4: __m256i, $a4: __m256i) -> __m256i $acc_q4

        $(#[$df])*
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn finish_q4($accf: __m256i) -> __m256i $finish_q4

        $(#[$d8])*
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn acc_q8($acc8: __m256i, $w8: __m256i, $a8: __m256i) -> __m256i $acc_q8

        /// 4 activation bytes of token row `x` at byte offset `o`, in every lane.
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn bcast4(x: *const i8, o: usize) -> __m256i {
            _mm256_set1_epi32((x.add(o) as *const i32).read_unaligned())
        }

        /// Stores 8 row results of token `t` for panel `p` (rows past `rows` dropped).
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn store8(out: &OutMat, t: usize, p: usize, rows: usize, v: __m256) {
            store_panel!(out, t, p, rows, |dst| _mm256_storeu_ps(dst, v));
        }

        /// P panels from `p0` x T tokens from `t`, Q4_1.
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn q4_1_tile<const P: usize, const T: usize>(
            w: &Q4_1Mat,
            x: &ActQ8,
            p0: usize,
            t: usize,
            out: &OutMat,
        ) {
            let TileAt { nb, k, pstride, base, xq, xd, xs } =
                TileAt::new(w.k, w.data, Q4_1_PB, x, p0, t);
            let mask = _mm256_set1_epi8(15);
            let mut acc = [[_mm256_setzero_ps(); T]; P];
            for b in 0..nb {
                if T == 1 {
                    prefetch_ahead::<P>(base, pstride, b, Q4_1_PB, |a| {
                        _mm_prefetch::<_MM_HINT_T0>(a as *const i8)
                    });
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
        #[target_feature(enable = $tf)]
        unsafe fn q8_0_tile<const P: usize, const T: usize>(
            w: &Q8_0Mat,
            x: &ActQ8,
            p0: usize,
            t: usize,
            out: &OutMat,
        ) {
            let TileAt { nb, k, pstride, base, xq, xd, .. } =
                TileAt::new(w.k, w.data, Q8_0_PB, x, p0, t);
            let mut acc = [[_mm256_setzero_ps(); T]; P];
            for b in 0..nb {
                if T == 1 {
                    prefetch_ahead::<P>(base, pstride, b, Q8_0_PB, |a| {
                        _mm_prefetch::<_MM_HINT_T0>(a as *const i8)
                    });
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
    };
}

/// (x86: only AVX-512 has wide tiles; the shared `tiled_gemm!` expands
/// this where it is given one.) Tokens `t0..t1` through `$wide::<Q, T>` (tiles of `$t` tokens, the
/// rest in halves) for the `2 Q` panels from `p`.
macro_rules! wide_tokens {
    ($wide:ident, $q:literal, $t:literal, $w:expr, $x:expr, $p:expr, $t0:expr, $t1:expr, $out:expr) => {{
        let (mut t, t1) = ($t0, $t1);
        while t + $t <= t1 {
            $wide::<$q, $t>($w, $x, $p, t, $out);
            t += $t;
        }
        if $t >= 8 && t + 4 <= t1 {
            $wide::<$q, 4>($w, $x, $p, t, $out);
            t += 4;
        }
        if t + 2 <= t1 {
            $wide::<$q, 2>($w, $x, $p, t, $out);
            t += 2;
        }
        if t < t1 {
            $wide::<$q, 1>($w, $x, $p, t, $out);
        }
    }};
}
