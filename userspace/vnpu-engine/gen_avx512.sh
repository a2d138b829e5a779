#!/bin/sh
# Regenerates src/kernels/avx512.rs from src/kernels/avx2.rs: the VNNI kernels
# are the AVX2 ones with vpdpbusd accumulating the u8 x i8 dots straight into
# i32 (acc_q4 / finish_q4 / acc_q8 bodies). Run after editing avx2.rs, then
# `cargo fmt -p vnpu-engine`.
set -e
cd "$(dirname "$0")/src"
sed -e 's/^\/\/! AVX2 + FMA kernels (also what QEMU TCG `-cpu max` guests get)./\/\/! AVX-512 VNNI kernels: 256-bit `vpdpbusd` (AVX512VL) accumulates the u8 x i8\n\/\/! dots into i32 (no 16-bit stage). Same tiling as AVX2 (generated from\n\/\/! avx2.rs by gen_avx512.sh: do not edit)./' \
    -e 's/"avx2,fma"/"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"/g' \
    -e 's/"avx2,fma,f16c"/"avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni"/g' \
    -e 's/^    _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, a))$/    _mm256_dpbusd_epi32(acc, w, a)/' \
    -e 's/^    _mm256_madd_epi16(acc, _mm256_set1_epi16(1))$/    acc/' \
    -e '/^    let p = _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1));$/d' \
    -e 's/^    _mm256_add_epi32(acc, p)$/    _mm256_dpbusd_epi32(acc, w, a)/' \
    -e 's/requires AVX2, FMA and F16C/requires AVX-512 F\/BW\/VL\/VNNI, FMA, F16C/; s/Requires AVX2 and FMA/Requires AVX-512 F\/BW\/VL\/VNNI/' kernels/avx2.rs > kernels/avx512.rs
