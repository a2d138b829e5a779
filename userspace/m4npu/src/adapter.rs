use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};

use m4npu_format::adapter_meta::AdapterMeta;
use memfd::{FileSeal, MemfdOptions};
use nix::errno::Errno;

use crate::{sys, Device, Error, Result};

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
        // Failure means the handle is gone already, which leaves nothing to undo.
        let _ = sys::adapter_unload(self.dev.as_fd(), self.handle);
    }
}

fn hex(h: &[u8; 32]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

/// Loading, for [`Device::load_adapter`] and [`Device::load_adapter_fd`].
impl<'d> Adapter<'d> {
    /// `bytes` go into a sealed memfd, which the driver copies.
    pub(crate) fn load(dev: &'d Device, bytes: &[u8]) -> Result<Self> {
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
        let mut adapter = Self::load_fd(dev, memfd.as_file().as_fd(), 0, bytes.len() as u64)
            .map_err(|e| explain_adapter_error(e, bytes))?;
        if let Ok(parsed) = m4npu_format::Adapter::parse(bytes) {
            adapter.name = parsed.name();
            adapter.meta = AdapterMeta::parse(parsed.meta()).ok();
        }
        Ok(adapter)
    }

    pub(crate) fn load_fd(dev: &'d Device, fd: BorrowedFd<'_>, offset: u64, length: u64) -> Result<Self> {
        let handle = sys::adapter_load(dev.as_fd(), fd, offset, length).map_err(|e| adapter_error(dev, e, length))?;
        Ok(Adapter { dev, handle, name: format!("adapter#{handle}"), meta: None })
    }
}

fn adapter_error(dev: &Device, e: Errno, length: u64) -> Error {
    match e {
        Errno::EPERM => Error::AdapterNotSealed,
        Errno::EOPNOTSUPP => Error::AdapterNotMemfd,
        Errno::ENOEXEC => Error::InvalidAdapter("not a valid m4npu adapter blob".into()),
        Errno::EBADMSG => Error::InvalidAdapter("checksum mismatch: the adapter blob is corrupt".into()),
        Errno::ENODEV => Error::NoModel,
        Errno::EFBIG => match dev.usage() {
            Ok(u) => Error::AdapterTooLarge { size: length, quota: u.quota_bytes },
            Err(e) => e,
        },
        Errno::EMEDIUMTYPE => Error::WrongBaseModel { adapter: None, device: model_hash(dev) },
        _ => dev.alloc_error(e, length as usize, "ADAPTER_LOAD"),
    }
}

/// Fills in what the blob itself can tell about a refused load.
fn explain_adapter_error(e: Error, bytes: &[u8]) -> Error {
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

fn model_hash(dev: &Device) -> Option<[u8; 32]> {
    dev.info().ok()?.model.map(|m| m.hash)
}

pub(crate) fn describe_hash(h: &Option<[u8; 32]>) -> String {
    h.as_ref().map(hex).unwrap_or_else(|| "unknown".into())
}
