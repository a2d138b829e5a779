use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use m4npu_uapi as uapi;

use crate::fdinfo::FdInfo;
use crate::{Buffer, Error, Result};

nix::ioctl_read_bad!(ioc_get_info, uapi::IOC_GET_INFO, uapi::Info);
nix::ioctl_readwrite_bad!(ioc_bo_create, uapi::IOC_BO_CREATE, uapi::BoCreate);
nix::ioctl_write_ptr_bad!(ioc_bo_destroy, uapi::IOC_BO_DESTROY, uapi::BoDestroy);
nix::ioctl_readwrite_bad!(ioc_adapter_load, uapi::IOC_ADAPTER_LOAD, uapi::AdapterLoad);
nix::ioctl_write_ptr_bad!(ioc_adapter_unload, uapi::IOC_ADAPTER_UNLOAD, uapi::AdapterUnload);

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
        let mut info = uapi::Info::zeroed();
        // SAFETY: `info` is a valid, writable `struct m4npu_info` for the call.
        unsafe { ioc_get_info(self.fd.as_raw_fd(), &mut info) }
            .map_err(|source| Error::Ioctl { op: "GET_INFO", source })?;
        Ok(info)
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
}

impl Device {
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
