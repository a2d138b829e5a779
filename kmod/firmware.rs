// SPDX-License-Identifier: GPL-2.0

//! The foundation model as firmware: read by the firmware loader straight
//! into NPU memory (no second copy), validated, hashed, and pinned read-only
//! at the start of the pool until the module goes.

use core::mem::size_of;

use kernel::{bindings, ffi::c_void, page::PAGE_SIZE, prelude::*, str::CStr};

use crate::{
    blob::{check_sections, read, sha256_of, Refusal},
    pool::Pool,
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

/// Loads `name` into `pool`, which must be empty. Every failure is logged
/// with the reason; the caller carries on without a model.
pub(crate) fn load(pool: &Pool, dev: *mut bindings::device, name: &CStr) -> Result<Model> {
    let mut fw: *const bindings::firmware = core::ptr::null();
    // SAFETY: `dev` is our registered misc device; the buffer is the whole
    // (empty, kernel-only) pool, valid for writes of `pool.size()` bytes.
    let ret = unsafe {
        bindings::request_firmware_into_buf(&mut fw, name.as_char_ptr(), dev, pool.mem().as_ptr().cast::<c_void>(), pool.size())
    };
    if ret != 0 {
        let why = match Error::from_errno(ret) {
            e if e == ENOENT => "no such file under /lib/firmware",
            e if e == EFBIG => "larger than the NPU pool (raise pool_mb)",
            _ => "firmware loader error",
        };
        pr_err!("firmware {}: {} ({}); no model loaded\n", name, why, ret);
        return Err(Error::from_errno(ret));
    }
    // SAFETY: request succeeded, so `fw` is valid until released; the data
    // is in our buffer, which release_firmware() leaves alone.
    let size = unsafe { (*fw).size };
    // SAFETY: as above, released once.
    unsafe { bindings::release_firmware(fw) };

    let region = region_of(size);
    let offset = pool.alloc(region)?;
    if offset != 0 {
        pr_err!("firmware {}: pool not empty at load; no model loaded\n", name);
        // SAFETY: allocated just now, never exposed.
        unsafe { pool.free(offset, region) };
        return Err(EBUSY);
    }
    // SAFETY: the loader wrote `size` bytes at the pool's start; nothing can
    // map or write that range (it is reserved and not yet published).
    let blob = unsafe { core::slice::from_raw_parts(pool.mem().as_ptr(), size) };
    match validate(blob) {
        Ok(model) => Ok(Model { size, ..model }),
        Err((err, why)) => {
            pr_err!("firmware {}: {}; no model loaded\n", name, why);
            // SAFETY: the firmware range, unpublished; zeroed on free.
            unsafe { pool.free(0, region) };
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
