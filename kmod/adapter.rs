// SPDX-License-Identifier: GPL-2.0

//! Adapters: an app's fine-tuned part of the model (LoRA, task head, input
//! projection), read from a sealed memfd into the context's NPU memory.
//!
//! The seals make the memfd immutable while we read it; the copy in NPU
//! memory is what gets validated and what the device uses, and apps can
//! neither map nor change it.

use kernel::{bindings, page::PAGE_SIZE, prelude::*, sync::Arc};

use crate::{
    blob::{check_sections, read, sha256_of, Refusal},
    bo::Bo,
    compat::file::FileRef,
    errno,
    firmware::Model,
    pool::Pool,
    uapi,
    usage::Usage,
};

const REQUIRED_SEALS: u32 = bindings::F_SEAL_WRITE | bindings::F_SEAL_SHRINK | bindings::F_SEAL_GROW;

/// A loaded adapter. Its memory stays while any reference (handle table,
/// a job in flight) holds it.
pub(crate) struct Adapter {
    mem: Bo,
    size: usize,
}

impl Adapter {
    /// Bytes of the blob.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn mem(&self) -> &Bo {
        &self.mem
    }
}

/// Loads the adapter `req` describes. Errors as documented in the UAPI.
/// `model` is the pinned foundation model the adapter must be bound to.
pub(crate) fn load(pool: &Arc<Pool>, model: Option<Model>, usage: &Arc<Usage>, req: &uapi::AdapterLoad) -> Result<Arc<Adapter>> {
    if req.flags != 0 || req.pad != 0 {
        return Err(EINVAL);
    }
    let file = FileRef::fget(u32::try_from(req.fd).map_err(|_| EBADF)?)?;
    let seals = file.memfd_seals().ok_or_else(errno::eopnotsupp)?;
    if seals & REQUIRED_SEALS != REQUIRED_SEALS {
        return Err(EPERM);
    }
    let end = req.offset.checked_add(req.length).ok_or(EINVAL)?;
    if req.length == 0 || end > file.size() {
        return Err(EINVAL);
    }
    let len = usize::try_from(req.length).map_err(|_| EFBIG)?;
    if len > usage.quota() {
        return Err(EFBIG);
    }
    let model = model.ok_or(ENODEV)?;
    // Never in the BO table, so no app can map it.
    let mut mem = Bo::new(pool, usage, len.div_ceil(PAGE_SIZE) * PAGE_SIZE)?;
    let blob = &mut mem.bytes_mut()[..len];
    // Sealed against shrinking: the file cannot end early.
    file.read_exact_at(blob, req.offset)?;
    validate(blob, &model.hash)?;
    Ok(Arc::new(Adapter { mem, size: len }, GFP_KERNEL)?)
}

/// The same checks as userspace's `m4npu_format::Adapter::parse`, then the
/// binding to the pinned foundation model.
fn validate(blob: &[u8], model_hash: &[u8; 32]) -> Result {
    let h: uapi::AdapterHeader = read(blob, 0).ok_or(ENOEXEC)?;
    if h.magic != uapi::ADAPTER_MAGIC
        || h.format_version != uapi::ADAPTER_FORMAT_VERSION
        || h.header_size as usize != core::mem::size_of::<uapi::AdapterHeader>()
        || h.reserved != [0; 32]
        || h.total_size != blob.len() as u64
        || !uapi::named(&h.name)
    {
        return Err(ENOEXEC);
    }
    let sections = h.sections();
    check_sections(blob, &sections).map_err(|r| match r {
        Refusal::Malformed(_) => ENOEXEC,
        Refusal::NoMemory => ENOMEM,
    })?;
    if sha256_of(&blob[h.header_size as usize..])? != h.content_hash {
        return Err(errno::ebadmsg());
    }
    if &h.base_model_hash != model_hash {
        return Err(errno::emediumtype());
    }
    Ok(())
}
