//! The m4npu user/kernel contract.
//!
//! Everything lives in `abi.rs`, which the kernel module includes verbatim
//! (`#[path]`), so driver and userspace compile the very same definitions;
//! so does `sections.rs`, the one validator of blob sections both use.
//! `include/linux/m4npu.h` is the C twin; `tests/c_layout.rs` keeps them equal.
//! Flag words are also offered as `bitflags` sets ([`InfoFlags`], [`HwFlags`]),
//! here only: the module compiles `abi.rs` alone.
#![no_std]

mod abi;
mod sections;
pub use abi::*;
pub use sections::{check_sections, named, tensor_name, SectionError};

bitflags::bitflags! {
    /// [`Info::flags`] and [`HwInfo::flags`] as a set (`INFO_*`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct InfoFlags: u32 {
        /// [`INFO_MODEL_LOADED`].
        const MODEL_LOADED = abi::INFO_MODEL_LOADED;
    }

    /// [`HwSetFlags::flags`] as a set (`HW_FLAG_*`).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct HwFlags: u64 {
        /// [`HW_FLAG_RECOVERY`].
        const RECOVERY = abi::HW_FLAG_RECOVERY;
    }
}

// The sets name every flag the ABI defines.
const _: () = assert!(HwFlags::all().bits() == abi::HW_FLAGS_ALL);
