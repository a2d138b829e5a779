//! AVX2 + FMA int8 GEMM (also what QEMU TCG `-cpu max` guests get):
//! `vpmaddubsw` multiplies u8 x i8 pairs into 16-bit sums, `vpmaddwd`
//! widens them to i32.

panel_gemm! {
    target_feature = "avx2,fma,f16c";

    /// Q4_1 inner step: 16-bit accumulate of u8 x i8 pair products.
    fn acc_q4(acc, w, a) {
        _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, a))
    }

    /// Q4_1 block end: 16-bit pair sums -> one i32 per row.
    fn finish_q4(acc) {
        _mm256_madd_epi16(acc, _mm256_set1_epi16(1))
    }

    /// Q8_0 inner step (`w` = |weights|, `a` = activations with the weights'
    /// signs): |w| * |a| * 2 < 2^15 fits one maddubs, but not two, so widen each.
    fn acc_q8(acc, w, a) {
        let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1));
        _mm256_add_epi32(acc, p)
    }
}

panel_gemm_entries!("avx2,fma,f16c");
