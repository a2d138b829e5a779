use std::num::NonZeroUsize;
use std::os::fd::AsFd;

use crate::sys::{self, Mapping};
use crate::{Device, Error, Result};

/// A buffer object in NPU memory, owned by the [`Device`]'s context and
/// mapped into this process. Freed (and zeroed by the driver) on drop.
///
/// ```no_run
/// let dev = m4npu::Device::open()?;
/// let mut buf = dev.alloc(4096)?;
/// buf.as_mut_slice()[0] = 42;
/// assert_eq!(buf.as_slice()[0], 42);
/// # Ok::<(), m4npu::Error>(())
/// ```
#[derive(Debug)]
pub struct Buffer<'d> {
    // Unmapped (dropped) before the BO is destroyed.
    map: Mapping,
    bo: Bo<'d>,
}

/// The BO's handle, destroyed on drop.
#[derive(Debug)]
struct Bo<'d> {
    dev: &'d Device,
    handle: u32,
}

impl Drop for Bo<'_> {
    fn drop(&mut self) {
        // A failure would mean the handle is already gone, which leaves
        // nothing to undo.
        let _ = sys::bo_destroy(self.dev.as_fd(), self.handle);
    }
}

impl<'d> Buffer<'d> {
    pub(crate) fn new(dev: &'d Device, len: usize) -> Result<Self> {
        let req = sys::bo_create(dev.as_fd(), len as u64).map_err(|e| dev.alloc_error(e, len, "BO_CREATE"))?;
        let map_len = NonZeroUsize::new(len).ok_or(Error::Ioctl { op: "BO_CREATE", source: nix::errno::Errno::EINVAL })?;
        let bo = Bo { dev, handle: req.handle };
        let map = Mapping::shared(dev.as_fd(), req.mmap_offset, map_len).map_err(|source| Error::Ioctl { op: "mmap", source })?;
        Ok(Self { map, bo })
    }

    /// The handle naming this buffer in jobs of the same context.
    pub fn handle(&self) -> u32 {
        self.bo.handle
    }

    /// The context this buffer belongs to.
    pub(crate) fn device(&self) -> &'d Device {
        self.bo.dev
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the buffer is empty (never: the driver refuses size 0).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The buffer's bytes, as the device left them: read a job's output
    /// here once the job has completed.
    ///
    /// ```no_run
    /// # fn f(dev: &m4npu::Device, job: &m4npu::JobDesc<'_>, output: &m4npu::Buffer<'_>) -> m4npu::Result<()> {
    /// let n = dev.run(job)?;
    /// let result = &output.as_slice()[..n];
    /// # Ok(()) }
    /// ```
    pub fn as_slice(&self) -> &[u8] {
        self.map.as_slice()
    }

    /// The buffer's bytes, for writing a job's input (or state) before the
    /// job is submitted: for the model's ops, in the `m4npu_format::job_io`
    /// layout.
    ///
    /// ```no_run
    /// use m4npu_format::job_io::Input;
    /// let dev = m4npu::Device::open()?;
    /// let ids = vec![101, 7592, 102]; // from the text encoder's tokenizer
    /// let input = Input::Tokens(ids);
    /// let mut buf = dev.alloc(input.encoded_len())?;
    /// input.encode_into(buf.as_mut_slice()).expect("sized to fit");
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.map.as_mut_slice()
    }
}
