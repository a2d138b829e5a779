//! What the int8 panel GEMMs of every architecture share (`x86/gemm.rs`,
//! `aarch64/gemm.rs`, each a `panel_gemm!` macro stamped per ISA): the
//! tiling driver, the entry points, a tile's operand pointers
//! ([`TileAt`]), the single-token prefetch and the partial-panel store.
//!
//! A tile is P panels x T tokens, a `#[target_feature]` `unsafe fn` with
//! const generics `<P, T>`, which no closure or fn pointer can carry; so the
//! driver and the entry points are macros, expanded inside each ISA's
//! `#[target_feature]` functions, where the tiles inline as before. The
//! operand pointers are an `#[inline(always)]` constructor, the prefetch an
//! `#[inline(always)]` function taking the ISA's hint as a closure; the
//! store is a macro (as a closure-taking function it changed the GEMMs'
//! register allocation). Every ISA's GEMM compiles to the same instructions
//! as when each macro had its own copy.

/// Software prefetch distance, in panel-blocks (~2.5 KB for two Q4_1
/// panels), of the single-token tiles: decode streams every weight once
/// from DRAM, and asking early keeps more lines in flight than the hardware
/// prefetcher does. On an AVX2 machine 16, 24 and 48 measured alike (~10-15%
/// over none); on Zen 5 (AVX-512) 64 decoded ~18% faster than 16, 128 alike,
/// 32 in between. A prefetch past the end of the weights is only a hint,
/// never a fault.
pub(super) const PREFETCH: usize = 64;

use crate::compute::quant::{ActQ8, QK};

/// Where a tile's operands start: panel-blocks of `pb` bytes, `nb` a
/// panel (`pstride` bytes), from panel `p0` at `base`; token `t`'s
/// activations (`k` apart), scales and sums at `xq`, `xd`, `xs`.
pub(super) struct TileAt {
    pub nb: usize,
    pub k: usize,
    pub pstride: usize,
    pub base: *const u8,
    pub xq: *const i8,
    pub xd: *const f32,
    pub xs: *const f32,
}

impl TileAt {
    /// For a tile of panels from `p0` of weights of `wk` columns at `data`
    /// (`pb` bytes a panel-block) x tokens from `t` of `x`.
    ///
    /// # Safety
    /// Panel `p0` and token `t` inside the operands.
    #[inline(always)]
    pub(super) unsafe fn new(
        wk: usize,
        data: &[u8],
        pb: usize,
        x: &ActQ8,
        p0: usize,
        t: usize,
    ) -> TileAt {
        let nb = wk / QK;
        let k = x.k;
        let base = data.as_ptr().add(p0 * nb * pb);
        TileAt {
            nb,
            k,
            pstride: nb * pb,
            base,
            xq: x.qs.as_ptr().add(t * k),
            xd: x.d.as_ptr().add(t * nb),
            xs: x.s.as_ptr().add(t * nb),
        }
    }
}

/// Prefetches, for panels `0..P` from `base` (`pstride` bytes apart), the
/// panel-block [`PREFETCH`] blocks past block `b` (`pb` bytes a block), a
/// 64-byte line at a time through `prefetch` (the ISA's hint; addresses
/// may lie past the weights).
#[inline(always)]
pub(super) fn prefetch_ahead<const P: usize>(
    base: *const u8,
    pstride: usize,
    b: usize,
    pb: usize,
    prefetch: impl Fn(*const u8),
) {
    for p in 0..P {
        let a = base.wrapping_add(p * pstride + (b + PREFETCH) * pb);
        for l in 0..pb.div_ceil(64) {
            prefetch(a.wrapping_add(64 * l));
        }
    }
}

/// Stores 8 row results of token `t` for panel `p` of `out` (an
/// [`super::OutMat`]) with `$store`, the ISA's 8-float store to `$dst`;
/// rows past `rows` are dropped (stored to a buffer, the rest copied).
macro_rules! store_panel {
    ($out:expr, $t:expr, $p:expr, $rows:expr, |$dst:ident| $store:expr) => {{
        let (out, rows): (&$crate::compute::kernels::OutMat, usize) = ($out, $rows);
        let r = $p * $crate::compute::quant::PANEL;
        let dst = out.ptr.add($t * out.ldo + r);
        if r + $crate::compute::quant::PANEL <= rows {
            let $dst = dst;
            $store;
        } else {
            let mut tmp = [0f32; 8];
            {
                let $dst = tmp.as_mut_ptr();
                $store;
            }
            std::ptr::copy_nonoverlapping(tmp.as_ptr(), dst, rows - r);
        }
    }};
}

/// Emits the panel GEMM entry points `gemm_q4_1` / `gemm_q8_0` (contract:
/// [`crate::compute::kernels::gemm_q4_1`]), `#[target_feature(enable =
/// $tf)]`, over the invoking module's tiles `q4_1_tile` / `q8_0_tile` and,
/// when given, its two-panel wide tiles for several tokens (`wide:`).
macro_rules! panel_gemm_entries {
    ($tf:literal) => {
        panel_gemm_entries!(@emit $tf, (q4_1_tile), (q8_0_tile));
    };
    ($tf:literal, wide: $q4w:ident, $q8w:ident) => {
        panel_gemm_entries!(@emit $tf, (q4_1_tile, $q4w), (q8_0_tile, $q8w));
    };
    (@emit $tf:literal, ($($q4:ident),+), ($($q8:ident),+)) => {
        #[doc = concat!("# Safety\nSee [`crate::compute::kernels::gemm_q4_1`]; requires `", $tf, "`.")]
        #[target_feature(enable = $tf)]
        pub unsafe fn gemm_q4_1(w: &Q4_1Mat, x: &ActQ8, r0: usize, r1: usize, out: OutMat) {
            tiled_gemm!(w, x, r0, r1, out, $($q4),+)
        }

        #[doc = concat!("# Safety\nSee [`crate::compute::kernels::gemm_q4_1`]; requires `", $tf, "`.")]
        #[target_feature(enable = $tf)]
        pub unsafe fn gemm_q8_0(w: &Q8_0Mat, x: &ActQ8, r0: usize, r1: usize, out: OutMat) {
            tiled_gemm!(w, x, r0, r1, out, $($q8),+)
        }
    };
}

/// The tiling driver: rows `r0..r1` of `w` against every token of `x`
/// through `$tile::<P, T>(w, x, first panel, first token, &out)`.
///
/// Tokens in tiles of 4 (x86 AVX2 register budget: 4 x 16-bit + 4 f32
/// accumulators, 2 unpacked weight vectors, 2 broadcasts) inside each
/// panel, so a panel's weights stay in L1 while the activations stream; a
/// single token (decode) takes 2 panels at a time for two independent
/// dependency chains.
///
/// (Tried and measured slower on x86: widening Q4_1 panels to a byte per
/// quant in a per-thread buffer to drop the in-loop unpack, with 1 x 4 and
/// 2 x 2 tiles, from intrinsics and from asm: 140-147 GOPS against 160.)
macro_rules! tiled_gemm {
    // `$wide`, when given: `$wide::<Q, T>(w, x, p, t, out)` computes 2 Q
    // panels x T tokens: four panels at a time, then a pair, a last odd
    // panel the narrow tiles.
    ($w:expr, $x:expr, $r0:expr, $r1:expr, $out:expr, $tile:ident $(, $wide:ident)?) => {{
        use $crate::compute::quant::PANEL;
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
            let tb = ((128 << 10) / x.k.max(1)).max(8) / 8 * 8;
            let mut t0 = 0;
            while t0 < n {
                let t1 = (t0 + tb).min(n);
                let mut p = p0;
                while p < p1 {
                    $(
                        if p + 4 <= p1 {
                            wide_tokens!($wide, 2, 4, w, x, p, t0, t1, out);
                            p += 4;
                            continue;
                        }
                        if p + 2 <= p1 {
                            wide_tokens!($wide, 1, 8, w, x, p, t0, t1, out);
                            p += 2;
                            continue;
                        }
                    )?
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
                    p += 1;
                }
                t0 = t1;
            }
        }
    }};
}
