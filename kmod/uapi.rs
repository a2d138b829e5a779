// SPDX-License-Identifier: GPL-2.0

//! The ABI shared with userspace: the UAPI crate's source compiled into
//! the module as is, so that the driver and userspace share one definition
//! (and one validator of blob sections), and which of its structs may be
//! read from or written as plain bytes.

use core::mem::size_of;

use kernel::types::{AsBytes, FromBytes};

#[allow(dead_code, unreachable_pub)]
#[path = "../uapi/src/abi.rs"]
mod abi;
#[allow(dead_code, unreachable_pub)]
#[path = "../uapi/src/sections.rs"]
mod sections;

pub(crate) use abi::*;
pub(crate) use sections::{check_sections, named};

// SAFETY: `repr(C)` structs of integers and byte arrays with no padding
// (sizes checked below and by the UAPI layout test), so every byte is
// initialised and every bit pattern is valid; this holds for all below.
unsafe impl AsBytes for Info {}
// SAFETY: see above.
unsafe impl AsBytes for BoCreate {}
// SAFETY: see above.
unsafe impl FromBytes for BoCreate {}
// SAFETY: see above.
unsafe impl FromBytes for BoDestroy {}
// SAFETY: see above.
unsafe impl AsBytes for AdapterLoad {}
// SAFETY: see above.
unsafe impl FromBytes for AdapterLoad {}
// SAFETY: see above.
unsafe impl FromBytes for AdapterUnload {}
// SAFETY: see above.
unsafe impl FromBytes for Job {}
// SAFETY: see above.
unsafe impl FromBytes for ModelMeta {}
// SAFETY: see above.
unsafe impl AsBytes for ModelMeta {}
// SAFETY: see above.
unsafe impl AsBytes for HwInfo {}
// SAFETY: see above.
unsafe impl FromBytes for HwCmd {}
// SAFETY: see above.
unsafe impl AsBytes for HwJob {}
// SAFETY: see above.
unsafe impl FromBytes for HwSetFlags {}
// SAFETY: see above.
unsafe impl FromBytes for HwBatchCmd {}
// SAFETY: see above.
unsafe impl AsBytes for HwBatchJob {}
// SAFETY: see above.
unsafe impl FromBytes for HwBatchResult {}

kernel::static_assert!(size_of::<Info>() == 4 + 4 + 8 * 4 + 32 + 64 + 32);
kernel::static_assert!(size_of::<BoCreate>() == 8 + 4 + 4 + 8);
kernel::static_assert!(size_of::<BoDestroy>() == 4 + 4);
kernel::static_assert!(size_of::<AdapterLoad>() == 4 + 4 + 8 + 8 + 4 + 4);
kernel::static_assert!(size_of::<AdapterUnload>() == 4 + 4);
kernel::static_assert!(size_of::<HwSetFlags>() == 8);
kernel::static_assert!(size_of::<HwBatchCmd>() == 16);
kernel::static_assert!(size_of::<HwBatchJob>() == 8 + size_of::<HwJob>());
kernel::static_assert!(size_of::<HwBatchResult>() == 8);
kernel::static_assert!(size_of::<ModelMeta>() == 8 + 8);
kernel::static_assert!(size_of::<BoRange>() == 4 + 4 + 8 + 8);
kernel::static_assert!(size_of::<Job>() == 4 + 2 + 1 + 1 + 3 * 24);
kernel::static_assert!(size_of::<Job>() <= URING_CMD_SQE128_BYTES);
kernel::static_assert!(size_of::<HwInfo>() == 4 + 4 + 8 * 4 + 2 + 2 + 4);
kernel::static_assert!(size_of::<HwCmd>() == 2 + 2 + 4 + 8);
kernel::static_assert!(size_of::<HwJob>() == 8 + 8 + 2 + 1 + 1 + 4 + 4 * 16);
// SAFETY: the blob layouts (see `crate::blob`): `repr(C)` structs of
// integers and byte arrays, so every bit pattern is a valid value.
unsafe impl FromBytes for FwHeader {}
// SAFETY: see above.
unsafe impl FromBytes for FwTensor {}
// SAFETY: see above.
unsafe impl FromBytes for AdapterHeader {}
