//! The int8 panel GEMM on aarch64, written once and stamped per ISA by
//! [`panel_gemm!`].
//!
//! Same 8-row panel layout as x86 (see [`crate::compute::quant`]): a
//! 32-byte weight word holds 4 quant bytes of each of 8 rows, i.e. two
//! 128-bit registers of 4 rows x 4 bytes (rows 0-3, rows 4-7). Two tile
//! shapes compute one K-block's integer dots of a panel against T tokens,
//! as `[rows 0-3, rows 4-7]` i32 vectors per token:
//!
//! * lanes (every ISA): a weight register (4 rows x 4 bytes) against 4
//!   activation bytes taken from one 32-bit lane of a 16-byte activation
//!   register: `dot_lane::<L>` adds the 4 rows' 4-byte dots into 4 i32
//!   lanes (`sdot` by element; plain NEON: `dup` + `smull`/`smull2` +
//!   `addp` + `sadalp`). Q4_1 goes through `acc_q4` into the ISA's block
//!   accumulator `Acc4` and `finish_q4` makes it the 4 rows' i32 dots
//!   (`sdot`: the same i32 lanes; plain NEON: `smlal`/`smlal2` into i16
//!   lanes per (row, byte), 8 products of at most 15 x 127 per block, then
//!   `addp` + `saddlp`: 3 instructions per step instead of 5).
//! * pairs (i8mm, T even): `smmla` multiplies 2 rows x 8 bytes by 2 tokens
//!   x 8 bytes into a 2 x 2 i32 block. `zip1`/`zip2` of two consecutive
//!   weight words (32-bit lanes) give rows (0,1), (2,3) x 8 consecutive K
//!   bytes; `zip1`/`zip2` of two tokens' activations (64-bit lanes) give the
//!   matching 2 tokens x 8 bytes; per block `uzp1`/`uzp2` of the row-pair
//!   blocks restore the per-token row vectors. A lone token (decode, odd
//!   tails) takes the lanes shape, where `smmla` would waste half its work.
//!
//! Per block the integer dots are converted and scaled once (f16 scales
//! widened by `fcvtl`), never summed horizontally. Nibbles (0..15) and
//! activations (-127..127) are both valid signed bytes, so Q4_1 needs no
//! sign trick; Q8_0 weights may be -128, and every i16 stage of the plain
//! NEON step holds at most 2 x 128 x 127 < 2^15.

use std::arch::aarch64::*;

/// Prefetch hint for the line holding `p` (any address: `prfm` never faults).
#[inline(always)]
pub(super) fn prefetch(p: *const u8) {
    // SAFETY: PRFM is a hint; it reads nothing architecturally and never
    // faults, whatever the address, and touches no register but its base.
    unsafe {
        std::arch::asm!(
            "prfm pldl1keep, [{0}]",
            in(reg) p,
            options(nostack, readonly, preserves_flags)
        )
    }
}

/// 8 little-endian f16 at `p` -> `[f32 x 4; 2]` (lanes 0-3, 4-7).
///
/// # Safety
/// `p..p + 16` readable.
#[inline(always)]
pub(super) unsafe fn f16x8(p: *const u8) -> [float32x4_t; 2] {
    let h = vld1q_u16(p as *const u16);
    let (lo, hi): (float32x4_t, float32x4_t);
    // SAFETY: FCVTL/FCVTL2 (half -> single) are baseline ASIMD; register
    // only, `lo` is a separate output so `h` survives for the second one.
    std::arch::asm!(
        "fcvtl {lo:v}.4s, {h:v}.4h",
        "fcvtl2 {hi:v}.4s, {h:v}.8h",
        h = in(vreg) h,
        lo = out(vreg) lo,
        hi = lateout(vreg) hi,
        options(pure, nomem, nostack, preserves_flags)
    );
    [lo, hi]
}

/// Emits, into the invoking module, the ISA's dot steps, the tiles and the
/// panel GEMM entry points `gemm_q4_1` / `gemm_q8_0` (contract:
/// [`crate::compute::kernels::gemm_q4_1`]; the tiling driver, the same as
/// x86's, is the shared `tiled_gemm!` of `kernels/tiling.rs`), every function
/// `#[target_feature(enable = $tf)]`. `dot_lane` is required; `mmla`
/// (`smmla` semantics) is optional and turns on the token-pair shape.
macro_rules! panel_gemm {
    (
        target_feature = $tf:literal;
        $(#[$dl:meta])* fn dot_lane<const $l:ident>($acc:ident, $w:ident, $a:ident) $dot_lane:block
        $(#[$da:meta])* type Acc4 = $acc4:ty;
        $(#[$dz:meta])* fn zero_q4() $zero_q4:block
        $(#[$d4:meta])* fn acc_q4<const $l4:ident>($acc4v:ident, $w4:ident, $a4:ident) $acc_q4:block
        $(#[$df:meta])* fn finish_q4($accf:ident) $finish_q4:block
        $( $(#[$dm:meta])* fn mmla($macc:ident, $mw:ident, $ma:ident) $mmla:block )?
    ) => {
        use super::gemm::{f16x8, prefetch};
        use $crate::compute::kernels::tiling::{prefetch_ahead, TileAt};
        use $crate::compute::kernels::OutMat;
        use $crate::compute::quant::{ActQ8, Q4_1Mat, Q8_0Mat, Q4_1_PB, Q8_0_PB, QK};
        use std::arch::aarch64::*;

        $(#[$dl])*
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn dot_lane<const $l: i32>($acc: int32x4_t, $w: int8x16_t, $a: int8x16_t) -> int32x4_t
            $dot_lane

        $(#[$da])*
        type Acc4 = $acc4;

        $(#[$dz])*
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn zero_q4() -> Acc4 $zero_q4

        $(#[$d4])*
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn acc_q4<const $l4: i32>($acc4v: Acc4, $w4: int8x16_t, $a4: int8x16_t) -> Acc4
            $acc_q4

        $(#[$df])*
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn finish_q4($accf: Acc4) -> int32x4_t $finish_q4

        panel_gemm!(@mmla $tf; $( $(#[$dm])* fn mmla($macc, $mw, $ma) $mmla )?);

        /// One Q4_1 weight word (`L` = 0..4, at `pw`) against lane `L` of
        /// each token's low (`xa`) and high (`xb`) activation halves.
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn q4_1_word<const L: i32, const T: usize>(
            pw: *const u8,
            xa: &[int8x16_t; T],
            xb: &[int8x16_t; T],
            d: &mut [[Acc4; 2]; T],
        ) {
            let mask = vdupq_n_u8(15);
            for hh in 0..2 {
                let v = vld1q_u8(pw.add(16 * hh));
                let lo = vreinterpretq_s8_u8(vandq_u8(v, mask));
                let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(v));
                for j in 0..T {
                    d[j][hh] = acc_q4::<L>(d[j][hh], lo, xa[j]);
                    d[j][hh] = acc_q4::<L>(d[j][hh], hi, xb[j]);
                }
            }
        }

        /// One Q8_0 weight word (at `pw`) against lane `L` of `x`.
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn q8_0_word<const L: i32, const T: usize>(
            pw: *const u8,
            x: &[int8x16_t; T],
            d: &mut [[int32x4_t; 2]; T],
        ) {
            for hh in 0..2 {
                let v = vld1q_s8(pw.add(16 * hh) as *const i8);
                for j in 0..T {
                    d[j][hh] = dot_lane::<L>(d[j][hh], v, x[j]);
                }
            }
        }

        /// Both 16-byte halves of each of T token rows (`k` apart) at `xq`.
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn load_act<const T: usize>(
            xq: *const i8,
            k: usize,
        ) -> ([int8x16_t; T], [int8x16_t; T]) {
            let mut xa = [vdupq_n_s8(0); T];
            let mut xb = [vdupq_n_s8(0); T];
            for j in 0..T {
                xa[j] = vld1q_s8(xq.add(j * k));
                xb[j] = vld1q_s8(xq.add(j * k + 16));
            }
            (xa, xb)
        }

        /// Token pair `(x0, x1)` as 2 tokens x 8 bytes per 8-byte K group:
        /// `[elements 0-7, 8-15, 16-23, 24-31]` of both.
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn act_pairs(x0: *const i8, x1: *const i8) -> [int8x16_t; 4] {
            let a0 = vreinterpretq_s64_s8(vld1q_s8(x0));
            let b0 = vreinterpretq_s64_s8(vld1q_s8(x0.add(16)));
            let a1 = vreinterpretq_s64_s8(vld1q_s8(x1));
            let b1 = vreinterpretq_s64_s8(vld1q_s8(x1.add(16)));
            [
                vreinterpretq_s8_s64(vzip1q_s64(a0, a1)),
                vreinterpretq_s8_s64(vzip2q_s64(a0, a1)),
                vreinterpretq_s8_s64(vzip1q_s64(b0, b1)),
                vreinterpretq_s8_s64(vzip2q_s64(b0, b1)),
            ]
        }

        /// Two consecutive weight words (`pw`, `pw + 32`), 4-row half `hh`,
        /// as rows (0,1) and (2,3) of that half x 8 consecutive K bytes.
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn weight_pairs(pw: *const u8, hh: usize) -> [uint8x16_t; 2] {
            let w0 = vreinterpretq_u32_u8(vld1q_u8(pw.add(16 * hh)));
            let w1 = vreinterpretq_u32_u8(vld1q_u8(pw.add(32 + 16 * hh)));
            [
                vreinterpretq_u8_u32(vzip1q_u32(w0, w1)),
                vreinterpretq_u8_u32(vzip2q_u32(w0, w1)),
            ]
        }

        /// Row-pair blocks `c` = [(0,1), (2,3), (4,5), (6,7)] x (t0, t1) ->
        /// rows 0-3 / 4-7 of t0 and of t1.
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn unpair(c: &[int32x4_t; 4]) -> [[int32x4_t; 2]; 2] {
            [
                [vuzp1q_s32(c[0], c[1]), vuzp1q_s32(c[2], c[3])],
                [vuzp2q_s32(c[0], c[1]), vuzp2q_s32(c[2], c[3])],
            ]
        }

        /// Integer dots of one Q4_1 panel-block `pb` against T tokens.
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn q4_1_block<const T: usize>(
            pb: *const u8,
            xq: *const i8,
            k: usize,
        ) -> [[int32x4_t; 2]; T] {
            let mut d = [[vdupq_n_s32(0); 2]; T];
            if PAIRS && T % 2 == 0 {
                let mask = vdupq_n_u8(15);
                for jp in 0..T / 2 {
                    let a = act_pairs(xq.add(2 * jp * k), xq.add((2 * jp + 1) * k));
                    let mut c = [vdupq_n_s32(0); 4];
                    // Words (0,1) hold K bytes 0-7 (elements 0-7 low,
                    // 16-23 high), words (2,3) bytes 8-15.
                    for hp in 0..2 {
                        for hh in 0..2 {
                            let z = weight_pairs(pb.add(64 * hp), hh);
                            for i in 0..2 {
                                let lo = vreinterpretq_s8_u8(vandq_u8(z[i], mask));
                                let hi = vreinterpretq_s8_u8(vshrq_n_u8::<4>(z[i]));
                                c[2 * hh + i] = mmla(c[2 * hh + i], lo, a[hp]);
                                c[2 * hh + i] = mmla(c[2 * hh + i], hi, a[2 + hp]);
                            }
                        }
                    }
                    let u = unpair(&c);
                    d[2 * jp] = u[0];
                    d[2 * jp + 1] = u[1];
                }
            } else {
                let (xa, xb) = load_act::<T>(xq, k);
                let mut a = [[zero_q4(); 2]; T];
                q4_1_word::<0, T>(pb, &xa, &xb, &mut a);
                q4_1_word::<1, T>(pb.add(32), &xa, &xb, &mut a);
                q4_1_word::<2, T>(pb.add(64), &xa, &xb, &mut a);
                q4_1_word::<3, T>(pb.add(96), &xa, &xb, &mut a);
                for j in 0..T {
                    d[j] = [finish_q4(a[j][0]), finish_q4(a[j][1])];
                }
            }
            d
        }

        /// Integer dots of one Q8_0 panel-block `pb` against T tokens.
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn q8_0_block<const T: usize>(
            pb: *const u8,
            xq: *const i8,
            k: usize,
        ) -> [[int32x4_t; 2]; T] {
            let mut d = [[vdupq_n_s32(0); 2]; T];
            if PAIRS && T % 2 == 0 {
                for jp in 0..T / 2 {
                    let a = act_pairs(xq.add(2 * jp * k), xq.add((2 * jp + 1) * k));
                    let mut c = [vdupq_n_s32(0); 4];
                    // Words (2g, 2g+1) hold elements 8g..8g+8.
                    for g in 0..4 {
                        for hh in 0..2 {
                            let z = weight_pairs(pb.add(64 * g), hh);
                            for i in 0..2 {
                                c[2 * hh + i] =
                                    mmla(c[2 * hh + i], vreinterpretq_s8_u8(z[i]), a[g]);
                            }
                        }
                    }
                    let u = unpair(&c);
                    d[2 * jp] = u[0];
                    d[2 * jp + 1] = u[1];
                }
            } else {
                let (xa, xb) = load_act::<T>(xq, k);
                q8_0_word::<0, T>(pb, &xa, &mut d);
                q8_0_word::<1, T>(pb.add(32), &xa, &mut d);
                q8_0_word::<2, T>(pb.add(64), &xa, &mut d);
                q8_0_word::<3, T>(pb.add(96), &xa, &mut d);
                q8_0_word::<0, T>(pb.add(128), &xb, &mut d);
                q8_0_word::<1, T>(pb.add(160), &xb, &mut d);
                q8_0_word::<2, T>(pb.add(192), &xb, &mut d);
                q8_0_word::<3, T>(pb.add(224), &xb, &mut d);
            }
            d
        }

        /// Stores 8 row results of token `t` for panel `p` (rows past `rows` dropped).
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn store8(out: &OutMat, t: usize, p: usize, rows: usize, v: &[float32x4_t; 2]) {
            store_panel!(out, t, p, rows, |dst| {
                vst1q_f32(dst, v[0]);
                vst1q_f32(dst.add(4), v[1]);
            });
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
            let mut acc = [[[vdupq_n_f32(0.0); 2]; T]; P];
            for b in 0..nb {
                if T == 1 {
                    prefetch_ahead::<P>(base, pstride, b, Q4_1_PB, prefetch);
                }
                for p in 0..P {
                    let pb = base.add(p * pstride + b * Q4_1_PB);
                    let dots = q4_1_block::<T>(pb, xq.add(b * QK), k);
                    let dv = f16x8(pb.add(128));
                    let mv = f16x8(pb.add(144));
                    for j in 0..T {
                        let da = *xd.add(j * nb + b);
                        let sa = *xs.add(j * nb + b);
                        for hh in 0..2 {
                            let s = vcvtq_f32_s32(dots[j][hh]);
                            let a = vfmaq_f32(acc[p][j][hh], s, vmulq_n_f32(dv[hh], da));
                            acc[p][j][hh] = vfmaq_n_f32(a, mv[hh], sa);
                        }
                    }
                }
            }
            for p in 0..P {
                for j in 0..T {
                    store8(out, t + j, p0 + p, w.rows, &acc[p][j]);
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
            let mut acc = [[[vdupq_n_f32(0.0); 2]; T]; P];
            for b in 0..nb {
                if T == 1 {
                    prefetch_ahead::<P>(base, pstride, b, Q8_0_PB, prefetch);
                }
                for p in 0..P {
                    let pb = base.add(p * pstride + b * Q8_0_PB);
                    let dots = q8_0_block::<T>(pb, xq.add(b * QK), k);
                    let dv = f16x8(pb.add(256));
                    for j in 0..T {
                        let da = *xd.add(j * nb + b);
                        for hh in 0..2 {
                            let s = vcvtq_f32_s32(dots[j][hh]);
                            acc[p][j][hh] = vfmaq_f32(acc[p][j][hh], s, vmulq_n_f32(dv[hh], da));
                        }
                    }
                }
            }
            for p in 0..P {
                for j in 0..T {
                    store8(out, t + j, p0 + p, w.rows, &acc[p][j]);
                }
            }
        }

        panel_gemm_entries!($tf);
    };

    // No `mmla` step: lanes shape only (the pair branch is compiled out).
    (@mmla $tf:literal; ) => {
        const PAIRS: bool = false;

        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn mmla(_: int32x4_t, _: int8x16_t, _: int8x16_t) -> int32x4_t {
            unreachable!("token pairs need i8mm")
        }
    };
    (@mmla $tf:literal; $(#[$dm:meta])* fn mmla($macc:ident, $mw:ident, $ma:ident) $mmla:block) => {
        const PAIRS: bool = true;

        $(#[$dm])*
        #[inline]
        #[target_feature(enable = $tf)]
        unsafe fn mmla($macc: int32x4_t, $mw: int8x16_t, $ma: int8x16_t) -> int32x4_t $mmla
    };
}
