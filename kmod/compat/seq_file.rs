// SPDX-License-Identifier: GPL-2.0

//! `struct seq_file`, after upstream `kernel::seq_file` (Linux 6.13).

use kernel::{bindings, c_str, types::Opaque};

/// A seq_file being written by a show callback.
#[repr(transparent)]
pub(crate) struct SeqFile(Opaque<bindings::seq_file>);

impl SeqFile {
    /// # Safety
    ///
    /// `ptr` is a seq_file in a show callback, valid and not used elsewhere for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::seq_file) -> &'a SeqFile {
        // SAFETY: `repr(transparent)`; validity is the caller's promise.
        unsafe { &*ptr.cast() }
    }

    /// Formats into the file (use `seq_print!`).
    pub(crate) fn call_printf(&self, args: core::fmt::Arguments<'_>) {
        // SAFETY: `%pA` formats a `core::fmt::Arguments` (lib/vsprintf.c);
        // the pointer is valid for the call.
        unsafe {
            bindings::seq_printf(
                self.0.get(),
                c_str!("%pA").as_char_ptr(),
                core::ptr::from_ref(&args).cast::<kernel::ffi::c_void>(),
            );
        }
    }
}

/// `seq_print!(m, "fmt", args...)`.
macro_rules! seq_print {
    ($m:expr, $($arg:tt)+) => {
        $m.call_printf(core::format_args!($($arg)+))
    };
}

pub(crate) use seq_print;
