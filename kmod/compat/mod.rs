// SPDX-License-Identifier: GPL-2.0

//! What Linux 6.12's `kernel` crate lacks, shaped like the upstream
//! abstractions of newer kernels (`kernel::miscdevice`, `kernel::fs::File`,
//! `kernel::mm`, `kernel::seq_file`, `kernel::io_uring`, module parameters), so that the driver
//! reads the same and this directory can go when we move up.

pub(crate) mod completion;
pub(crate) mod crypto;
pub(crate) mod debugfs;
pub(crate) mod delayed_work;
pub(crate) mod file;
pub(crate) mod firmware;
pub(crate) mod miscdevice;
pub(crate) mod mm;
pub(crate) mod module_param;
pub(crate) mod seq_file;
pub(crate) mod task;
pub(crate) mod transmute;
pub(crate) mod uring_cmd;
pub(crate) mod vmalloc;
