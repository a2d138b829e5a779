use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use m4npu_uapi as uapi;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};

use crate::device::{ioc_bo_create, ioc_bo_destroy};
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
    dev: &'d Device,
    handle: u32,
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory owned by this value.
unsafe impl Send for Buffer<'_> {}
// SAFETY: `&Buffer` only reads.
unsafe impl Sync for Buffer<'_> {}

impl<'d> Buffer<'d> {
    pub(crate) fn new(dev: &'d Device, len: usize) -> Result<Self> {
        let mut req = uapi::BoCreate { size: len as u64, ..Default::default() };
        // SAFETY: `req` is a valid `struct m4npu_bo_create` for the call.
        if let Err(e) = unsafe { ioc_bo_create(dev.as_raw_fd(), &mut req) } {
            return Err(dev.alloc_error(e, len, "BO_CREATE"));
        }
        let map_len = NonZeroUsize::new(len).ok_or(Error::Ioctl { op: "BO_CREATE", source: nix::errno::Errno::EINVAL })?;
        // SAFETY: maps a fresh shared view of our own BO; nothing else
        // refers to the new address range.
        let ptr = unsafe {
            mmap(
                None,
                map_len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                dev,
                req.mmap_offset as i64,
            )
        };
        match ptr {
            Ok(p) => Ok(Self { dev, handle: req.handle, ptr: p.cast(), len }),
            Err(source) => {
                destroy(dev, req.handle);
                Err(Error::Ioctl { op: "mmap", source })
            }
        }
    }

    /// The handle naming this buffer in jobs of the same context.
    pub fn handle(&self) -> u32 {
        self.handle
    }

    /// The context this buffer belongs to.
    pub(crate) fn device(&self) -> &'d Device {
        self.dev
    }

    /// Bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer is empty (never: the driver refuses size 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
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
        // SAFETY: `len` bytes are mapped for as long as `self` lives; the
        // device writes only during jobs, which borrow the buffer mutably.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
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
        // SAFETY: as above, and `&mut self` is exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

fn destroy(dev: &Device, handle: u32) {
    let req = uapi::BoDestroy { handle, pad: 0 };
    // SAFETY: `req` is a valid `struct m4npu_bo_destroy`. A failure would
    // mean the handle is already gone, which leaves nothing to undo.
    let _ = unsafe { ioc_bo_destroy(dev.as_raw_fd(), &req) };
}

impl Drop for Buffer<'_> {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes, unmapped once.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
        destroy(self.dev, self.handle);
    }
}
