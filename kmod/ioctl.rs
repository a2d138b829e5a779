// SPDX-License-Identifier: GPL-2.0

//! ioctl dispatch for `/dev/m4npu` (and the checks `/dev/m4npu-hw` shares).
//!
//! A command outside our type byte or with an unknown number is `ENOTTY`; a
//! known number whose encoded direction or size differs from the UAPI is
//! `EINVAL`, so a caller built against another struct layout learns that it
//! is talking to the right driver with the wrong ABI. Arguments are copied
//! in whole before use and results copied out after every lock is dropped.

use core::mem::size_of;

use kernel::{prelude::*, types::AsBytes, types::FromBytes, uaccess::UserSlice};

use crate::{context::Context, uapi};

/// `Ok` if `cmd` is one of `known`: `ENOTTY` for another type byte or an
/// unknown number, `EINVAL` for a known number with another direction or size.
pub(crate) fn check(cmd: u32, known: &[u32]) -> Result {
    if uapi::ioc_type(cmd) != uapi::IOCTL_MAGIC {
        return Err(ENOTTY);
    }
    let want = known.iter().find(|&&c| uapi::ioc_nr(c) == uapi::ioc_nr(cmd)).ok_or(ENOTTY)?;
    if cmd != *want {
        return Err(EINVAL);
    }
    Ok(())
}

pub(crate) fn dispatch(ctx: &Context, cmd: u32, arg: usize) -> Result<isize> {
    check(
        cmd,
        &[
            uapi::IOC_GET_INFO,
            uapi::IOC_BO_CREATE,
            uapi::IOC_BO_DESTROY,
            uapi::IOC_ADAPTER_LOAD,
            uapi::IOC_ADAPTER_UNLOAD,
            uapi::IOC_RUN,
            uapi::IOC_MODEL_META,
        ],
    )?;
    match cmd {
        uapi::IOC_GET_INFO => write(arg, &ctx.info())?,
        uapi::IOC_BO_CREATE => {
            let mut req: uapi::BoCreate = read(arg)?;
            ctx.bo_create(&mut req)?;
            if let Err(e) = write(arg, &req) {
                ctx.bo_forget(req.handle);
                return Err(e);
            }
        }
        uapi::IOC_BO_DESTROY => ctx.bo_destroy(&read(arg)?)?,
        uapi::IOC_ADAPTER_LOAD => {
            let mut req: uapi::AdapterLoad = read(arg)?;
            ctx.adapter_load(&mut req)?;
            if let Err(e) = write(arg, &req) {
                ctx.adapter_forget(req.handle);
                return Err(e);
            }
        }
        uapi::IOC_ADAPTER_UNLOAD => ctx.adapter_unload(&read(arg)?)?,
        uapi::IOC_RUN => return ctx.run_sync(&read(arg)?),
        uapi::IOC_MODEL_META => {
            let mut req: uapi::ModelMeta = read(arg)?;
            ctx.model_meta(&mut req)?;
            write(arg, &req)?;
        }
        _ => return Err(ENOTTY),
    }
    Ok(0)
}

pub(crate) fn read<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(arg, size_of::<T>()).reader().read()
}

pub(crate) fn write<T: AsBytes>(arg: usize, v: &T) -> Result {
    UserSlice::new(arg, size_of::<T>()).writer().write(v)
}

// SAFETY: `repr(C)` structs of integers and byte arrays with no padding
// (sizes checked below and by the UAPI layout test), so every byte is
// initialised and every bit pattern is valid; this holds for all below.
unsafe impl AsBytes for uapi::Info {}
// SAFETY: see above.
unsafe impl AsBytes for uapi::BoCreate {}
// SAFETY: see above.
unsafe impl FromBytes for uapi::BoCreate {}
// SAFETY: see above.
unsafe impl FromBytes for uapi::BoDestroy {}
// SAFETY: see above.
unsafe impl AsBytes for uapi::AdapterLoad {}
// SAFETY: see above.
unsafe impl FromBytes for uapi::AdapterLoad {}
// SAFETY: see above.
unsafe impl FromBytes for uapi::AdapterUnload {}
// SAFETY: see above.
unsafe impl FromBytes for uapi::Job {}
// SAFETY: see above.
unsafe impl FromBytes for uapi::ModelMeta {}
// SAFETY: see above.
unsafe impl AsBytes for uapi::ModelMeta {}
// SAFETY: see above.
unsafe impl AsBytes for uapi::HwInfo {}
// SAFETY: see above.
unsafe impl FromBytes for uapi::HwCmd {}
// SAFETY: see above.
unsafe impl AsBytes for uapi::HwJob {}
// SAFETY: see above.
unsafe impl FromBytes for uapi::HwSetFlags {}
// SAFETY: see above.
unsafe impl FromBytes for uapi::HwBatchCmd {}
// SAFETY: see above.
unsafe impl AsBytes for uapi::HwBatchJob {}
// SAFETY: see above.
unsafe impl FromBytes for uapi::HwBatchResult {}

kernel::static_assert!(size_of::<uapi::Info>() == 4 + 4 + 8 * 4 + 32 + 64 + 32);
kernel::static_assert!(size_of::<uapi::BoCreate>() == 8 + 4 + 4 + 8);
kernel::static_assert!(size_of::<uapi::BoDestroy>() == 4 + 4);
kernel::static_assert!(size_of::<uapi::AdapterLoad>() == 4 + 4 + 8 + 8 + 4 + 4);
kernel::static_assert!(size_of::<uapi::AdapterUnload>() == 4 + 4);
kernel::static_assert!(size_of::<uapi::HwSetFlags>() == 8);
kernel::static_assert!(size_of::<uapi::HwBatchCmd>() == 16);
kernel::static_assert!(size_of::<uapi::HwBatchJob>() == 8 + size_of::<uapi::HwJob>());
kernel::static_assert!(size_of::<uapi::HwBatchResult>() == 8);
kernel::static_assert!(size_of::<uapi::ModelMeta>() == 8 + 8);
kernel::static_assert!(size_of::<uapi::BoRange>() == 4 + 4 + 8 + 8);
kernel::static_assert!(size_of::<uapi::Job>() == 4 + 2 + 1 + 1 + 3 * 24);
kernel::static_assert!(size_of::<uapi::Job>() <= uapi::URING_CMD_SQE128_BYTES);
kernel::static_assert!(size_of::<uapi::HwInfo>() == 4 + 4 + 8 * 4 + 2 + 2 + 4);
kernel::static_assert!(size_of::<uapi::HwCmd>() == 2 + 2 + 4 + 8);
kernel::static_assert!(size_of::<uapi::HwJob>() == 8 + 8 + 2 + 1 + 1 + 4 + 4 * 16);
