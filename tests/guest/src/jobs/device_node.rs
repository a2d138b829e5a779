//! `/dev/m4npu-hw`: who may open it, what it reports, what it lets the
//! device map, and how its uring commands are checked.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use io_uring::{opcode, types, IoUring};
use m4npu::{uapi, Device, Errno};
use m4npu_hw::HwDevice;

use super::support::{debugfs_state, device_attached, expect_message};
use crate::children::{eventually, HANG};
use crate::firmware;
use crate::raw::{errno_name, ioctl};

/// Tries to open `path` read-write as user and group 65534 (nobody), in a
/// forked child; returns the errno, 0 if the open succeeded.
fn open_as_nobody(path: &str) -> Result<i32> {
    let path = CString::new(path)?;
    // SAFETY: the child only makes raw syscalls and exits.
    let pid = unsafe { libc::fork() };
    ensure!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: async-signal-safe syscalls on valid arguments, then _exit.
        unsafe {
            if libc::setgid(65534) != 0 || libc::setuid(65534) != 0 {
                libc::_exit(255);
            }
            let fd = libc::open(path.as_ptr(), libc::O_RDWR);
            libc::_exit(if fd >= 0 { 0 } else { *libc::__errno_location() });
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    ensure!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) != 255, "the probe child failed: {status:#x}");
    Ok(libc::WEXITSTATUS(status))
}

pub fn hw_node_is_root_only_and_exclusive() -> Result<()> {
    let path = HwDevice::default_path();
    let md = std::fs::metadata(&path).with_context(|| format!("{} missing", path.display()))?;
    ensure!(md.file_type().is_char_device(), "{} is not a character device", path.display());
    ensure!(md.mode() & 0o7777 == 0o600, "{} mode is {:o}, want 600", path.display(), md.mode() & 0o7777);
    ensure!(md.uid() == 0 && md.gid() == 0, "{} owned by {}:{}", path.display(), md.uid(), md.gid());
    let e = open_as_nobody(&path.to_string_lossy())?;
    ensure!(e == libc::EACCES, "an unprivileged open of the device side: {}", errno_name(e));
    ensure!(open_as_nobody("/dev/m4npu")? == 0, "an unprivileged app cannot open /dev/m4npu");

    ensure!(!device_attached()?, "a device is attached before the test opened one");
    let hw = HwDevice::open()?;
    ensure!(device_attached()?, "debugfs does not show the open device:\n{}", debugfs_state()?);
    match HwDevice::open() {
        Err(e) if e.errno() == Some(Errno::EBUSY) => expect_message(&e, "one open at a time")?,
        Err(e) => bail!("second open of the device side: {e}, want EBUSY"),
        Ok(_) => bail!("a second open of the device side succeeded"),
    }

    let info = *hw.info();
    let dev = Device::open()?.info()?;
    let model = dev.model.context("no model loaded")?;
    ensure!(info.uapi_version == uapi::UAPI_VERSION, "uapi version {:#x}", info.uapi_version);
    ensure!(info.flags & uapi::INFO_MODEL_LOADED != 0, "HW_GET_INFO flags {:#x} lack MODEL_LOADED", info.flags);
    ensure!(info.pool_size == dev.pool_size, "pool size {} != GET_INFO's {}", info.pool_size, dev.pool_size);
    ensure!(info.model_addr == 0 && info.model_size == model.size, "model at {:#x}, {} bytes", info.model_addr, info.model_size);
    ensure!(
        info.model_region >= info.model_size && info.model_region % 4096 == 0 && info.model_region <= info.pool_size,
        "model region {} for a {}-byte model",
        info.model_region,
        info.model_size
    );
    ensure!(info.max_queues == uapi::HW_MAX_QUEUES && info.queue_depth == uapi::HW_QUEUE_DEPTH, "{info:?}");
    ensure!(info.pad == 0, "pad {}", info.pad);

    // The ioctl contract of /dev/m4npu holds here too.
    let mut buf = [0u8; 128];
    let p = buf.as_mut_ptr() as usize;
    let size = size_of::<uapi::HwInfo>();
    for (what, cmd, want) in [
        ("unknown number", uapi::ioc(uapi::IOC_READ, uapi::IOCTL_MAGIC, 0x2f, 8), libc::ENOTTY),
        ("an app ioctl", uapi::IOC_GET_INFO, libc::ENOTTY),
        ("HW_GET_INFO, short", uapi::ioc(uapi::IOC_READ, uapi::IOCTL_MAGIC, 0x20, size - 8), libc::EINVAL),
        ("HW_GET_INFO, write direction", uapi::ioc(uapi::IOC_WRITE, uapi::IOCTL_MAGIC, 0x20, size), libc::EINVAL),
    ] {
        let r = ioctl(&hw, cmd, p);
        ensure!(r == Err(want), "{what} on the device side: {r:?}, want {}", errno_name(want));
    }
    ensure!(ioctl(&hw, uapi::IOC_HW_GET_INFO, 0) == Err(libc::EFAULT), "HW_GET_INFO to NULL is not EFAULT");
    let r = ioctl(&Device::open()?, uapi::IOC_HW_GET_INFO, p);
    ensure!(r == Err(libc::ENOTTY), "HW_GET_INFO on /dev/m4npu: {r:?}, want ENOTTY");

    drop(hw);
    ensure!(!device_attached()?, "closing the device side did not detach it:\n{}", debugfs_state()?);
    HwDevice::open().context("reopening the device side after the close")?;
    Ok(())
}

fn map(hw: &HwDevice, len: usize, prot: i32, flags: i32, offset: u64) -> Result<*mut libc::c_void, i32> {
    // SAFETY: a fresh mapping at a kernel-chosen address.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, hw.as_raw_fd(), offset as i64) };
    if p == libc::MAP_FAILED {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(p)
    }
}

fn unmap(p: *mut libc::c_void, len: usize) {
    // SAFETY: a mapping of ours of `len` bytes.
    unsafe { libc::munmap(p, len) };
}

pub fn hw_mapping_protects_the_model() -> Result<()> {
    let blob = std::fs::read(format!("/lib/firmware/{}", firmware::GOOD))?;
    let hw = HwDevice::open()?;
    let info = *hw.info();
    ensure!(hw.memory().model() == &blob[..], "the device's view of the model differs from the firmware blob");
    ensure!(hw.memory().read_only_len() as u64 == info.model_region, "the library mapped the model region writable");

    let (region, pool) = (info.model_region as usize, info.pool_size);
    let (rw, ro, shared) = (libc::PROT_READ | libc::PROT_WRITE, libc::PROT_READ, libc::MAP_SHARED);
    let r = map(&hw, region, rw, shared, 0);
    ensure!(r == Err(libc::EACCES), "a writable mapping of the model: {r:?}, want EACCES");
    let r = map(&hw, 8192, rw, shared, info.model_region - 4096);
    ensure!(r == Err(libc::EACCES), "a writable mapping across the model's end: {r:?}, want EACCES");
    let r = map(&hw, 4096, ro, libc::MAP_PRIVATE, 0);
    ensure!(r == Err(libc::EINVAL), "a private mapping: {r:?}, want EINVAL");
    let r = map(&hw, 8192, ro, shared, pool - 4096);
    ensure!(r == Err(libc::EINVAL), "a mapping past the pool: {r:?}, want EINVAL");

    let p = map(&hw, region, ro, shared, 0).map_err(|e| anyhow::anyhow!("read-only mapping of the model: {}", errno_name(e)))?;
    // SAFETY: `region` readable bytes, at least the blob's.
    let seen = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), blob.len()) } == &blob[..];
    // Dropped pages fault back in from NPU memory (no SIGBUS, no zeroes).
    // SAFETY: our mapping, `region` bytes.
    let dropped = unsafe { libc::madvise(p, region, libc::MADV_DONTNEED) };
    // SAFETY: as above.
    let seen_again = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), blob.len()) } == &blob[..];
    // SAFETY: our mapping, `region` bytes.
    let r = unsafe { libc::mprotect(p, region, rw) };
    let e = std::io::Error::last_os_error().raw_os_error();
    unmap(p, region);
    ensure!(seen, "a read-only mapping at offset 0 does not show the model");
    ensure!(dropped == 0 && seen_again, "after MADV_DONTNEED ({dropped}) the mapping does not show the model again");
    ensure!(r != 0 && e == Some(libc::EACCES), "mprotect of the model writable: {r} {e:?}, want EACCES");

    let p = map(&hw, 4096, rw, shared, info.model_region)
        .map_err(|e| anyhow::anyhow!("writable mapping right after the model: {}", errno_name(e)))?;
    // Written, dropped, read back: the write went to NPU memory.
    // SAFETY: our writable mapping of 4096 bytes.
    let kept = unsafe {
        p.cast::<u8>().write_bytes(0x5a, 4096);
        libc::madvise(p, 4096, libc::MADV_DONTNEED);
        std::slice::from_raw_parts(p.cast::<u8>(), 4096).iter().all(|&b| b == 0x5a)
    };
    // SAFETY: as above.
    unsafe { p.cast::<u8>().write_bytes(0, 4096) };
    unmap(p, 4096);
    ensure!(kept, "a write to the device's mapping did not survive MADV_DONTNEED");
    Ok(())
}

/// `(user_data, res)` of `n` completions, within [`HANG`].
pub fn reap(ring: &mut IoUring, n: usize) -> Result<Vec<(u64, i32)>> {
    let mut out = Vec::new();
    let deadline = Instant::now() + HANG;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(!left.is_zero(), "{} of {n} completions after {} s: {out:?}", out.len(), HANG.as_secs());
        let ts = types::Timespec::from(left.min(Duration::from_secs(1)));
        let args = types::SubmitArgs::new().timespec(&ts);
        let _ = ring.submitter().submit_with_args(n - out.len(), &args);
        out.extend(ring.completion().map(|c| (c.user_data(), c.result())));
    }
    Ok(out)
}

fn hw_cmd(ring: &mut IoUring, hw: &HwDevice, cmd_op: u32, cmd: uapi::HwCmd, user_data: u64) -> Result<()> {
    // SAFETY: `HwCmd` is 16 bytes of integers without padding.
    let bytes = unsafe { std::mem::transmute::<uapi::HwCmd, [u8; 16]>(cmd) };
    let sqe = opcode::UringCmd16::new(types::Fd(hw.as_raw_fd()), cmd_op).cmd(bytes).build().user_data(user_data);
    // SAFETY: `addr` of the payload points at leaked memory (see the caller).
    unsafe { ring.submission().push(&sqe) }.map_err(|_| anyhow::anyhow!("submission queue full"))?;
    Ok(())
}

pub fn hw_commands_are_checked() -> Result<()> {
    let hw = HwDevice::open()?;
    let mut ring = IoUring::new(16)?;
    // The driver writes a dispatched job here while a FETCH waits, whenever
    // that is: it must outlive the ring, so it is never freed.
    let slot: &'static mut uapi::HwJob = Box::leak(Box::default());
    let addr = slot as *mut uapi::HwJob as u64;
    let cmd = |queue, tag, result| uapi::HwCmd { queue, tag, result, addr };
    let (fetch, commit) = (uapi::URING_CMD_HW_FETCH, uapi::URING_CMD_HW_COMMIT_AND_FETCH);
    const EOPNOTSUPP: i32 = libc::EOPNOTSUPP;
    let refused: [(&str, u32, uapi::HwCmd, i32); 7] = [
        ("FETCH on queue 16", fetch, cmd(16, 0, 0), libc::EINVAL),
        ("FETCH of tag 64", fetch, cmd(0, 64, 0), libc::EINVAL),
        ("FETCH with a result", fetch, cmd(0, 1, 5), libc::EINVAL),
        ("COMMIT_AND_FETCH of a slot without a job", commit, cmd(0, 2, 0), libc::EINVAL),
        ("an unknown cmd_op", uapi::ioc(uapi::IOC_READ | uapi::IOC_WRITE, uapi::IOCTL_MAGIC, 0x2f, 16), cmd(0, 3, 0), EOPNOTSUPP),
        ("an app's RUN", uapi::URING_CMD_RUN, cmd(0, 4, 0), libc::EOPNOTSUPP),
        // Sent after the valid FETCH of the same slot below.
        ("a second FETCH of a waiting slot", fetch, cmd(0, 0, 0), libc::EBUSY),
    ];
    for (i, (_, op, c, _)) in refused.iter().enumerate().take(6) {
        hw_cmd(&mut ring, &hw, *op, *c, i as u64)?;
    }
    hw_cmd(&mut ring, &hw, fetch, cmd(0, 0, 0), 100)?;
    hw_cmd(&mut ring, &hw, fetch, cmd(0, 0, 0), 6)?;
    let done = reap(&mut ring, refused.len())?;
    let mut wrong = Vec::new();
    for (user_data, res) in done {
        match refused.get(user_data as usize) {
            Some((what, _, _, want)) if res != -want => wrong.push(format!("{what}: {res}, want -{}", errno_name(*want))),
            Some(_) => {}
            None => wrong.push(format!("the valid FETCH completed with {res} though no job was submitted")),
        }
    }
    ensure!(wrong.is_empty(), "device-side commands: {}", wrong.join("; "));
    // The valid FETCH still waits and keeps the device file open until the
    // ring's teardown (a kernel worker) cancels it.
    drop(ring);
    drop(hw);
    eventually("the driver detaches the device after its ring is gone", || {
        Ok(if device_attached()? { Err("device: attached".into()) } else { Ok(()) })
    })
}
