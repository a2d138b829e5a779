// SPDX-License-Identifier: GPL-2.0

//! ioctl dispatch for `/dev/m4npu`.
//!
//! A command outside our type byte or with an unknown number is `ENOTTY`; a
//! known number whose encoded direction or size differs from the UAPI is
//! `EINVAL`, so a caller built against another struct layout learns that it
//! is talking to the right driver with the wrong ABI.

use core::mem::size_of;

use kernel::{prelude::*, uaccess::UserSlice};

use crate::{context::Context, uapi};

pub(crate) fn dispatch(ctx: &Context, cmd: u32, arg: usize) -> Result<isize> {
    if uapi::ioc_type(cmd) != uapi::IOCTL_MAGIC {
        return Err(ENOTTY);
    }
    match uapi::ioc_nr(cmd) {
        nr if nr == uapi::ioc_nr(uapi::IOC_GET_INFO) => {
            expect(cmd, uapi::IOC_GET_INFO)?;
            let info = ctx.info();
            UserSlice::new(arg, size_of::<uapi::Info>()).writer().write(&info)?;
            Ok(0)
        }
        _ => Err(ENOTTY),
    }
}

fn expect(cmd: u32, want: u32) -> Result {
    if cmd == want {
        Ok(())
    } else {
        Err(EINVAL)
    }
}

// SAFETY: `Info` is `repr(C)` of integers and byte arrays with no padding
// (checked by the UAPI layout test), so every byte is initialised.
unsafe impl kernel::types::AsBytes for uapi::Info {}
