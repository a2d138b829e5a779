//! NPU memory as the device maps it: one contiguous range of addresses, so
//! device address `a` is byte `a` of the mapping.

use std::num::NonZeroUsize;
use std::ops::Range;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use m4npu::{Error, Result};
use m4npu_uapi as uapi;
use nix::sys::mman::{mmap, mmap_anonymous, munmap, MapFlags, ProtFlags};

/// All of NPU memory, mapped shared: the foundation model's pages
/// read-only (the driver refuses anything else), the rest read-write.
/// Unmapped on drop.
#[derive(Debug)]
pub struct NpuMemory {
    base: NonNull<u8>,
    len: usize,
    /// Bytes from address 0 that are mapped read-only.
    read_only: usize,
    /// Where the foundation model's blob lies.
    model: Range<usize>,
}

// SAFETY: plain shared memory owned by this value; every access goes through
// bounds-checked slices.
unsafe impl Send for NpuMemory {}
// SAFETY: `&NpuMemory` only hands out shared slices; mutable ones come from
// a `&mut HwJob`, one per dispatched job.
unsafe impl Sync for NpuMemory {}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { nix::libc::sysconf(nix::libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096)
}

fn mmap_error(source: nix::errno::Errno) -> Error {
    Error::Ioctl { op: "mmap of /dev/m4npu-hw", source }
}

impl NpuMemory {
    /// Reserves address space for the whole pool, then maps the device file
    /// over it in two parts: the model region read-only, the rest read-write.
    pub(crate) fn map(fd: BorrowedFd<'_>, info: &uapi::HwInfo) -> Result<Self> {
        let bad = |what: &str| Error::BadHwJob(format!("HW_GET_INFO reports {what}: {info:?}"));
        let len = usize::try_from(info.pool_size).map_err(|_| bad("a pool larger than the address space"))?;
        let size = NonZeroUsize::new(len).ok_or_else(|| bad("an empty pool"))?;
        let model_end = info.model_addr.checked_add(info.model_size).filter(|&e| e <= info.pool_size);
        let region_end = info.model_addr.checked_add(info.model_region).filter(|&e| e <= info.pool_size);
        let (Some(model_end), Some(region_end)) = (model_end, region_end) else {
            return Err(bad("a model outside the pool"));
        };
        let read_only = (region_end as usize).next_multiple_of(page_size()).min(len);
        // SAFETY: fresh, inaccessible address space that nothing else uses.
        let base = unsafe {
            mmap_anonymous(None, size, ProtFlags::PROT_NONE, MapFlags::MAP_PRIVATE | MapFlags::MAP_NORESERVE)
        }
        .map_err(mmap_error)?;
        // From here on, drop unmaps whatever is mapped.
        let mem = Self {
            base: base.cast(),
            len,
            read_only,
            model: info.model_addr as usize..model_end as usize,
        };
        let parts = [(0, read_only, ProtFlags::PROT_READ), (read_only, len, ProtFlags::PROT_READ | ProtFlags::PROT_WRITE)];
        for (start, end, prot) in parts {
            let Some(part) = NonZeroUsize::new(end - start) else { continue };
            let at = NonZeroUsize::new(mem.base.as_ptr() as usize + start);
            // SAFETY: replaces part of our own reservation (MAP_FIXED), which
            // no reference points into yet.
            unsafe { mmap(at, part, prot, MapFlags::MAP_SHARED | MapFlags::MAP_FIXED, fd, start as i64) }
                .map_err(mmap_error)?;
        }
        Ok(mem)
    }

    /// Bytes of NPU memory.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the pool is empty (never: the driver refuses that).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes from address 0 that are read-only (the model's whole pages).
    pub fn read_only_len(&self) -> usize {
        self.read_only
    }

    /// Where device address 0 is mapped.
    pub fn as_ptr(&self) -> *const u8 {
        self.base.as_ptr()
    }

    /// The foundation model's blob; empty without a model.
    pub fn model(&self) -> &[u8] {
        // SAFETY: checked against the pool at map time, and mapped.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(self.model.start), self.model.len()) }
    }

    /// The bytes of `range`, which must lie inside NPU memory.
    pub fn read(&self, range: uapi::HwRange) -> Result<&[u8]> {
        let r = self.span("range", range, false)?;
        // SAFETY: from `span`.
        Ok(unsafe { self.slice(r) })
    }

    /// `range` as offsets into the mapping: inside it, and in its writable
    /// part if `writable`.
    pub(crate) fn span(&self, what: &str, range: uapi::HwRange, writable: bool) -> Result<Range<usize>> {
        let end = range.addr.checked_add(range.len).filter(|&e| e <= self.len as u64).ok_or_else(|| {
            Error::BadHwJob(format!(
                "the {what} range ({} bytes at {:#x}) lies outside the {} bytes of NPU memory",
                range.len, range.addr, self.len
            ))
        })?;
        if writable && range.len > 0 && range.addr < self.read_only as u64 {
            return Err(Error::BadHwJob(format!(
                "the {what} range at {:#x} lies in the read-only foundation model (first {} bytes)",
                range.addr, self.read_only
            )));
        }
        Ok(range.addr as usize..end as usize)
    }

    /// `r`, from [`NpuMemory::span`], as a raw slice for writing.
    pub(crate) fn raw_mut(&self, r: Range<usize>) -> *mut [u8] {
        std::ptr::slice_from_raw_parts_mut(self.base.as_ptr().wrapping_add(r.start), r.len())
    }

    /// # Safety
    /// `r` must come from [`NpuMemory::span`].
    pub(crate) unsafe fn slice(&self, r: Range<usize>) -> &[u8] {
        // SAFETY: inside the mapping (span).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(r.start), r.len()) }
    }
}

impl Drop for NpuMemory {
    fn drop(&mut self) {
        // SAFETY: our own reservation, unmapped once; slices borrow `self`.
        let _ = unsafe { munmap(self.base.cast(), self.len) };
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsFd;

    use super::*;

    pub(crate) const POOL: usize = 64 * 1024;

    /// NPU memory stood in for by a memfd: a 5000-byte "model" at 0 in a
    /// two-page model region, then free memory.
    pub(crate) fn fake_pool() -> (memfd::Memfd, NpuMemory) {
        let fd = memfd::MemfdOptions::default().create("fake-npu-pool").unwrap();
        let bytes: Vec<u8> = (0..POOL).map(|i| (i % 251) as u8).collect();
        fd.as_file().write_all(&bytes).unwrap();
        let info = uapi::HwInfo { pool_size: POOL as u64, model_size: 5000, model_region: 8192, ..Default::default() };
        let mem = NpuMemory::map(fd.as_file().as_fd(), &info).unwrap();
        (fd, mem)
    }

    #[test]
    fn maps_the_pool_at_device_addresses() {
        let (fd, mem) = fake_pool();
        assert_eq!((mem.len(), mem.read_only_len()), (POOL, 8192));
        assert_eq!(mem.model().len(), 5000);
        assert!(mem.model().iter().enumerate().all(|(i, &b)| b == (i % 251) as u8));
        let r = mem.read(uapi::HwRange { addr: 60_000, len: 16 }).unwrap();
        assert_eq!(r[0], (60_000 % 251) as u8);
        // The writable part is the file's memory, shared.
        // SAFETY: a range from `span`, no other slice of it alive.
        let w = unsafe { &mut *mem.raw_mut(mem.span("test", uapi::HwRange { addr: 8192, len: 4 }, true).unwrap()) };
        w.copy_from_slice(b"abcd");
        let mut back = [0u8; 4];
        let mut f = fd.as_file();
        f.seek(std::io::SeekFrom::Start(8192)).unwrap();
        f.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"abcd");
    }

    #[test]
    fn ranges_are_checked_against_the_pool() {
        let (_fd, mem) = fake_pool();
        let r = |addr, len| uapi::HwRange { addr, len };
        assert_eq!(mem.span("x", r(0, POOL as u64), false).unwrap(), 0..POOL);
        let e = mem.span("input", r(POOL as u64 - 8, 9), false).unwrap_err().to_string();
        assert!(e.contains("input range (9 bytes at 0xfff8) lies outside"), "{e}");
        assert!(mem.span("x", r(u64::MAX, 2), false).is_err());
        assert!(mem.read(r(POOL as u64, 1)).is_err());
        let e = mem.span("output", r(8191, 1), true).unwrap_err().to_string();
        assert!(e.contains("read-only foundation model"), "{e}");
        assert!(mem.span("output", r(8192, 1), true).is_ok());
    }

    #[test]
    fn refuses_a_model_outside_the_pool() {
        let fd = memfd::MemfdOptions::default().create("fake-npu-pool").unwrap();
        fd.as_file().set_len(8192).unwrap();
        let info = uapi::HwInfo { pool_size: 8192, model_size: 8193, model_region: 12288, ..Default::default() };
        assert!(matches!(NpuMemory::map(fd.as_file().as_fd(), &info), Err(Error::BadHwJob(_))));
    }
}
