//! aarch64 kernels. The int8 GEMM is written once (`gemm.rs`, the
//! `panel_gemm!` macro) and stamped per ISA with its dot steps ([`neon`]:
//! `smlal`/`smull` + `sadalp` widening; [`dotprod`]: `sdot`; [`i8mm`]:
//! `smmla` for token pairs, `sdot` for a lone token); the f32 kernels
//! ([`float`]) need only baseline ASIMD, so every aarch64 ISA runs them.
//!
//! `sdot` and `smmla` are emitted with `asm!`: their intrinsics
//! (`vdotq_laneq_s32`, `vmmlaq_s32`) are unstable in Rust 1.95, and the f16
//! scale conversion uses `fcvtl` through `asm!` because `vcvt_f32_f16` is
//! only stable since 1.94, past the workspace MSRV (1.89).

#[macro_use]
mod gemm;
#[macro_use]
pub mod dotprod;
pub mod float;
pub mod i8mm;
pub mod neon;
