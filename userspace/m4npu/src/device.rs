use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use m4npu_uapi as uapi;

#[cfg(feature = "tokio")]
use crate::aio::AsyncRing;
use crate::error::job_error;
use crate::fdinfo::FdInfo;
use crate::model::ModelMeta;
use crate::uring::Ring;
use crate::{sys, Adapter, Buffer, Error, JobDesc, Result};

/// One open of the m4npu device: an isolated context in the driver.
///
/// ```no_run
/// let (a, b) = (m4npu::Device::open()?, m4npu::Device::open()?);
/// // Two opens, two contexts: neither sees the other's buffers or adapters.
/// assert_ne!(a.info()?.context_id, b.info()?.context_id);
/// # Ok::<(), m4npu::Error>(())
/// ```
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    /// The model's metadata, read once: the firmware cannot change while
    /// the device is open (an open file pins the module).
    pub(crate) meta: std::sync::OnceLock<crate::model::ModelMeta>,
}

/// The foundation model pinned by the driver ([`DeviceInfo::model`]).
///
/// ```no_run
/// match m4npu::Device::open()?.info()?.model {
///     Some(m) => println!("{}: {} bytes, SHA-256 {:02x?}", m.name, m.size, &m.hash[..4]),
///     None => println!("no foundation model loaded"),
/// }
/// # Ok::<(), m4npu::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelInfo {
    /// Name of the foundation model.
    pub name: String,
    /// Bytes of the pinned model.
    pub size: u64,
    /// SHA-256 content hash of the model, which adapters are bound to.
    pub hash: [u8; 32],
}

/// What [`Device::info`] reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// The driver's UAPI version (major in the high 16 bits).
    pub uapi_version: u32,
    pub driver_version: String,
    /// Unique per open for the module's lifetime.
    pub context_id: u64,
    /// Bytes of NPU memory (module parameter `pool_mb`).
    pub pool_size: u64,
    /// Bytes of NPU memory in use, the firmware's included.
    pub pool_used: u64,
    /// The pinned foundation model, if one is loaded.
    pub model: Option<ModelInfo>,
}

impl Device {
    /// Default device node, `/dev/m4npu`.
    ///
    /// ```
    /// assert_eq!(m4npu::Device::default_path(), std::path::Path::new("/dev/m4npu"));
    /// ```
    pub fn default_path() -> PathBuf {
        Path::new("/dev").join(uapi::DEVICE_NAME)
    }

    /// Opens `/dev/m4npu`, creating a fresh context.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn open() -> Result<Self> {
        Self::open_path(Self::default_path())
    }

    /// Opens the device at `path` and checks that the driver speaks our UAPI.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open_path("/dev/m4npu")?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn open_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::Open { path: path.to_owned(), source: errno_of(&e) })?;
        let dev = Self { fd: file.into(), meta: Default::default() };
        let info = dev.raw_info()?;
        if info.uapi_version >> 16 != uapi::UAPI_VERSION >> 16 {
            return Err(Error::UapiMismatch { driver: info.uapi_version, library: uapi::UAPI_VERSION });
        }
        Ok(dev)
    }

    /// A `Device` over any file, for host tests of code that only needs
    /// the file (io_uring plumbing).
    #[cfg(test)]
    pub(crate) fn from_fd_for_tests(fd: OwnedFd) -> Self {
        Self { fd, meta: Default::default() }
    }

    fn raw_info(&self) -> Result<uapi::Info> {
        sys::get_info(self.as_fd()).map_err(|source| Error::Ioctl { op: "GET_INFO", source })
    }

    /// Driver, firmware and context information.
    ///
    /// ```no_run
    /// let info = m4npu::Device::open()?.info()?;
    /// assert_ne!(info.context_id, 0);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn info(&self) -> Result<DeviceInfo> {
        let raw = self.raw_info()?;
        let model = (raw.flags & uapi::INFO_MODEL_LOADED != 0).then(|| ModelInfo {
            name: c_string(&raw.model_name),
            size: raw.model_size,
            hash: raw.model_hash,
        });
        Ok(DeviceInfo {
            uapi_version: raw.uapi_version,
            driver_version: c_string(&raw.driver_version),
            context_id: raw.context_id,
            pool_size: raw.pool_size,
            pool_used: raw.pool_used,
            model,
        })
    }

    /// Allocates a zeroed buffer of `len` bytes in this context's NPU memory.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let buf = dev.alloc(1 << 20)?;
    /// assert!(buf.as_slice().iter().all(|&b| b == 0));
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn alloc(&self, len: usize) -> Result<Buffer<'_>> {
        Buffer::new(self, len)
    }

    /// This context's usage as the driver reports it in fdinfo.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let _buf = dev.alloc(1 << 20)?;
    /// let u = dev.usage()?;
    /// println!("{} of {} bytes in {} buffers", u.memory_bytes, u.quota_bytes, u.buffers);
    /// println!("{} jobs done, {} ns of NPU time", u.jobs_completed, u.engine_ns);
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn usage(&self) -> Result<FdInfo> {
        FdInfo::read(self.fd.as_raw_fd())
    }

    /// The pinned model's metadata, read from the driver on first use (and
    /// then kept: the firmware cannot change while the device is open).
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let meta = dev.model_meta()?;
    /// println!("sub-models: {:?}", meta.sub_models());
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn model_meta(&self) -> Result<&ModelMeta> {
        if let Some(m) = self.meta.get() {
            return Ok(m);
        }
        let m = ModelMeta::read(self)?;
        Ok(self.meta.get_or_init(|| m))
    }

    /// Loads an adapter from `bytes`: they go into a sealed memfd, which the
    /// driver copies into this context's NPU memory.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let bytes = std::fs::read("digits.m4a").unwrap();
    /// let adapter = dev.load_adapter(&bytes)?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn load_adapter(&self, bytes: &[u8]) -> Result<Adapter<'_>> {
        Adapter::load(self, bytes)
    }

    /// Loads an adapter file (`.m4a`).
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let adapter = dev.load_adapter_file("imu.m4a")?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn load_adapter_file(&self, path: impl AsRef<Path>) -> Result<Adapter<'_>> {
        let bytes = std::fs::read(path.as_ref()).map_err(|e| Error::Io { what: "reading the adapter file", source: e })?;
        self.load_adapter(&bytes)
    }

    /// Loads `length` bytes at `offset` of a memfd the caller has sealed with
    /// `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`.
    ///
    /// ```no_run
    /// # fn f(dev: &m4npu::Device, fd: std::os::fd::BorrowedFd<'_>) -> m4npu::Result<()> {
    /// let adapter = dev.load_adapter_fd(fd, 0, 4096)?;
    /// # Ok(()) }
    /// ```
    pub fn load_adapter_fd(&self, fd: BorrowedFd<'_>, offset: u64, length: u64) -> Result<Adapter<'_>> {
        Adapter::load_fd(self, fd, offset, length)
    }

    /// Runs `job` and waits for it; returns the number of output bytes.
    ///
    /// A signal interrupting the wait ends it with [`Error::Interrupted`]
    /// and the result is lost (the job is not retried: it may have run).
    ///
    /// ```no_run
    /// use m4npu::{Device, Error, JobDesc, Op};
    /// let dev = Device::open()?;
    /// let mut input = dev.alloc(4096)?;
    /// input.as_mut_slice()[..2].copy_from_slice(b"hi");
    /// let output = dev.alloc(4096)?;
    /// match dev.run(&JobDesc::new(Op::Echo).input(&input, 0, 2).output(&output, 0, 4096)) {
    ///     Ok(n) => assert_eq!(&output.as_slice()[..n], b"hi"),
    ///     Err(Error::NoNpuDevice) => eprintln!("nothing serves jobs: start vnpud"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn run(&self, job: &JobDesc<'_>) -> Result<usize> {
        job.check_for(self)?;
        self.run_raw(job.as_raw())
    }

    /// Runs a raw descriptor as is, without the library's checks (the
    /// driver checks it): for tools and tests of the driver itself.
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let r = dev.run_raw(&m4npu::uapi::Job::default());
    /// assert_eq!(r.unwrap_err().errno(), Some(m4npu::Errno::EOPNOTSUPP));
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn run_raw(&self, job: &uapi::Job) -> Result<usize> {
        sys::run(self.as_fd(), job).map_err(job_error)
    }

    /// An io_uring for this context's jobs; see [`Ring::new`].
    ///
    /// ```no_run
    /// let dev = m4npu::Device::open()?;
    /// let ring = dev.ring(64)?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn ring(&self, entries: u32) -> Result<Ring<'_>> {
        Ring::new(self, entries)
    }

    #[cfg(feature = "tokio")]
    /// An async ring for this context's jobs, on the current tokio runtime;
    /// see [`AsyncRing::new`].
    ///
    /// ```no_run
    /// tokio_uring::start(async {
    ///     let dev = m4npu::Device::open()?;
    ///     let ring = dev.async_ring(64)?;
    ///     Ok::<(), m4npu::Error>(())
    /// })?;
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn async_ring(&self, entries: u32) -> Result<AsyncRing<'_>> {
        AsyncRing::new(self, entries)
    }

    pub(crate) fn alloc_error(&self, e: nix::errno::Errno, len: usize, op: &'static str) -> Error {
        match e {
            nix::errno::Errno::EDQUOT => match self.usage() {
                Ok(u) => Error::QuotaExceeded { requested: len as u64, used: u.memory_bytes, quota: u.quota_bytes },
                Err(e) => e,
            },
            nix::errno::Errno::ENOSPC => Error::NpuMemoryFull { requested: len as u64 },
            source => Error::Ioctl { op, source },
        }
    }
}

impl AsFd for Device {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Device {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn errno_of(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(nix::libc::EIO))
}

fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
