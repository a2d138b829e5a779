use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;

use m4npu_format::adapter_meta::AdapterMeta;
use m4npu_uapi as uapi;
use memfd::{FileSeal, MemfdOptions};
use nix::errno::Errno;

use crate::device::{ioc_adapter_load, ioc_adapter_unload};
use crate::{Device, Error, Result};

/// An adapter loaded into the [`Device`]'s context: the app's fine-tuned
/// LoRA, task head and input projection for the shared foundation model.
/// Unloaded on drop.
///
/// ```no_run
/// let dev = m4npu::Device::open()?;
/// let adapter = dev.load_adapter_file("sentiment.m4a")?;
/// println!("loaded {} as handle {}", adapter.name(), adapter.handle());
/// # Ok::<(), m4npu::Error>(())
/// ```
#[derive(Debug)]
pub struct Adapter<'d> {
    dev: &'d Device,
    handle: u32,
    name: String,
    meta: Option<AdapterMeta>,
}

impl<'d> Adapter<'d> {
    /// The context this adapter is loaded in.
    pub(crate) fn device(&self) -> &'d Device {
        self.dev
    }

    /// The handle naming this adapter in jobs of the same context (what
    /// [`JobDesc::adapter`](crate::JobDesc::adapter) puts in the descriptor).
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The name packed into the adapter's blob, or `adapter#<handle>` when
    /// it was loaded with [`Device::load_adapter_fd`], which does not read
    /// the blob.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// What the adapter does (task, sub-model, labels, input), when it was
    /// loaded from bytes this library could read ([`Device::load_adapter`],
    /// [`Device::load_adapter_file`]; not [`Device::load_adapter_fd`]).
    ///
    /// ```no_run
    /// use m4npu::AdapterTask;
    /// let dev = m4npu::Device::open()?;
    /// let adapter = dev.load_adapter_file("digits.m4a")?;
    /// if let Some(meta) = adapter.meta() {
    ///     assert_eq!(meta.task, AdapterTask::Classify);
    ///     println!("labels {:?}, feature vectors of {:?}", meta.labels, meta.feature_dim);
    /// }
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn meta(&self) -> Option<&AdapterMeta> {
        self.meta.as_ref()
    }

    /// The metadata, or an error naming what needs it.
    pub(crate) fn require_meta(&self, what: &str) -> Result<&AdapterMeta> {
        self.meta.as_ref().ok_or_else(|| {
            Error::InvalidAdapter(format!("{what} needs the adapter's metadata; load it with Device::load_adapter"))
        })
    }
}

impl Drop for Adapter<'_> {
    fn drop(&mut self) {
        let req = uapi::AdapterUnload { handle: self.handle, pad: 0 };
        // SAFETY: `req` is a valid `struct m4npu_adapter_unload`; failure
        // means the handle is gone already, which leaves nothing to undo.
        let _ = unsafe { ioc_adapter_unload(self.dev.as_raw_fd(), &req) };
    }
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

impl Device {
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
        let io = |e: std::io::Error| Error::Io { what: "preparing the adapter memfd", source: e };
        let memfd = MemfdOptions::default()
            .allow_sealing(true)
            .close_on_exec(true)
            .create("m4npu-adapter")
            .map_err(|e| io(std::io::Error::other(e)))?;
        memfd.as_file().write_all(bytes).map_err(io)?;
        memfd
            .add_seals(&[FileSeal::SealShrink, FileSeal::SealGrow, FileSeal::SealWrite])
            .map_err(|e| io(std::io::Error::other(e)))?;
        let mut adapter = self
            .load_adapter_fd(memfd.as_file().as_fd(), 0, bytes.len() as u64)
            .map_err(|e| self.explain_adapter_error(e, bytes))?;
        if let Ok(parsed) = m4npu_format::Adapter::parse(bytes) {
            adapter.name = parsed.name();
            adapter.meta = AdapterMeta::parse(parsed.meta()).ok();
        }
        Ok(adapter)
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
        let mut req = uapi::AdapterLoad { fd: fd.as_raw_fd(), offset, length, ..Default::default() };
        // SAFETY: `req` is a valid `struct m4npu_adapter_load` for the call.
        unsafe { ioc_adapter_load(self.as_raw_fd(), &mut req) }.map_err(|e| self.adapter_error(e, length))?;
        Ok(Adapter { dev: self, handle: req.handle, name: format!("adapter#{}", req.handle), meta: None })
    }

    fn adapter_error(&self, e: Errno, length: u64) -> Error {
        match e {
            Errno::EPERM => Error::AdapterNotSealed,
            Errno::EOPNOTSUPP => Error::AdapterNotMemfd,
            Errno::ENOEXEC => Error::InvalidAdapter("not a valid m4npu adapter blob".into()),
            Errno::EBADMSG => Error::InvalidAdapter("checksum mismatch: the adapter blob is corrupt".into()),
            Errno::ENODEV => Error::NoModel,
            Errno::EFBIG => match self.usage() {
                Ok(u) => Error::AdapterTooLarge { size: length, quota: u.quota_bytes },
                Err(e) => e,
            },
            Errno::EMEDIUMTYPE => Error::WrongBaseModel { adapter: None, device: self.model_hash() },
            _ => self.alloc_error(e, length as usize, "ADAPTER_LOAD"),
        }
    }

    /// Fills in what the blob itself can tell about a refused load.
    fn explain_adapter_error(&self, e: Error, bytes: &[u8]) -> Error {
        match e {
            Error::WrongBaseModel { device, .. } => {
                Error::WrongBaseModel { adapter: m4npu_format::adapter_base_model_hash(bytes), device }
            }
            Error::InvalidAdapter(_) => match m4npu_format::Adapter::parse(bytes) {
                Err(why) => Error::InvalidAdapter(why.to_string()),
                Ok(_) => e,
            },
            e => e,
        }
    }

    fn model_hash(&self) -> Option<[u8; 32]> {
        self.info().ok()?.model.map(|m| m.hash)
    }
}

pub(crate) fn describe_hash(h: &Option<[u8; 32]>) -> String {
    h.as_ref().map(hex).unwrap_or_else(|| "unknown".into())
}
