// SPDX-License-Identifier: GPL-2.0

//! The foundation model as firmware: read by the firmware loader straight
//! into NPU memory (no second copy), validated, hashed, and pinned read-only
//! at the start of the pool until the module goes.

use core::mem::size_of;

use kernel::{device::Device, page::PAGE_SIZE, prelude::*, str::CStr, sync::Arc};

use crate::{
    blob::{check_sections, read, sha256_of, Refusal},
    compat::firmware,
    pool::{Frozen, Pool},
    uapi,
};

/// The pinned foundation model.
#[derive(Clone, Copy)]
pub(crate) struct Model {
    pub(crate) name: [u8; 64],
    pub(crate) hash: [u8; 32],
    /// Bytes of the blob; it occupies the pool's first pages.
    pub(crate) size: usize,
    /// Where the metadata (JSON: architecture, tokenizers) lies in the blob.
    pub(crate) meta_offset: usize,
    pub(crate) meta_size: usize,
}

impl Model {
    /// Bytes at the pool's start that hold the model (whole pages).
    pub(crate) fn region(&self) -> usize {
        region_of(self.size)
    }
}

/// Whole pages holding a blob of `size` bytes.
fn region_of(size: usize) -> usize {
    size.div_ceil(PAGE_SIZE) * PAGE_SIZE
}

/// The pinned model: its pages and what validation found in them.
pub(crate) struct Firmware {
    mem: Frozen,
    model: Model,
}

impl Firmware {
    pub(crate) fn model(&self) -> Model {
        self.model
    }

    /// The metadata (JSON: architecture, tokenizers).
    pub(crate) fn meta(&self) -> &[u8] {
        // Validation put it inside the blob.
        &self.mem.bytes()[self.model.meta_offset..][..self.model.meta_size]
    }
}

/// Loads `name` into `pool`, which must be empty. Every failure is logged
/// with the reason; the caller carries on without a model.
pub(crate) fn load(pool: &Arc<Pool>, dev: &Device, name: &CStr) -> Result<Firmware> {
    if pool.used() != 0 {
        pr_err!("firmware {}: pool not empty at load; no model loaded\n", name);
        return Err(EBUSY);
    }
    // The size is known only once loaded: take the whole pool, then give
    // back what the model does not fill.
    let mut mem = pool.alloc(pool.size())?;
    let size = firmware::request_into_buf(name, dev, mem.bytes_mut()).inspect_err(|e| {
        let why = match *e {
            e if e == ENOENT => "no such file under /lib/firmware",
            e if e == EFBIG => "larger than the NPU pool (raise pool_mb)",
            _ => "firmware loader error",
        };
        pr_err!("firmware {}: {} ({}); no model loaded\n", name, why, e.to_errno());
    })?;
    if size == 0 {
        pr_err!("firmware {}: empty; no model loaded\n", name);
        return Err(EINVAL);
    }
    mem.shrink(region_of(size))?;
    let mem = mem.freeze();
    match validate(&mem.bytes()[..size]) {
        Ok(model) => Ok(Firmware { mem, model: Model { size, ..model } }),
        Err((err, why)) => {
            pr_err!("firmware {}: {}; no model loaded\n", name, why);
            Err(err)
        }
    }
}

type Invalid = (Error, &'static str);

/// The same checks as userspace's `m4npu_format::Firmware::parse`.
fn validate(blob: &[u8]) -> core::result::Result<Model, Invalid> {
    let total = blob.len() as u64;
    let h: uapi::FwHeader = read(blob, 0).ok_or((EINVAL, "truncated: shorter than the header"))?;
    if h.magic != uapi::FW_MAGIC {
        return Err((EINVAL, "bad magic: not an m4npu firmware blob"));
    }
    if h.format_version != uapi::FW_FORMAT_VERSION {
        return Err((EINVAL, "unsupported format version"));
    }
    if h.header_size as usize != size_of::<uapi::FwHeader>() || h.reserved != [0; 32] {
        return Err((EINVAL, "bad header size or reserved bytes"));
    }
    if h.total_size != total {
        return Err((EINVAL, "truncated: size differs from the header's total_size"));
    }
    let sections = h.sections();
    check_sections(blob, &sections).map_err(|r| match r {
        Refusal::Malformed(why) => (EINVAL, why),
        Refusal::NoMemory => (ENOMEM, "out of memory"),
    })?;
    if !uapi::named(&h.name) {
        return Err((EINVAL, "model name empty or not NUL-terminated"));
    }
    let hash = sha256_of(&blob[h.header_size as usize..]).map_err(|e| (e, "larger than 4 GiB"))?;
    if hash != h.content_hash {
        return Err((crate::errno::ebadmsg(), "checksum mismatch: content hash differs from the header"));
    }
    // check_sections() has put the metadata inside the blob.
    Ok(Model { name: h.name, hash, size: 0, meta_offset: h.meta_offset as usize, meta_size: h.meta_size as usize })
}
