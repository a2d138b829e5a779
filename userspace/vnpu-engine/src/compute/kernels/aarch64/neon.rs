//! Baseline ASIMD int8 GEMM (every aarch64 CPU, e.g. Cortex-A53/A72): no
//! dot-product instruction. Q8_0: `smull`/`smull2` form i16 products,
//! `addp` pairs them (2 x 128 x 127 < 2^15) and `sadalp` widens into i32.
//! Q4_1: `smlal`/`smlal2` accumulate a whole block in i16 lanes (8 x 15 x
//! 127 per lane), widened once per block.

panel_gemm! {
    target_feature = "neon";

    /// `acc[i] += sum_e w[4i + e] * a[4L + e]` (4 rows x 4 bytes against
    /// the 4 activation bytes of lane `L`).
    fn dot_lane<const L>(acc, w, a) {
        let a4 = vreinterpretq_s8_s32(vdupq_laneq_s32::<L>(vreinterpretq_s32_s8(a)));
        let p = vpaddq_s16(vmull_s8(vget_low_s8(w), vget_low_s8(a4)), vmull_high_s8(w, a4));
        vpadalq_s16(acc, p)
    }

    /// Q4_1 block accumulator: i16 lanes (row, byte) of rows 0-1 and 2-3.
    type Acc4 = [int16x8_t; 2];

    fn zero_q4() {
        [vdupq_n_s16(0); 2]
    }

    /// `acc[i][e] += w[4i + e] * a[4L + e]` in i16 (nibble x activation).
    fn acc_q4<const L>(acc, w, a) {
        let a4 = vreinterpretq_s8_s32(vdupq_laneq_s32::<L>(vreinterpretq_s32_s8(a)));
        [
            vmlal_s8(acc[0], vget_low_s8(w), vget_low_s8(a4)),
            vmlal_high_s8(acc[1], w, a4),
        ]
    }

    /// Block end: (row, byte) lanes -> one i32 per row (pair sums <= 30480).
    fn finish_q4(acc) {
        vpaddlq_s16(vpaddq_s16(acc[0], acc[1]))
    }
}
