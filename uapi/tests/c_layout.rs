//! The C header and the Rust types must describe the same ABI: every size,
//! offset and constant the Rust crate computes is asserted, at compile time,
//! in C against `include/linux/m4npu.h`, by the compiler of the target the
//! test was built for (`cargo xtask test --arch arm64` runs it for aarch64).

use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

use m4npu_uapi as uapi;

/// (C expression, value Rust computes for it).
fn expectations() -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = Vec::new();
    macro_rules! layout {
        ($c:literal, $rust:ty, { $($cf:ident => $rf:ident),* $(,)? }) => {
            v.push((format!("sizeof(struct {})", $c), size_of::<$rust>() as u64));
            $(v.push((
                format!("offsetof(struct {}, {})", $c, stringify!($cf)),
                offset_of!($rust, $rf) as u64,
            ));)*
        };
    }
    macro_rules! constant {
        ($c:literal, $rust:expr) => {
            v.push(($c.to_string(), $rust as u64));
        };
    }

    layout!("m4npu_info", uapi::Info, {
        uapi_version => uapi_version,
        flags => flags,
        context_id => context_id,
        pool_size => pool_size,
        pool_used => pool_used,
        model_size => model_size,
        driver_version => driver_version,
        model_name => model_name,
        model_hash => model_hash,
    });
    layout!("m4npu_bo_create", uapi::BoCreate, {
        size => size, flags => flags, handle => handle, mmap_offset => mmap_offset,
    });
    layout!("m4npu_bo_destroy", uapi::BoDestroy, { handle => handle, pad => pad });
    layout!("m4npu_fw_header", uapi::FwHeader, {
        magic => magic,
        format_version => format_version,
        header_size => header_size,
        total_size => total_size,
        tensor_table_offset => tensor_table_offset,
        tensor_count => tensor_count,
        tensor_entry_size => tensor_entry_size,
        meta_offset => meta_offset,
        meta_size => meta_size,
        data_offset => data_offset,
        data_size => data_size,
        name => name,
        content_hash => content_hash,
        reserved => reserved,
    });
    layout!("m4npu_fw_tensor", uapi::FwTensor, {
        name => name, dtype => dtype, ndim => ndim, dims => dims, offset => offset, size => size,
    });
    layout!("m4npu_adapter_load", uapi::AdapterLoad, {
        fd => fd, flags => flags, offset => offset, length => length, handle => handle, pad => pad,
    });
    layout!("m4npu_adapter_unload", uapi::AdapterUnload, { handle => handle, pad => pad });
    layout!("m4npu_adapter_header", uapi::AdapterHeader, {
        magic => magic,
        format_version => format_version,
        header_size => header_size,
        total_size => total_size,
        tensor_table_offset => tensor_table_offset,
        tensor_count => tensor_count,
        tensor_entry_size => tensor_entry_size,
        meta_offset => meta_offset,
        meta_size => meta_size,
        data_offset => data_offset,
        data_size => data_size,
        name => name,
        content_hash => content_hash,
        base_model_hash => base_model_hash,
        reserved => reserved,
    });
    layout!("m4npu_model_meta", uapi::ModelMeta, { addr => addr, size => size });
    constant!("M4NPU_IOC_MODEL_META", uapi::IOC_MODEL_META);
    layout!("m4npu_bo_range", uapi::BoRange, { handle => handle, pad => pad, offset => offset, length => length });
    layout!("m4npu_job", uapi::Job, {
        adapter => adapter, op => op, priority => priority, flags => flags,
        input => input, output => output, state => state,
    });
    layout!("m4npu_hw_info", uapi::HwInfo, {
        uapi_version => uapi_version, flags => flags, pool_size => pool_size, model_addr => model_addr,
        model_size => model_size, model_region => model_region, max_queues => max_queues,
        queue_depth => queue_depth, pad => pad,
    });
    layout!("m4npu_hw_cmd", uapi::HwCmd, { queue => queue, tag => tag, result => result, addr => addr });
    layout!("m4npu_hw_set_flags", uapi::HwSetFlags, { flags => flags });
    layout!("m4npu_hw_batch_cmd", uapi::HwBatchCmd, { queue => queue, count => count, pad => pad, addr => addr });
    layout!("m4npu_hw_batch_job", uapi::HwBatchJob, { tag => tag, pad => pad, job => job });
    layout!("m4npu_hw_batch_result", uapi::HwBatchResult, { tag => tag, pad => pad, result => result });
    layout!("m4npu_hw_range", uapi::HwRange, { addr => addr, len => len });
    layout!("m4npu_hw_job", uapi::HwJob, {
        id => id, context_id => context_id, op => op, priority => priority, flags => flags, pad => pad,
        adapter => adapter, input => input, output => output, state => state,
    });
    constant!("M4NPU_JOB_OP_EMBED", uapi::JOB_OP_EMBED);
    constant!("M4NPU_JOB_OP_CLASSIFY", uapi::JOB_OP_CLASSIFY);
    constant!("M4NPU_JOB_OP_GENERATE", uapi::JOB_OP_GENERATE);
    constant!("M4NPU_JOB_OP_ECHO", uapi::JOB_OP_ECHO);
    constant!("M4NPU_JOB_OP_COUNT", uapi::JOB_OP_COUNT);
    constant!("M4NPU_JOB_PRIO_NORMAL", uapi::JOB_PRIO_NORMAL);
    constant!("M4NPU_JOB_PRIO_HIGH", uapi::JOB_PRIO_HIGH);
    constant!("M4NPU_JOB_PRIO_LOW", uapi::JOB_PRIO_LOW);
    constant!("M4NPU_URING_CMD_SQE128_BYTES", uapi::URING_CMD_SQE128_BYTES);
    constant!("M4NPU_IOC_RUN", uapi::IOC_RUN);
    constant!("M4NPU_URING_CMD_RUN", uapi::URING_CMD_RUN);
    constant!("M4NPU_HW_MAX_QUEUES", uapi::HW_MAX_QUEUES);
    constant!("M4NPU_HW_QUEUE_DEPTH", uapi::HW_QUEUE_DEPTH);
    constant!("M4NPU_IOC_HW_GET_INFO", uapi::IOC_HW_GET_INFO);
    constant!("M4NPU_URING_CMD_HW_FETCH", uapi::URING_CMD_HW_FETCH);
    constant!("M4NPU_URING_CMD_HW_COMMIT_AND_FETCH", uapi::URING_CMD_HW_COMMIT_AND_FETCH);
    constant!("M4NPU_HW_FLAG_RECOVERY", uapi::HW_FLAG_RECOVERY);
    constant!("M4NPU_IOC_HW_SET_FLAGS", uapi::IOC_HW_SET_FLAGS);
    constant!("M4NPU_URING_CMD_HW_FETCH_BATCH", uapi::URING_CMD_HW_FETCH_BATCH);
    constant!("M4NPU_URING_CMD_HW_COMMIT_BATCH", uapi::URING_CMD_HW_COMMIT_BATCH);
    constant!("sizeof(struct m4npu_job) <= M4NPU_URING_CMD_SQE128_BYTES", true);
    constant!("M4NPU_IOC_ADAPTER_LOAD", uapi::IOC_ADAPTER_LOAD);
    constant!("M4NPU_IOC_ADAPTER_UNLOAD", uapi::IOC_ADAPTER_UNLOAD);
    constant!("M4NPU_ADAPTER_FORMAT_VERSION", uapi::ADAPTER_FORMAT_VERSION);
    constant!("sizeof(M4NPU_ADAPTER_MAGIC)", uapi::ADAPTER_MAGIC.len());
    constant!("M4NPU_UAPI_VERSION", uapi::UAPI_VERSION);
    constant!("M4NPU_IOCTL_MAGIC", uapi::IOCTL_MAGIC);
    constant!("M4NPU_INFO_MODEL_LOADED", uapi::INFO_MODEL_LOADED);
    constant!("M4NPU_IOC_GET_INFO", uapi::IOC_GET_INFO);
    constant!("M4NPU_IOC_BO_CREATE", uapi::IOC_BO_CREATE);
    constant!("M4NPU_IOC_BO_DESTROY", uapi::IOC_BO_DESTROY);
    constant!("M4NPU_FW_FORMAT_VERSION", uapi::FW_FORMAT_VERSION);
    constant!("M4NPU_FW_ALIGN", uapi::FW_ALIGN);
    constant!("M4NPU_FW_MAX_TENSORS", uapi::FW_MAX_TENSORS);
    constant!("M4NPU_FW_NAME_LEN", uapi::FW_NAME_LEN);
    constant!("sizeof(M4NPU_FW_MAGIC)", uapi::FW_MAGIC.len());
    constant!("M4NPU_FW_DTYPE_F32", uapi::FW_DTYPE_F32);
    constant!("M4NPU_FW_DTYPE_F16", uapi::FW_DTYPE_F16);
    constant!("M4NPU_FW_DTYPE_Q4_1", uapi::FW_DTYPE_Q4_1);
    constant!("M4NPU_FW_DTYPE_Q8_0", uapi::FW_DTYPE_Q8_0);
    constant!("M4NPU_FW_DTYPE_I8", uapi::FW_DTYPE_I8);
    constant!("M4NPU_FW_DTYPE_I32", uapi::FW_DTYPE_I32);
    constant!("M4NPU_FW_DTYPE_BYTES", uapi::FW_DTYPE_BYTES);
    v
}

/// The C compiler for the target this test was built for: `$CC`, else the
/// Debian cross compiler when the test runs as arm64 on another machine
/// (under qemu-user), else `cc`.
fn target_cc() -> String {
    if let Ok(cc) = std::env::var("CC") {
        return cc;
    }
    let native = Command::new("cc").arg("-dumpmachine").output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if cfg!(target_arch = "aarch64") && !native.is_ok_and(|m| m.starts_with("aarch64")) {
        return "aarch64-linux-gnu-gcc".into();
    }
    "cc".into()
}

#[test]
fn c_header_matches_rust_types() {
    // Compile-time checks: nothing has to run on the target, so one test
    // serves every architecture the crate is built for.
    let mut src = String::from("#include <stddef.h>\n#include <linux/m4npu.h>\n");
    for (e, v) in expectations() {
        src += &format!("_Static_assert(({e}) == {v}ull, \"{e} is {v} in Rust\");\n");
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("c_layout");
    std::fs::create_dir_all(&dir).unwrap();
    let c = dir.join("layout.c");
    std::fs::write(&c, src).unwrap();
    let include = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("include");
    let cc = target_cc();
    let out = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-c", "-o"])
        .arg(dir.join("layout.o"))
        .arg("-I")
        .arg(&include)
        .arg(&c)
        .output()
        .unwrap_or_else(|e| panic!("running {cc}: {e}"));
    assert!(
        out.status.success(),
        "ABI mismatch between the C header (as {cc} compiles it) and the Rust types:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
