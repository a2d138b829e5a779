//! The library at the system boundary: every ioctl of `/dev/m4npu`, the
//! UAPI structs as the bytes the driver reads, the mappings of buffers,
//! and the io_uring core of the rings ([`ring`]). The library's `unsafe`
//! lives here, each with what makes it sound; the rest of the library
//! calls these safe wrappers.

use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

use m4npu_uapi as uapi;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

pub mod ring;

/// The raw ioctls, `unsafe` as nix makes them: each takes a pointer.
mod ioc {
    use super::uapi;

    nix::ioctl_read_bad!(get_info, uapi::IOC_GET_INFO, uapi::Info);
    nix::ioctl_readwrite_bad!(bo_create, uapi::IOC_BO_CREATE, uapi::BoCreate);
    nix::ioctl_write_ptr_bad!(bo_destroy, uapi::IOC_BO_DESTROY, uapi::BoDestroy);
    nix::ioctl_readwrite_bad!(adapter_load, uapi::IOC_ADAPTER_LOAD, uapi::AdapterLoad);
    nix::ioctl_write_ptr_bad!(adapter_unload, uapi::IOC_ADAPTER_UNLOAD, uapi::AdapterUnload);
    nix::ioctl_readwrite_bad!(model_meta, uapi::IOC_MODEL_META, uapi::ModelMeta);
    nix::ioctl_write_ptr_bad!(run, uapi::IOC_RUN, uapi::Job);
}

/// `GET_INFO`.
pub(crate) fn get_info(dev: BorrowedFd<'_>) -> nix::Result<uapi::Info> {
    let mut info = uapi::Info::zeroed();
    // SAFETY: `info` is a valid, writable `struct m4npu_info` for the call.
    unsafe { ioc::get_info(dev.as_raw_fd(), &mut info) }?;
    Ok(info)
}

/// `BO_CREATE` of `size` bytes: the handle and mmap offset.
pub(crate) fn bo_create(dev: BorrowedFd<'_>, size: u64) -> nix::Result<uapi::BoCreate> {
    let mut req = uapi::BoCreate { size, ..Default::default() };
    // SAFETY: `req` is a valid `struct m4npu_bo_create` for the call.
    unsafe { ioc::bo_create(dev.as_raw_fd(), &mut req) }?;
    Ok(req)
}

/// `BO_DESTROY`.
pub(crate) fn bo_destroy(dev: BorrowedFd<'_>, handle: u32) -> nix::Result<()> {
    let req = uapi::BoDestroy { handle, pad: 0 };
    // SAFETY: `req` is a valid `struct m4npu_bo_destroy`.
    unsafe { ioc::bo_destroy(dev.as_raw_fd(), &req) }.map(drop)
}

/// `ADAPTER_LOAD` of `length` bytes at `offset` of `memfd`: the handle.
pub(crate) fn adapter_load(dev: BorrowedFd<'_>, memfd: BorrowedFd<'_>, offset: u64, length: u64) -> nix::Result<u32> {
    let mut req = uapi::AdapterLoad { fd: memfd.as_raw_fd(), offset, length, ..Default::default() };
    // SAFETY: `req` is a valid `struct m4npu_adapter_load` for the call.
    unsafe { ioc::adapter_load(dev.as_raw_fd(), &mut req) }?;
    Ok(req.handle)
}

/// `ADAPTER_UNLOAD`.
pub(crate) fn adapter_unload(dev: BorrowedFd<'_>, handle: u32) -> nix::Result<()> {
    let req = uapi::AdapterUnload { handle, pad: 0 };
    // SAFETY: `req` is a valid `struct m4npu_adapter_unload`.
    unsafe { ioc::adapter_unload(dev.as_raw_fd(), &req) }.map(drop)
}

/// `MODEL_META`: the metadata's bytes, asked for again with a buffer of
/// the size the driver reports until they fit.
pub(crate) fn model_meta(dev: BorrowedFd<'_>) -> nix::Result<Vec<u8>> {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let mut req = uapi::ModelMeta { addr: buf.as_mut_ptr() as u64, size: buf.len() as u64 };
        // SAFETY: `req` names `buf`, valid for writes of `req.size` bytes.
        unsafe { ioc::model_meta(dev.as_raw_fd(), &mut req) }?;
        let size = req.size as usize;
        if size <= buf.len() {
            buf.truncate(size);
            return Ok(buf);
        }
        buf = vec![0; size];
    }
}

/// `RUN`: the job's output bytes.
pub(crate) fn run(dev: BorrowedFd<'_>, job: &uapi::Job) -> nix::Result<usize> {
    // SAFETY: `job` is a valid `struct m4npu_job`; the driver only reads it.
    let n = unsafe { ioc::run(dev.as_raw_fd(), job) }?;
    Ok(n as usize)
}

/// The descriptor as the SQE's command area carries it.
pub(crate) fn job_bytes(job: &uapi::Job) -> [u8; uapi::URING_CMD_SQE128_BYTES] {
    const _: () = assert!(size_of::<uapi::Job>() == uapi::URING_CMD_SQE128_BYTES);
    // SAFETY: `Job` is `repr(C)` integers without padding (the UAPI layout
    // test checks every offset), so all 80 bytes are initialised.
    unsafe { std::mem::transmute::<uapi::Job, [u8; uapi::URING_CMD_SQE128_BYTES]>(*job) }
}

/// A shared, read-write mapping of a buffer object, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only reads.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes at `offset` of the device file.
    pub(crate) fn shared(dev: BorrowedFd<'_>, offset: u64, len: NonZeroUsize) -> nix::Result<Self> {
        // SAFETY: maps a fresh shared view of our own BO; nothing else
        // refers to the new address range.
        let ptr = unsafe {
            mmap(None, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE, MapFlags::MAP_SHARED, dev, offset as i64)
        }?;
        Ok(Self { ptr: ptr.cast(), len: len.get() })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` bytes are mapped for as long as `self` lives; the
        // device writes only during jobs, which borrow the buffer mutably.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes, unmapped once.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}
