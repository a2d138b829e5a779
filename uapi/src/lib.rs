//! The m4npu user/kernel contract.
//!
//! Everything lives in `abi.rs`, which the kernel module includes verbatim
//! (`#[path]`), so driver and userspace compile the very same definitions.
//! `include/linux/m4npu.h` is the C twin; `tests/c_layout.rs` keeps them equal.
#![no_std]

mod abi;
pub use abi::*;
