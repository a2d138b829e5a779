//! AVX-512 VNNI int8 GEMM: 256-bit `vpdpbusd` (AVX512VL) accumulates the
//! u8 x i8 dots straight into i32 (no 16-bit stage). Same tiling as AVX2.

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
