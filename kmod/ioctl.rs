// SPDX-License-Identifier: GPL-2.0

//! ioctl dispatch for `/dev/m4npu`.
//!
//! A command outside our type byte or with an unknown number is `ENOTTY`; a
//! known number whose encoded direction or size differs from the UAPI is
//! `EINVAL`, so a caller built against another struct layout learns that it
//! is talking to the right driver with the wrong ABI. Arguments are copied
//! in whole before use and results copied out after every lock is dropped.

use core::mem::size_of;

use kernel::{prelude::*, types::AsBytes, types::FromBytes, uaccess::UserSlice};

use crate::{context::Context, uapi};

pub(crate) fn dispatch(ctx: &Context, cmd: u32, arg: usize) -> Result<isize> {
    if uapi::ioc_type(cmd) != uapi::IOCTL_MAGIC {
        return Err(ENOTTY);
    }
    let nr = uapi::ioc_nr(cmd);
    let want = [
        uapi::IOC_GET_INFO,
        uapi::IOC_BO_CREATE,
        uapi::IOC_BO_DESTROY,
        uapi::IOC_ADAPTER_LOAD,
        uapi::IOC_ADAPTER_UNLOAD,
    ]
        .into_iter()
        .find(|&c| uapi::ioc_nr(c) == nr)
        .ok_or(ENOTTY)?;
    if cmd != want {
        return Err(EINVAL);
    }
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
        _ => return Err(ENOTTY),
    }
    Ok(0)
}

fn read<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(arg, size_of::<T>()).reader().read()
}

fn write<T: AsBytes>(arg: usize, v: &T) -> Result {
    UserSlice::new(arg, size_of::<T>()).writer().write(v)
}

// SAFETY (for all of them): `repr(C)` structs of integers and byte arrays with
// no padding (sizes checked below and by the UAPI layout test), so every
// byte is initialised and every bit pattern is valid.
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

kernel::static_assert!(size_of::<uapi::Info>() == 4 + 4 + 8 * 4 + 32 + 64 + 32);
kernel::static_assert!(size_of::<uapi::BoCreate>() == 8 + 4 + 4 + 8);
kernel::static_assert!(size_of::<uapi::BoDestroy>() == 4 + 4);
kernel::static_assert!(size_of::<uapi::AdapterLoad>() == 4 + 4 + 8 + 8 + 4 + 4);
kernel::static_assert!(size_of::<uapi::AdapterUnload>() == 4 + 4);
