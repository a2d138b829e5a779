//! FEAT_I8MM int8 GEMM (Neoverse V1/N2, Cortex-A510/A710/X2 on, Apple
//! M2 on): `smmla` multiplies 2 weight rows x 8 bytes by 2 tokens x 8 bytes
//! into a 2 x 2 i32 block (32 MACs, twice `sdot`), so even token counts run
//! in pairs; a lone token (decode, odd tails) uses `sdot` (i8mm CPUs have
//! FEAT_DotProd; detection requires both), with [`super::dotprod`]'s steps.
//! Through `asm!`: `vmmlaq_s32` and `vdotq_laneq_s32` are unstable in Rust
//! 1.95.

sdot_panel_gemm! {
    target_feature = "dotprod,i8mm";

    /// `acc[2i + j] += sum_e w[8i + e] * a[8j + e]` (rows i, tokens j).
    fn mmla(acc, w, a) {
        let mut acc = acc;
        // SAFETY: SMMLA is FEAT_I8MM, enabled on this function; registers only.
        std::arch::asm!(
            "smmla {acc:v}.4s, {w:v}.16b, {a:v}.16b",
            acc = inout(vreg) acc,
            w = in(vreg) w,
            a = in(vreg) a,
            options(pure, nomem, nostack, preserves_flags)
        );
        acc
    }
}
