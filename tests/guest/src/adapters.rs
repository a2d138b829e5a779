//! Adapters: loading from sealed memfds, validation, binding to the model.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use anyhow::{bail, ensure, Context, Result};
use m4npu::{uapi, Device, Error};
use m4npu_format::AdapterBuilder;

use crate::module;
use crate::raw::{errno_name, ioctl};

/// A small adapter of our own making for the loaded model.
pub fn synthetic(name: &str, base: [u8; 32]) -> Vec<u8> {
    let mut b = AdapterBuilder::new(name, base);
    b.meta(br#"{"task":"classify","labels":["neg","pos"],"lora":{"rank":4}}"#.to_vec());
    b.tensor("lora.0.q.a", uapi::FW_DTYPE_F32, &[64, 4], vec![1; 64 * 4 * 4]).expect("tensor");
    b.tensor("head.weight", uapi::FW_DTYPE_F32, &[64, 2], vec![2; 64 * 2 * 4]).expect("tensor");
    b.build().expect("adapter")
}

fn model_hash(dev: &Device) -> Result<[u8; 32]> {
    Ok(dev.info()?.model.context("no model loaded")?.hash)
}

pub(crate) fn memfd(bytes: &[u8], seals: i32) -> Result<OwnedFd> {
    let name = CString::new("test-adapter")?;
    // SAFETY: a plain memfd_create call with a valid name.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC) };
    ensure!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::File::from(fd.try_clone()?).write_all(bytes)?;
    if seals != 0 {
        // SAFETY: fcntl on our own fd.
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) };
        ensure!(r == 0, "F_ADD_SEALS: {}", std::io::Error::last_os_error());
    }
    Ok(fd)
}

pub(crate) const SEALS: i32 = libc::F_SEAL_WRITE | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;

fn load_raw(dev: &Device, fd: i32, offset: u64, length: u64) -> Result<u32, i32> {
    let mut req = uapi::AdapterLoad { fd, offset, length, ..Default::default() };
    ioctl(dev, uapi::IOC_ADAPTER_LOAD, &mut req as *mut _ as usize).map(|_| req.handle)
}

fn unload_raw(dev: &Device, handle: u32) -> Result<i32, i32> {
    let req = uapi::AdapterUnload { handle, pad: 0 };
    ioctl(dev, uapi::IOC_ADAPTER_UNLOAD, &req as *const _ as usize)
}

fn expect(what: &str, got: Result<u32, i32>, want: i32) -> Result<()> {
    match got {
        Err(e) if e == want => Ok(()),
        other => bail!("ADAPTER_LOAD {what}: got {other:?}, want {}", errno_name(want)),
    }
}

pub fn adapter_loads_from_sealed_memfd() -> Result<()> {
    let dev = Device::open()?;
    let blob = synthetic("sentiment", model_hash(&dev)?);
    let before = dev.usage()?.memory_bytes;
    {
        let a = dev.load_adapter(&blob)?;
        ensure!(a.name() == "sentiment", "name {:?}", a.name());
        let u = dev.usage()?;
        ensure!(u.adapters == 1, "fdinfo: {u:?}");
        ensure!(u.memory_bytes == before + blob.len().div_ceil(4096) as u64 * 4096, "adapter not charged: {u:?}");
        // Adapters are not buffers: their handle names no BO.
        let bo_like = uapi::BoDestroy { handle: a.handle(), pad: 0 };
        let r = ioctl(&dev, uapi::IOC_BO_DESTROY, &bo_like as *const _ as usize);
        ensure!(r == Err(libc::ENOENT) && dev.usage()?.adapters == 1, "BO_DESTROY reached an adapter: {r:?}");
    }
    let u = dev.usage()?;
    ensure!(u.adapters == 0 && u.memory_bytes == before, "unload did not free the adapter: {u:?}");
    // The same blob from a raw memfd, at an offset.
    let mut padded = vec![0u8; 4096];
    padded.extend_from_slice(&blob);
    let fd = memfd(&padded, SEALS)?;
    let h = load_raw(&dev, fd.as_raw_fd(), 4096, blob.len() as u64).map_err(|e| anyhow::anyhow!(errno_name(e)))?;
    let bad_pad = uapi::AdapterUnload { handle: h, pad: 1 };
    let r = ioctl(&dev, uapi::IOC_ADAPTER_UNLOAD, &bad_pad as *const _ as usize);
    ensure!(r == Err(libc::EINVAL), "ADAPTER_UNLOAD with pad != 0: {r:?}, want EINVAL");
    ensure!(unload_raw(&dev, h) == Ok(0));
    ensure!(unload_raw(&dev, h) == Err(libc::ENOENT), "second unload not ENOENT");
    Ok(())
}

pub fn bad_adapters_are_refused() -> Result<()> {
    let dev = Device::open()?;
    let hash = model_hash(&dev)?;
    let blob = synthetic("bad", hash);
    let len = blob.len() as u64;
    let sealed = memfd(&blob, SEALS)?;
    let s = sealed.as_raw_fd();

    expect("fd -1", load_raw(&dev, -1, 0, len), libc::EBADF)?;
    expect("closed fd", load_raw(&dev, 9999, 0, len), libc::EBADF)?;
    let mut p = [0i32; 2];
    // SAFETY: pipe() into a two-element array.
    ensure!(unsafe { libc::pipe(p.as_mut_ptr()) } == 0);
    // SAFETY: both fds are ours.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(p[0]), OwnedFd::from_raw_fd(p[1])) };
    expect("pipe", load_raw(&dev, r.as_raw_fd(), 0, len), libc::EOPNOTSUPP)?;
    drop((r, w));
    let proc_file = std::fs::File::open("/proc/self/status")?;
    expect("procfs file", load_raw(&dev, proc_file.as_raw_fd(), 0, 16), libc::EOPNOTSUPP)?;
    let unsealed = memfd(&blob, 0)?;
    expect("unsealed memfd", load_raw(&dev, unsealed.as_raw_fd(), 0, len), libc::EPERM)?;
    let no_write_seal = memfd(&blob, libc::F_SEAL_SHRINK | libc::F_SEAL_GROW)?;
    expect("memfd without F_SEAL_WRITE", load_raw(&dev, no_write_seal.as_raw_fd(), 0, len), libc::EPERM)?;
    std::fs::write("/tmp/adapter.m4a", &blob)?;
    let tmpfs_file = std::fs::File::open("/tmp/adapter.m4a")?;
    expect("tmpfs file", load_raw(&dev, tmpfs_file.as_raw_fd(), 0, len), libc::EPERM)?;

    let mut req = uapi::AdapterLoad { fd: s, length: len, flags: 1, ..Default::default() };
    expect("flags", ioctl(&dev, uapi::IOC_ADAPTER_LOAD, &mut req as *mut _ as usize).map(|_| 0), libc::EINVAL)?;
    let mut req = uapi::AdapterLoad { fd: s, length: len, pad: 1, ..Default::default() };
    expect("pad", ioctl(&dev, uapi::IOC_ADAPTER_LOAD, &mut req as *mut _ as usize).map(|_| 0), libc::EINVAL)?;
    expect("length 0", load_raw(&dev, s, 0, 0), libc::EINVAL)?;
    expect("past the end", load_raw(&dev, s, 1, len), libc::EINVAL)?;
    expect("offset overflow", load_raw(&dev, s, u64::MAX, 2), libc::EINVAL)?;
    expect("truncated", load_raw(&dev, s, 0, len - 100), libc::ENOEXEC)?;
    let garbage = memfd(&[0x5a; 8192], SEALS)?;
    expect("garbage", load_raw(&dev, garbage.as_raw_fd(), 0, 8192), libc::ENOEXEC)?;
    let mut corrupt = blob.clone();
    *corrupt.last_mut().unwrap() ^= 1;
    let corrupt = memfd(&corrupt, SEALS)?;
    expect("corrupt data", load_raw(&dev, corrupt.as_raw_fd(), 0, len), libc::EBADMSG)?;
    // Two tensors of one name: structure is checked before the hash, so
    // ENOEXEC (not EBADMSG for the stale hash) says the names were.
    let mut dup = blob.clone();
    let at = dup.windows(12).position(|w| w == b"head.weight\0").context("no head.weight entry")?;
    dup[at..at + 12].copy_from_slice(b"lora.0.q.a\0\0");
    let dup = memfd(&dup, SEALS)?;
    expect("two tensors of one name", load_raw(&dev, dup.as_raw_fd(), 0, len), libc::ENOEXEC)?;
    // A table of more tensors than any blob may have, with room for it.
    let count = uapi::FW_MAX_TENSORS + 1;
    let mut many = blob.clone();
    many.resize(blob.len() + count as usize * std::mem::size_of::<uapi::FwTensor>(), 0);
    let field = |at: usize, v: &[u8], b: &mut Vec<u8>| b[at..at + v.len()].copy_from_slice(v);
    field(std::mem::offset_of!(uapi::AdapterHeader, total_size), &(many.len() as u64).to_le_bytes(), &mut many);
    field(std::mem::offset_of!(uapi::AdapterHeader, tensor_count), &count.to_le_bytes(), &mut many);
    let many_fd = memfd(&many, SEALS)?;
    expect("too many tensors", load_raw(&dev, many_fd.as_raw_fd(), 0, many.len() as u64), libc::ENOEXEC)?;
    let mut other = hash;
    other[0] ^= 0xff;
    let foreign = synthetic("other-model", other);
    let foreign_fd = memfd(&foreign, SEALS)?;
    expect("another base model", load_raw(&dev, foreign_fd.as_raw_fd(), 0, foreign.len() as u64), libc::EMEDIUMTYPE)?;
    // A sparse memfd larger than the quota.
    let big = memfd(&[], 0)?;
    let quota = dev.usage()?.quota_bytes;
    // SAFETY: ftruncate and fcntl on our own fd.
    unsafe {
        ensure!(libc::ftruncate(big.as_raw_fd(), (quota + 4096) as i64) == 0);
        ensure!(libc::fcntl(big.as_raw_fd(), libc::F_ADD_SEALS, SEALS) == 0);
    }
    expect("larger than the quota", load_raw(&dev, big.as_raw_fd(), 0, quota + 4096), libc::EFBIG)?;
    ensure!(dev.usage()?.memory_bytes == 0 && dev.usage()?.adapters == 0, "a refused load left memory behind");

    // The library words these for the developer.
    match dev.load_adapter(&foreign) {
        Err(e @ Error::WrongBaseModel { .. }) => {
            let msg = e.to_string();
            let hex = |h: &[u8; 32]| h.iter().map(|b| format!("{b:02x}")).collect::<String>();
            ensure!(msg.contains(&hex(&other)) && msg.contains(&hex(&hash)), "message lacks the hashes: {msg}");
        }
        other => bail!("library load of a foreign adapter: {other:?}"),
    }
    match dev.load_adapter_fd(std::os::fd::AsFd::as_fd(&unsealed), 0, len) {
        Err(Error::AdapterNotSealed) => {}
        other => bail!("library load from an unsealed memfd: {other:?}"),
    }
    Ok(())
}

pub fn adapter_needs_a_model() -> Result<()> {
    let blob = synthetic("orphan", [0; 32]);
    module::reload(module::NO_FIRMWARE)?;
    let dev = Device::open()?;
    let fd = memfd(&blob, SEALS)?;
    let r = load_raw(&dev, fd.as_raw_fd(), 0, blob.len() as u64);
    match dev.load_adapter(&blob) {
        Err(Error::NoModel) => {}
        other => bail!("library load without a model: {other:?}"),
    }
    drop(dev);
    crate::firmware::reload_good_firmware()?;
    expect("no model loaded", r, libc::ENODEV)
}

/// From a context that is not the owner's: none of the handles unload.
pub fn probe_foreign_adapters(dev: &Device, foreign: &[u32]) -> Result<()> {
    for &h in foreign.iter().chain(&[0, 1, 2, 3, u32::MAX]) {
        match unload_raw(dev, h) {
            Err(libc::ENOENT) => {}
            other => bail!("ADAPTER_UNLOAD of foreign handle {h}: {other:?}, want ENOENT"),
        }
    }
    Ok(())
}

pub fn adapters_are_isolated() -> Result<()> {
    let a = Device::open()?;
    let hash = model_hash(&a)?;
    let blob = synthetic("mine", hash);
    let loaded: Vec<_> = (0..3).map(|_| a.load_adapter(&blob)).collect::<Result<_, _>>()?;
    let handles: Vec<u32> = loaded.iter().map(|x| x.handle()).collect();
    probe_foreign_adapters(&Device::open()?, &handles)?;
    let arg = handles.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
    let out = std::process::Command::new("/proc/self/exe").args(["--probe-foreign-adapters", &arg]).output()?;
    ensure!(out.status.success(), "another process reached A's adapters: {}", String::from_utf8_lossy(&out.stdout));
    ensure!(a.usage()?.adapters == 3, "A lost adapters to the probes");
    Ok(())
}
