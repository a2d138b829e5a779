// SPDX-License-Identifier: GPL-2.0

//! What Linux 6.12's `kernel` crate lacks, shaped like the upstream
//! abstractions of newer kernels (`kernel::miscdevice`, `kernel::fs::File`),
//! so that the driver reads the same and this directory can go when we move up.

pub(crate) mod file;
pub(crate) mod miscdevice;
