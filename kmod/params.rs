// SPDX-License-Identifier: GPL-2.0

//! Module parameters (all read-only after load).

use kernel::ffi::c_char;

use crate::compat::module_param::module_param;

module_param!(POOL_MB, "pool_mb", u32 = 256, param_ops_uint, "uint",
    "NPU memory pool in MiB, allocated at load and never swapped (default 256)");
module_param!(FIRMWARE, "firmware", *const c_char = c"m4npu/foundation.m4fw".as_ptr().cast(), param_ops_charp,
    "charp", "Foundation model, relative to /lib/firmware; empty for none (default m4npu/foundation.m4fw)");
module_param!(CTX_QUOTA_MB, "ctx_quota_mb", u32 = 64, param_ops_uint, "uint",
    "NPU memory one context may hold, in MiB (default 64)");
module_param!(CTX_MAX_JOBS, "ctx_max_jobs", u32 = 256, param_ops_uint, "uint",
    "Jobs one context may have in flight (default 256)");
module_param!(RECOVERY_MS, "recovery_ms", u32 = 5000, param_ops_uint, "uint",
    "How long jobs wait for a device that died with recovery on to come back, in ms (default 5000)");
