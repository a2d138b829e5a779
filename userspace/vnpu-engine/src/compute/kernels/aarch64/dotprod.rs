//! FEAT_DotProd int8 GEMM (Cortex-A76/Neoverse N1 on): `sdot` by element
//! adds 4 rows' 4-byte dots against one 32-bit activation lane into i32.
//! Through `asm!`: `vdotq_laneq_s32` is unstable in Rust 1.95.

/// [`panel_gemm!`] with the `sdot` steps, written once for this module and
/// [`super::i8mm`] (whose lone tokens run the same `sdot`); any further
/// steps (i8mm's `mmla`) follow the features.
macro_rules! sdot_panel_gemm {
    (target_feature = $tf:literal; $($more:tt)*) => {
        panel_gemm! {
            target_feature = $tf;

            /// `acc[i] += sum_e w[4i + e] * a[4L + e]`.
            fn dot_lane<const L>(acc, w, a) {
                let mut acc = acc;
                // SAFETY: SDOT (by element) is FEAT_DotProd, enabled on this
                // function; registers only, `L` < 4 is the lane immediate.
                std::arch::asm!(
                    "sdot {acc:v}.4s, {w:v}.16b, {a:v}.4b[{l}]",
                    acc = inout(vreg) acc,
                    w = in(vreg) w,
                    a = in(vreg) a,
                    l = const L,
                    options(pure, nomem, nostack, preserves_flags)
                );
                acc
            }

            /// Q4_1 block accumulator: the rows' i32 dots themselves.
            type Acc4 = int32x4_t;

            fn zero_q4() {
                vdupq_n_s32(0)
            }

            /// Q4_1 step: the same `sdot` (nibbles are valid signed bytes).
            fn acc_q4<const L>(acc, w, a) {
                dot_lane::<L>(acc, w, a)
            }

            /// Block end: already one i32 per row.
            fn finish_q4(acc) {
                acc
            }

            $($more)*
        }
    };
}

sdot_panel_gemm! {
    target_feature = "dotprod";
}
