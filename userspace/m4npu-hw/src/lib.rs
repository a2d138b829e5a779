//! The device side of the driver, `/dev/m4npu-hw`: for the one process that
//! executes jobs (the virtual NPU daemon, test devices).
//!
//! The device maps all of NPU memory ([`NpuMemory`]: device address `a` is
//! byte `a` of the mapping, the foundation model read-only) and takes jobs
//! from the driver through [`HwQueue`]s, ublk-style: every slot (tag) of a
//! queue waits with a FETCH command, the driver answers it with a job, and
//! the device returns the result with COMMIT_AND_FETCH, which makes the
//! slot wait again.
//!
//! What both ends share comes from the app library: its [`Error`] (the
//! device side's variants among them), [`Op`](m4npu::Op), and the io_uring
//! core its rings use too.
//!
//! ```no_run
//! use m4npu_hw::HwDevice;
//! let dev = HwDevice::open()?;
//! let mut queue = dev.queue(0, 16)?;
//! loop {
//!     for mut job in queue.fetch()? {
//!         let b = job.buffers()?;
//!         let n = b.input.len().min(b.output.len());
//!         b.output[..n].copy_from_slice(&b.input[..n]);
//!         queue.commit(job, Ok(n))?;
//!     }
//! }
//! # Ok::<(), m4npu::Error>(())
//! ```

mod batch;
mod memory;
mod queue;
mod sys;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use io_uring::squeue;
use m4npu::ring_core::CmdRing;
use m4npu::{Error, Result};
use m4npu_uapi as uapi;
use nix::errno::Errno;

pub use batch::HwBatchQueue;
pub use memory::NpuMemory;
pub use queue::{HwJob, HwQueue, JobBuffers};
pub use uapi::HwFlags;

/// What a device commits for a job: output bytes, or `-errno`.
fn result_code(result: std::result::Result<usize, Errno>) -> i32 {
    match result {
        Ok(n) => i32::try_from(n).unwrap_or(i32::MAX),
        Err(e) => -(e as i32),
    }
}

/// `io_uring_enter` on a device queue's ring: submits, waits for `want`
/// completions; an interrupted or busy enter is no error (the caller
/// loops).
fn enter_ring(ring: &CmdRing<squeue::Entry>, want: usize) -> Result<()> {
    ring.enter(want, None).map_err(|source| Error::Io { what: "io_uring_enter on the device queue", source })
}

/// The open device side: at most one per machine at a time. Closing it (or
/// the process's exit) ends the session at once: every job still queued or
/// held fails with `EIO` for its app, or with [`HwFlags::RECOVERY`] waits
/// for the next device.
#[derive(Debug)]
pub struct HwDevice {
    mem: NpuMemory,
    info: uapi::HwInfo,
    fd: OwnedFd,
}

impl HwDevice {
    /// Default device node.
    pub fn default_path() -> PathBuf {
        Path::new("/dev").join(uapi::HW_DEVICE_NAME)
    }

    /// Opens `/dev/m4npu-hw` and maps NPU memory.
    ///
    /// ```no_run
    /// let dev = m4npu_hw::HwDevice::open()?;
    /// let info = dev.info();
    /// println!("{} bytes of NPU memory, the model's {} at {:#x}", info.pool_size, info.model_size, info.model_addr);
    /// assert_eq!(dev.memory().model().len() as u64, info.model_size);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn open() -> Result<Self> {
        Self::open_path(Self::default_path())
    }

    /// Opens the device side at `path`, checks the UAPI and maps NPU memory.
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path).map_err(|e| Error::Open {
            path: path.to_owned(),
            source: Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO)),
        })?;
        let fd = OwnedFd::from(file);
        let info = sys::get_info(fd.as_fd()).map_err(|source| Error::Ioctl { op: "HW_GET_INFO", source })?;
        if info.uapi_version >> 16 != uapi::UAPI_VERSION >> 16 {
            return Err(Error::UapiMismatch { driver: info.uapi_version, library: uapi::UAPI_VERSION });
        }
        let mem = NpuMemory::map(fd.as_fd(), &info)?;
        Ok(Self { mem, info, fd })
    }

    /// Sets the session's flags (none at open). With [`HwFlags::RECOVERY`],
    /// jobs this device holds when it dies go to the next device that
    /// attaches within the driver's recovery window, so they must be safe
    /// to run twice; clear it before a clean stop, so that waiting jobs
    /// fail at once.
    ///
    /// ```no_run
    /// use m4npu_hw::{HwDevice, HwFlags};
    /// let dev = HwDevice::open()?;
    /// dev.set_flags(HwFlags::RECOVERY)?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn set_flags(&self, flags: HwFlags) -> Result<()> {
        sys::set_flags(self.fd.as_fd(), flags.bits()).map_err(|source| Error::Ioctl { op: "HW_SET_FLAGS", source })
    }

    /// NPU memory and queue limits as the driver reports them.
    pub fn info(&self) -> &uapi::HwInfo {
        &self.info
    }

    /// All of NPU memory, mapped.
    pub fn memory(&self) -> &NpuMemory {
        &self.mem
    }

    /// Queue `id` with slots (tags) `0..depth`, each already waiting for a
    /// job when this returns. See [`HwQueue`].
    pub fn queue(&self, id: u16, depth: u16) -> Result<HwQueue<'_>> {
        HwQueue::new(self, id, depth)
    }

    /// Queue `id` served in batches, up to `depth` jobs held at once: one
    /// command fetches every job waiting, one returns many results. See
    /// [`HwBatchQueue`]. Slots of the queue that a [`HwQueue`] uses are
    /// left to it.
    pub fn batch_queue(&self, id: u16, depth: u16) -> Result<HwBatchQueue<'_>> {
        HwBatchQueue::new(self, id, depth)
    }
}

impl AsFd for HwDevice {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for HwDevice {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }
}
