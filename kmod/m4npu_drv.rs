// SPDX-License-Identifier: GPL-2.0

//! m4npu: the foundation model as NPU firmware.
//!
//! The driver owns NPU memory and the one foundation model pinned in it,
//! gives every opener of `/dev/m4npu` an isolated context for its adapters,
//! buffers and jobs, and hands the jobs to the device behind
//! `/dev/m4npu-hw`.

use kernel::{c_str, prelude::*, sync::Arc};

mod adapter;
mod blob;
mod bo;
mod compat;
mod context;
mod dispatch;
mod firmware;
mod handles;
mod hw;
mod ioctl;
mod job;
mod npu;
mod params;
mod pool;
mod uapi;
mod usage;

use compat::{
    debugfs::ShowDir,
    miscdevice::{MiscDeviceOptions, MiscDeviceRegistration},
};
use context::Context;
use hw::HwSession;
use npu::Npu;

module! {
    type: M4NpuModule,
    name: "m4npu",
    author: "m4npu developers",
    description: "m4npu: the foundation model as NPU firmware",
    license: "GPL",
}

/// Errnos that 6.12's `kernel::error::code` does not name.
pub(crate) mod errno {
    use kernel::{bindings, error::Error};

    /// Disk quota exceeded: a context's NPU memory quota.
    pub(crate) fn edquot() -> Error {
        Error::from_errno(-(bindings::EDQUOT as i32))
    }

    /// Wrong medium type: an adapter trained for another foundation model.
    pub(crate) fn emediumtype() -> Error {
        Error::from_errno(-(bindings::EMEDIUMTYPE as i32))
    }

    /// Operation not supported: a file that is not a memfd.
    pub(crate) fn eopnotsupp() -> Error {
        Error::from_errno(-(bindings::EOPNOTSUPP as i32))
    }

    /// Bad message: a blob whose checksum does not match.
    pub(crate) fn ebadmsg() -> Error {
        Error::from_errno(-(bindings::EBADMSG as i32))
    }
}

/// Driver version reported by GET_INFO.
pub(crate) const DRIVER_VERSION: &str = "0.1.0";

// Fields drop in order: the debugfs view goes before the devices.
struct M4NpuModule {
    _debugfs: ShowDir<Npu>,
    _hw: Pin<KBox<MiscDeviceRegistration<HwSession>>>,
    _misc: Pin<KBox<MiscDeviceRegistration<Context>>>,
}

fn mib(v: u32) -> Result<usize> {
    (v as usize).checked_mul(1 << 20).filter(|&b| b > 0).ok_or(EINVAL)
}

impl kernel::Module for M4NpuModule {
    fn init(module: &'static ThisModule) -> Result<Self> {
        let pool_size = mib(params::POOL_MB.get()).inspect_err(|_| pr_err!("pool_mb must be at least 1\n"))?;
        let quota = mib(params::CTX_QUOTA_MB.get()).inspect_err(|_| pr_err!("ctx_quota_mb must be at least 1\n"))?;
        let max_jobs = params::CTX_MAX_JOBS.get();
        if max_jobs == 0 {
            pr_err!("ctx_max_jobs must be at least 1\n");
            return Err(EINVAL);
        }
        let npu = Arc::pin_init(Npu::new(pool_size, quota, max_jobs, params::RECOVERY_MS.get()), GFP_KERNEL)?;
        let opts = MiscDeviceOptions { name: c_str!("m4npu"), mode: 0o666 };
        let misc = KBox::pin_init(MiscDeviceRegistration::register(opts, module, npu.clone()), GFP_KERNEL)?;

        // The loader needs our device, so the node exists a moment before
        // the model: an open in that window sees "no model", as with a bad
        // blob. insmod returns only after this.
        let name = params::FIRMWARE.as_cstr();
        if !name.is_empty() {
            if let Ok(fw) = firmware::load(npu.pool(), misc.device(), name) {
                pr_info!("firmware {}: {} bytes pinned\n", name, fw.model().size);
                npu.set_firmware(Arc::new(fw, GFP_KERNEL)?);
            }
        }
        // The device side is root's alone: it sees all of NPU memory.
        let opts = MiscDeviceOptions { name: c_str!("m4npu-hw"), mode: 0o600 };
        let hw = KBox::pin_init(MiscDeviceRegistration::register(opts, module, npu.clone()), GFP_KERNEL)?;
        let debugfs = ShowDir::new(c_str!("m4npu"), c_str!("state"), module, npu)?;
        pr_info!("m4npu {DRIVER_VERSION}: /dev/m4npu ready, {} MiB NPU memory\n", pool_size >> 20);
        Ok(Self { _debugfs: debugfs, _hw: hw, _misc: misc })
    }
}
