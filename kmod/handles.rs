// SPDX-License-Identifier: GPL-2.0

//! Per-context handle tables (BOs, adapters).

use kernel::{prelude::*, rbtree::RBTree, sync::Arc};

/// Handles count up from 1 and are not reused until the counter wraps, so
/// a stale handle does not silently name a new object. A handle from
/// another context never resolves: each context has its own tables.
pub(crate) struct HandleTable<T> {
    tree: RBTree<u32, Arc<T>>,
    next: u32,
    len: usize,
}

impl<T> HandleTable<T> {
    pub(crate) fn new() -> Self {
        Self { tree: RBTree::new(), next: 1, len: 0 }
    }

    pub(crate) fn insert(&mut self, obj: Arc<T>) -> Result<u32> {
        let mut handle = self.next;
        while handle == 0 || self.tree.get(&handle).is_some() {
            handle = handle.wrapping_add(1);
            if handle == self.next {
                return Err(EMFILE);
            }
        }
        self.tree.try_create_and_insert(handle, obj, GFP_KERNEL)?;
        self.next = handle.wrapping_add(1);
        self.len += 1;
        Ok(handle)
    }

    pub(crate) fn get(&self, handle: u32) -> Option<Arc<T>> {
        self.tree.get(&handle).cloned()
    }

    /// Removes a handle; the caller drops the object after unlocking, since
    /// a last reference to NPU memory zeroes it.
    pub(crate) fn remove(&mut self, handle: u32) -> Option<Arc<T>> {
        let obj = self.tree.remove(&handle)?;
        self.len -= 1;
        Some(obj)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}
