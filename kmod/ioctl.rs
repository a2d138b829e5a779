// SPDX-License-Identifier: GPL-2.0

//! What the ioctls of `/dev/m4npu` and `/dev/m4npu-hw` share: the command
//! check and the copies of their arguments (each node dispatches its own).
//!
//! A command outside our type byte or with an unknown number is `ENOTTY`; a
//! known number whose encoded direction or size differs from the UAPI is
//! `EINVAL`, so a caller built against another struct layout learns that it
//! is talking to the right driver with the wrong ABI. Arguments are copied
//! in whole before use and results copied out after every lock is dropped.

use core::mem::size_of;

use kernel::{prelude::*, types::AsBytes, types::FromBytes, uaccess::UserSlice};

use crate::uapi;

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

/// Copies the argument in.
pub(crate) fn read<T: FromBytes>(arg: usize) -> Result<T> {
    UserSlice::new(arg, size_of::<T>()).reader().read()
}

/// Copies the result out.
pub(crate) fn write<T: AsBytes>(arg: usize, v: &T) -> Result {
    UserSlice::new(arg, size_of::<T>()).writer().write(v)
}

