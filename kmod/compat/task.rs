// SPDX-License-Identifier: GPL-2.0

//! The running task: its thread group, its capabilities and its file table,
//! which 6.12's `kernel::task` does not reach safely.

use kernel::{bindings, ffi::c_void};

extern "C" {
    // kmod/helpers.c: `current->files`.
    fn m4npu_helper_current_files() -> *mut c_void;
}

/// The caller's thread-group id. Not `current!().group_leader().pid()`:
/// 6.12's `Task` claims `task_struct`'s 64-byte alignment, which slab-
/// allocated tasks need not have, and debug assertions catch the deref.
pub(crate) fn current_tgid() -> i32 {
    // SAFETY: `get_current()` is the running task, valid for this call; a
    // null namespace means the caller's own.
    unsafe { bindings::__task_pid_nr_ns(bindings::get_current(), bindings::pid_type_PIDTYPE_TGID, core::ptr::null_mut()) }
}

/// `CAP_SYS_NICE` of `include/uapi/linux/capability.h`.
pub(crate) const CAP_SYS_NICE: i32 = 23;

/// Whether the caller has capability `cap` (`capable()`: also marks the
/// task as having used its privilege, for auditing).
pub(crate) fn capable(cap: i32) -> bool {
    // SAFETY: `capable()` only reads the running task's credentials.
    unsafe { bindings::capable(cap) }
}

/// Identifies a file table (`fl_owner_t`): `->flush` is told whose close it
/// is. Compared, never dereferenced.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlOwner(usize);

impl FlOwner {
    /// The running task's file table.
    pub(crate) fn current() -> Self {
        // SAFETY: reads a pointer of the running task.
        Self(unsafe { m4npu_helper_current_files() } as usize)
    }

    pub(crate) fn from_raw(id: *mut c_void) -> Self {
        Self(id as usize)
    }
}
