// SPDX-License-Identifier: GPL-2.0

//! m4npu: the foundation model as NPU firmware.
//!
//! The driver owns NPU memory and the one foundation model pinned in it, and
//! gives every opener of `/dev/m4npu` an isolated context for its adapters,
//! buffers and jobs.

use kernel::{c_str, prelude::*};

mod compat;
mod context;
mod ioctl;
mod npu;

// The UAPI crate's source, compiled into the module as is, so the driver and
// userspace share one definition of the ABI.
#[allow(dead_code, unreachable_pub)]
#[path = "../uapi/src/abi.rs"]
mod uapi;

use compat::miscdevice::{MiscDeviceOptions, MiscDeviceRegistration};
use context::Context;
use npu::Npu;

module! {
    type: M4NpuModule,
    name: "m4npu",
    author: "m4npu developers",
    description: "m4npu: the foundation model as NPU firmware",
    license: "GPL",
}

/// Driver version reported by GET_INFO.
pub(crate) const DRIVER_VERSION: &str = "0.1.0";

struct M4NpuModule {
    _misc: Pin<KBox<MiscDeviceRegistration<Context>>>,
}

impl kernel::Module for M4NpuModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let npu = Npu::new()?;
        let opts = MiscDeviceOptions { name: c_str!("m4npu"), mode: 0o666 };
        let misc = KBox::pin_init(MiscDeviceRegistration::register(opts, module, npu), GFP_KERNEL)?;
        pr_info!("m4npu {DRIVER_VERSION}: /dev/m4npu ready\n");
        Ok(Self { _misc: misc })
    }
}
