//! The module, the device node, GET_INFO and the ioctl contract.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use m4npu::uapi;
use m4npu::Device;

use crate::module;
use crate::raw::{errno_name, ioctl};

fn expect_errno(what: &str, got: Result<i32, i32>, want: i32) -> Result<()> {
    match got {
        Err(e) if e == want => Ok(()),
        Err(e) => bail!("{what}: got {}, want {}", errno_name(e), errno_name(want)),
        Ok(r) => bail!("{what}: succeeded ({r}), want {}", errno_name(want)),
    }
}

pub fn module_loads_and_creates_node() -> Result<()> {
    ensure!(!module::is_loaded(), "m4npu is loaded before the suite loaded it");
    module::load().context("finit_module(m4npu.ko)")?;
    ensure!(module::is_loaded(), "/sys/module/m4npu missing after load");
    ensure!(Device::default_path().exists(), "/dev/m4npu missing after load");
    Ok(())
}

pub fn device_node_mode() -> Result<()> {
    let md = std::fs::metadata(Device::default_path())?;
    ensure!(md.file_type().is_char_device(), "/dev/m4npu is not a character device");
    ensure!(md.mode() & 0o7777 == 0o666, "/dev/m4npu mode is {:o}, want 666", md.mode() & 0o7777);
    ensure!(md.uid() == 0 && md.gid() == 0, "/dev/m4npu owned by {}:{}", md.uid(), md.gid());
    Ok(())
}

pub fn get_info_reports_driver() -> Result<()> {
    let info = Device::open()?.info()?;
    ensure!(info.uapi_version == uapi::UAPI_VERSION, "uapi version {:#x}", info.uapi_version);
    ensure!(
        info.driver_version == env!("CARGO_PKG_VERSION"),
        "driver version {:?}, want {:?}",
        info.driver_version,
        env!("CARGO_PKG_VERSION")
    );
    ensure!(info.context_id != 0, "context id 0");
    ensure!(info.model.is_none(), "a model is reported, but no firmware was given: {:?}", info.model);
    Ok(())
}

pub fn two_fds_are_two_contexts() -> Result<()> {
    let (a, b) = (Device::open()?, Device::open()?);
    let (ia, ib) = (a.info()?.context_id, b.info()?.context_id);
    ensure!(ia != ib, "two opens share context {ia}");
    ensure!(a.info()?.context_id == ia, "a context's id changed between calls");
    Ok(())
}

pub fn processes_get_distinct_contexts() -> Result<()> {
    let own = Device::open()?.info()?.context_id;
    let mut ids = vec![own];
    for _ in 0..2 {
        let out = Command::new("/proc/self/exe").arg("--print-context-id").output()?;
        ensure!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
        ids.push(String::from_utf8(out.stdout)?.trim().parse()?);
    }
    let mut uniq = ids.clone();
    uniq.sort_unstable();
    uniq.dedup();
    ensure!(uniq.len() == ids.len(), "context ids repeat across processes: {ids:?}");
    Ok(())
}

pub fn unknown_ioctl_is_enotty() -> Result<()> {
    let dev = Device::open()?;
    let mut buf = [0u8; 64];
    let p = buf.as_mut_ptr() as usize;
    let cases = [
        ("unknown number", uapi::ioc(uapi::IOC_READ, uapi::IOCTL_MAGIC, 0x7f, 8)),
        ("foreign type byte", uapi::ioc(uapi::IOC_READ, b'T', 0x00, 8)),
        ("TCGETS", 0x5401),
        ("zero", 0),
    ];
    for (what, cmd) in cases {
        expect_errno(what, ioctl(&dev, cmd, p), libc::ENOTTY)?;
    }
    Ok(())
}

pub fn bad_user_pointer_is_efault() -> Result<()> {
    let dev = Device::open()?;
    for (what, p) in [("NULL", 0usize), ("low address", 0x10), ("kernel address", 0xffff_8880_0000_0000)] {
        expect_errno(what, ioctl(&dev, uapi::IOC_GET_INFO, p), libc::EFAULT)?;
    }
    // A read-only page: the driver must not be able to write GET_INFO into it.
    // SAFETY: a fresh anonymous mapping, unmapped below.
    let page = unsafe {
        libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
    };
    ensure!(page != libc::MAP_FAILED, "mmap failed");
    let r = ioctl(&dev, uapi::IOC_GET_INFO, page as usize);
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(page, 4096) };
    expect_errno("read-only page", r, libc::EFAULT)?;
    // The struct straddling into an unmapped page.
    // SAFETY: as above, two pages of which the second is then unmapped.
    let pages = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    ensure!(pages != libc::MAP_FAILED, "mmap failed");
    // SAFETY: the second page of the mapping above.
    unsafe { libc::munmap(pages.cast::<u8>().add(4096).cast(), 4096) };
    let r = ioctl(&dev, uapi::IOC_GET_INFO, pages as usize + 4096 - 16);
    // SAFETY: the first page, still mapped.
    unsafe { libc::munmap(pages, 4096) };
    expect_errno("struct crossing into an unmapped page", r, libc::EFAULT)
}

pub fn wrong_argument_size_is_einval() -> Result<()> {
    let dev = Device::open()?;
    let mut buf = [0u8; 4096];
    let p = buf.as_mut_ptr() as usize;
    let size = std::mem::size_of::<uapi::Info>();
    let cases = [
        ("short", uapi::ioc(uapi::IOC_READ, uapi::IOCTL_MAGIC, 0, size - 8)),
        ("oversized", uapi::ioc(uapi::IOC_READ, uapi::IOCTL_MAGIC, 0, size + 8)),
        ("zero size", uapi::ioc(uapi::IOC_READ, uapi::IOCTL_MAGIC, 0, 0)),
        ("write direction", uapi::ioc(uapi::IOC_WRITE, uapi::IOCTL_MAGIC, 0, size)),
        ("no direction", uapi::ioc(uapi::IOC_NONE, uapi::IOCTL_MAGIC, 0, size)),
    ];
    for (what, cmd) in cases {
        expect_errno(what, ioctl(&dev, cmd, p), libc::EINVAL)?;
    }
    ensure!(buf.iter().all(|&b| b == 0), "a refused ioctl wrote to the argument");
    Ok(())
}

pub fn bad_module_parameters_are_refused() -> Result<()> {
    module::unload_when_free()?;
    for params in ["pool_mb=0", "ctx_quota_mb=0", "pool_mb=-1", "pool_mb=lots"] {
        match module::load_with(params) {
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            other => bail!("insmod m4npu {params}: got {other:?}, want EINVAL"),
        }
        ensure!(!module::is_loaded(), "module loaded with {params}");
    }
    module::load().context("reload")
}

pub fn rmmod_refused_while_open() -> Result<()> {
    let dev = Device::open()?;
    match module::unload() {
        Err(e) if e.raw_os_error() == Some(libc::EWOULDBLOCK) => {}
        other => bail!("rmmod with /dev/m4npu open: got {other:?}, want EWOULDBLOCK (module in use)"),
    }
    ensure!(module::is_loaded(), "module gone while a file is open");
    dev.info().context("the open file stopped working after the refused rmmod")?;
    drop(dev);
    module::unload().context("rmmod after the last close")?;
    ensure!(!module::is_loaded(), "module still loaded after rmmod");
    ensure!(!Path::new("/dev/m4npu").exists(), "/dev/m4npu left behind after rmmod");
    module::load().context("reload")?;
    Ok(())
}

/// With firmware, a buffer and a mapping each time, so that every
/// allocation path is unwound; kmemleak at the end of the run checks it.
pub fn load_unload_20_times() -> Result<()> {
    let mut last_id = 0;
    for i in 0..20 {
        module::unload_when_free().with_context(|| format!("unload #{i}"))?;
        module::load_with(&format!("firmware={}", crate::firmware::GOOD)).with_context(|| format!("load #{i}"))?;
        let dev = Device::open()?;
        let info = dev.info()?;
        ensure!(info.model.is_some(), "load #{i}: no model");
        let mut buf = dev.alloc(8192)?;
        buf.as_mut_slice()[8191] = 1;
        let id = info.context_id;
        // Ids restart with each load: a fresh module has fresh state.
        ensure!(id == 1, "first context after load #{i} has id {id} (previous load's last: {last_id})");
        last_id = id;
    }
    Ok(())
}
