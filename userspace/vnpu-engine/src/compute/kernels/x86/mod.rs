//! x86_64 kernels. The int8 GEMM is written once (`gemm.rs`, the
//! `panel_gemm!` macro) and stamped per ISA ([`avx2`], [`avx512`]); the f32
//! kernels ([`float`]) need nothing past AVX2 + FMA, so both ISAs run them.

#[macro_use]
mod gemm;
pub mod avx2;
pub mod avx512;
pub mod attention;
pub mod float;
pub mod float512;
pub(super) mod probe;
