//! Baseline ASIMD int8 GEMM (every aarch64 CPU, e.g. Cortex-A53/A72):
//! no dot-product instruction, so `smull`/`smull2` form i16 products, `addp`
//! pairs them (2 x 128 x 127 < 2^15) and `sadalp` widens into i32.

panel_gemm! {
    target_feature = "neon";

    /// `acc[i] += sum_e w[4i + e] * a[4L + e]` (4 rows x 4 bytes against
    /// the 4 activation bytes of lane `L`).
    fn dot_lane<const L>(acc, w, a) {
        let a4 = vreinterpretq_s8_s32(vdupq_laneq_s32::<L>(vreinterpretq_s32_s8(a)));
        let p = vpaddq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(a4)), vmull_high_s8(w, a4));
        vpadalq_s16(acc, p)
    }
}
