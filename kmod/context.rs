// SPDX-License-Identifier: GPL-2.0

//! Per-open contexts: everything an app owns lives here and dies with its file.

use kernel::{
    prelude::*,
    sync::{Arc, ArcBorrow},
};

use crate::{
    compat::{
        file::File,
        miscdevice::{MiscDevice, MiscDeviceRegistration},
    },
    npu::Npu,
    uapi, DRIVER_VERSION,
};

/// One open of `/dev/m4npu`.
pub(crate) struct Context {
    id: u64,
    npu: Arc<Npu>,
}

impl Context {
    /// What GET_INFO reports to this context.
    pub(crate) fn info(&self) -> uapi::Info {
        let mut info = uapi::Info::zeroed();
        info.uapi_version = uapi::UAPI_VERSION;
        info.context_id = self.id;
        let v = DRIVER_VERSION.as_bytes();
        // Leave room for the terminating NUL.
        let n = v.len().min(info.driver_version.len() - 1);
        info.driver_version[..n].copy_from_slice(&v[..n]);
        info
    }

    #[allow(dead_code)]
    pub(crate) fn npu(&self) -> &Npu {
        &self.npu
    }
}

#[vtable]
impl MiscDevice for Context {
    type Ptr = Arc<Context>;
    type RegistrationData = Arc<Npu>;

    fn open(_file: &File, misc: &MiscDeviceRegistration<Self>) -> Result<Arc<Context>> {
        let npu = misc.data().clone();
        let id = npu.new_context_id();
        Ok(Arc::new(Context { id, npu }, GFP_KERNEL)?)
    }

    fn ioctl(ctx: ArcBorrow<'_, Context>, _file: &File, cmd: u32, arg: usize) -> Result<isize> {
        crate::ioctl::dispatch(&ctx, cmd, arg)
    }
}
