//! Parsed adapters kept across jobs: parsing one (metadata JSON, tensor
//! table, shape checks) costs more than a small job, and an app runs many
//! jobs with the same adapter.
//!
//! Entries are keyed by where the blob lies in NPU memory, and hold its
//! content hash. The driver checks that hash when it loads an adapter, and
//! no app can write adapter memory, so an entry whose address, length and
//! hash match a job's blob describes those very bytes. When an adapter is
//! unloaded the driver zeroes its memory: [`AdapterCache::sweep`] drops the
//! entries whose blob no longer carries their hash.

use std::collections::HashMap;

use m4npu_hw::NpuMemory;
use m4npu_uapi::{AdapterHeader, HwRange};
use nix::errno::Errno;

use crate::adapter::TaskAdapter;
use crate::foundation::Foundation;

/// More live adapters than this and the cache starts over: a bound on
/// memory, far above the apps a phone runs at once.
const MAX_ENTRIES: usize = 256;

struct Entry<'m> {
    hash: [u8; 32],
    adapter: TaskAdapter<'m>,
}

/// Parsed adapters borrowing NPU memory mapped for `'m`.
#[derive(Default)]
pub struct AdapterCache<'m> {
    entries: HashMap<(u64, u64), Entry<'m>>,
    /// Jobs whose adapter was found parsed.
    pub hits: u64,
    /// Adapters parsed.
    pub misses: u64,
}

/// The content hash in an adapter blob's header, if the blob holds one.
pub fn content_hash(blob: &[u8]) -> Option<[u8; 32]> {
    let at = core::mem::offset_of!(AdapterHeader, content_hash);
    blob.get(at..at + 32)?.try_into().ok()
}

impl<'m> AdapterCache<'m> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The parsed adapter of the blob at device address `addr`: from the
    /// cache, or parsed now (`ENOEXEC` if it does not fit `model`; failures
    /// are not kept).
    pub fn get(&mut self, blob: &'m [u8], addr: u64, model: &Foundation<'_>) -> Result<&TaskAdapter<'m>, Errno> {
        self.load(blob, addr, model)?;
        self.cached(blob, addr).ok_or(Errno::ENOEXEC)
    }

    /// Makes sure the blob at `addr` is held parsed (see [`AdapterCache::get`]).
    pub fn load(&mut self, blob: &'m [u8], addr: u64, model: &Foundation<'_>) -> Result<(), Errno> {
        let hash = content_hash(blob).ok_or(Errno::ENOEXEC)?;
        let key = (addr, blob.len() as u64);
        if self.entries.get(&key).is_some_and(|e| e.hash == hash) {
            self.hits += 1;
            return Ok(());
        }
        let adapter = TaskAdapter::parse(blob, model).map_err(|_| Errno::ENOEXEC)?;
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(key, Entry { hash, adapter });
        self.misses += 1;
        Ok(())
    }

    /// The parsed adapter of the blob at `addr`, if held: for several jobs
    /// at once, after [`AdapterCache::load`] for each.
    pub fn cached(&self, blob: &[u8], addr: u64) -> Option<&TaskAdapter<'m>> {
        let e = self.entries.get(&(addr, blob.len() as u64))?;
        (Some(e.hash) == content_hash(blob)).then_some(&e.adapter)
    }

    /// Drops the entries of adapters no longer in NPU memory.
    pub fn sweep(&mut self, mem: &NpuMemory) {
        self.sweep_with(|r| mem.read(r).ok());
    }

    /// [`AdapterCache::sweep`] over memory that `read` gives by device range.
    pub fn sweep_with<'r>(&mut self, read: impl Fn(HwRange) -> Option<&'r [u8]>) {
        self.entries.retain(|&(addr, len), e| read(HwRange { addr, len }).and_then(content_hash) == Some(e.hash));
    }

    /// Adapters held parsed.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
