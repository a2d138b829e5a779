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

