/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR MIT) */
/*
 * m4npu: the foundation model as NPU firmware.
 *
 * User/kernel contract of /dev/m4npu. Twin of the Rust crate m4npu-uapi
 * (uapi/src/abi.rs); uapi/tests/c_layout.rs checks that both agree.
 */
#ifndef _UAPI_LINUX_M4NPU_H
#define _UAPI_LINUX_M4NPU_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define M4NPU_UAPI_VERSION_MAJOR 0
#define M4NPU_UAPI_VERSION_MINOR 3
#define M4NPU_UAPI_VERSION \
	((M4NPU_UAPI_VERSION_MAJOR << 16) | M4NPU_UAPI_VERSION_MINOR)

#define M4NPU_DEVICE_NAME "m4npu"
#define M4NPU_IOCTL_MAGIC 0xBA

/* struct m4npu_info.flags */
#define M4NPU_INFO_MODEL_LOADED (1U << 0)

/**
 * struct m4npu_info - the driver, its firmware and the caller's context
 * @uapi_version:   M4NPU_UAPI_VERSION of the driver
 * @flags:          M4NPU_INFO_* flags
 * @context_id:     id of the caller's context, unique while loaded; never 0
 * @pool_size:      bytes of NPU memory owned by the driver
 * @pool_used:      bytes of NPU memory in use, firmware included
 * @model_size:     bytes of the pinned foundation model; 0 without one
 * @driver_version: NUL-padded driver version
 * @model_name:     NUL-padded foundation model name; empty without one
 * @model_hash:     SHA-256 of the foundation model; zero without one
 */
struct m4npu_info {
	__u32 uapi_version;
	__u32 flags;
	__u64 context_id;
	__u64 pool_size;
	__u64 pool_used;
	__u64 model_size;
	char driver_version[32];
	char model_name[64];
	__u8 model_hash[32];
};

#define M4NPU_IOC_GET_INFO _IOR(M4NPU_IOCTL_MAGIC, 0x00, struct m4npu_info)

/**
 * struct m4npu_bo_create - a buffer object in the caller's context
 * @size:        in: bytes wanted (>= 1); rounded up to pages, as charged
 * @flags:       in: must be 0
 * @handle:      out: handle, valid in this context only; never 0
 * @mmap_offset: out: offset to mmap(MAP_SHARED) the buffer on this fd
 *
 * Errors: EINVAL (size 0, flags), EDQUOT (context quota), ENOSPC (NPU
 * memory full). The buffer is zeroed.
 */
struct m4npu_bo_create {
	__u64 size;
	__u32 flags;
	__u32 handle;
	__u64 mmap_offset;
};

/**
 * struct m4npu_bo_destroy - drop a handle (ENOENT if this context has none)
 * @handle: from M4NPU_IOC_BO_CREATE on this fd
 * @pad:    must be 0
 *
 * The memory is freed once no mapping uses it any more.
 */
struct m4npu_bo_destroy {
	__u32 handle;
	__u32 pad;
};

#define M4NPU_IOC_BO_CREATE _IOWR(M4NPU_IOCTL_MAGIC, 0x01, struct m4npu_bo_create)
#define M4NPU_IOC_BO_DESTROY _IOW(M4NPU_IOCTL_MAGIC, 0x02, struct m4npu_bo_destroy)

/**
 * struct m4npu_adapter_load - load an adapter blob from a sealed memfd
 * @fd:     memfd with F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW
 * @flags:  must be 0
 * @offset: where the blob starts in the memfd
 * @length: bytes of the blob
 * @handle: out: adapter handle, valid in this context only; never 0
 * @pad:    must be 0
 *
 * Errors: EBADF (no such fd), EOPNOTSUPP (not a memfd), EPERM (seals
 * missing), EINVAL (flags, pad, range outside the file), EFBIG (larger
 * than the quota), ENOEXEC (not a valid adapter), EBADMSG (checksum),
 * ENODEV (no foundation model), EMEDIUMTYPE (trained for another
 * foundation model), EDQUOT, ENOSPC.
 */
struct m4npu_adapter_load {
	__s32 fd;
	__u32 flags;
	__u64 offset;
	__u64 length;
	__u32 handle;
	__u32 pad;
};

/**
 * struct m4npu_adapter_unload - drop an adapter (ENOENT if not ours)
 * @handle: from M4NPU_IOC_ADAPTER_LOAD on this fd
 * @pad:    must be 0
 */
struct m4npu_adapter_unload {
	__u32 handle;
	__u32 pad;
};

#define M4NPU_IOC_ADAPTER_LOAD _IOWR(M4NPU_IOCTL_MAGIC, 0x03, struct m4npu_adapter_load)
#define M4NPU_IOC_ADAPTER_UNLOAD _IOW(M4NPU_IOCTL_MAGIC, 0x04, struct m4npu_adapter_unload)

/**
 * struct m4npu_model_meta - the pinned model's metadata (JSON)
 * @addr: in: user buffer
 * @size: in: bytes of the buffer; out: bytes of the metadata (copied only
 *        if they fit)
 *
 * Errors: ENODEV (no model), EFAULT (bad buffer).
 */
struct m4npu_model_meta {
	__u64 addr;
	__u64 size;
};

#define M4NPU_IOC_MODEL_META _IOWR(M4NPU_IOCTL_MAGIC, 0x06, struct m4npu_model_meta)

/* ---- Jobs ---- */

/**
 * struct m4npu_bo_range - a byte range of one of the context's BOs
 * @handle: BO handle in the submitting context; 0 = none (where optional)
 * @pad:    must be 0
 * @offset: start in the BO
 * @length: bytes; offset + length must lie inside the BO
 */
struct m4npu_bo_range {
	__u32 handle;
	__u32 pad;
	__u64 offset;
	__u64 length;
};

/* struct m4npu_job.op */
#define M4NPU_JOB_OP_EMBED 1	/* pooled embedding of the input */
#define M4NPU_JOB_OP_CLASSIFY 2	/* the adapter's task head (needs an adapter) */
#define M4NPU_JOB_OP_GENERATE 3	/* one generation step (needs state: KV cache) */
#define M4NPU_JOB_OP_ECHO 4	/* input copied to output (bring-up, tests) */
#define M4NPU_JOB_OP_COUNT 5

/*
 * struct m4npu_job.priority. HIGH needs CAP_SYS_NICE (EPERM otherwise).
 * Within a priority the driver serves contexts in turn (start-time fair
 * queuing): a context's backlog delays another context's next job by at
 * most one job.
 */
#define M4NPU_JOB_PRIO_NORMAL 0
#define M4NPU_JOB_PRIO_HIGH 1
#define M4NPU_JOB_PRIO_LOW 2

/**
 * struct m4npu_job - what the NPU runs, on what, into where
 * @adapter:  adapter handle in this context; 0 = the foundation model alone
 * @op:       M4NPU_JOB_OP_*
 * @priority: M4NPU_JOB_PRIO_*
 * @flags:    must be 0
 * @input:    what the device reads
 * @output:   where the device writes its result
 * @state:    read and written by the device (KV cache); handle 0 for none
 *
 * Payload of M4NPU_URING_CMD_RUN (SQE command area: needs a ring set up
 * with IORING_SETUP_SQE128) and argument of M4NPU_IOC_RUN. Ranges must not
 * overlap. The job keeps its adapter and BOs alive until it completes.
 */
struct m4npu_job {
	__u32 adapter;
	__u16 op;
	__u8 priority;
	__u8 flags;
	struct m4npu_bo_range input;
	struct m4npu_bo_range output;
	struct m4npu_bo_range state;
};

#define M4NPU_URING_CMD_SQE128_BYTES 80

/*
 * Returns the number of output bytes. Errors, in the order checked:
 * EOPNOTSUPP (unknown op), EINVAL (bad field), EPERM (HIGH priority without
 * CAP_SYS_NICE), ENODEV (no model), ENOENT (unknown handle), EINVAL (range
 * or overlap), ENXIO (no device serving jobs, none recovering), EBUSY (in-flight limit); then EIO (device failed or went away) or
 * the device's -errno. Only a fatal signal ends the wait early.
 */
#define M4NPU_IOC_RUN _IOW(M4NPU_IOCTL_MAGIC, 0x05, struct m4npu_job)
/* sqe->cmd_op of IORING_OP_URING_CMD; cqe->res as M4NPU_IOC_RUN returns */
#define M4NPU_URING_CMD_RUN _IOW(M4NPU_IOCTL_MAGIC, 0x10, struct m4npu_job)

/* ---- The device side: /dev/m4npu-hw (mode 0600, one open at a time) ---- */

#define M4NPU_HW_DEVICE_NAME "m4npu-hw"
#define M4NPU_HW_MAX_QUEUES 16
#define M4NPU_HW_QUEUE_DEPTH 64

/**
 * struct m4npu_hw_info - NPU memory as the device sees it
 * @uapi_version: M4NPU_UAPI_VERSION
 * @flags:        M4NPU_INFO_* flags
 * @pool_size:    bytes of NPU memory; mmap offset a is device address a
 * @model_addr:   device address of the foundation model's blob
 * @model_size:   bytes of the blob; 0 without a model
 * @model_region: bytes from model_addr that may only be mapped read-only
 * @max_queues:   M4NPU_HW_MAX_QUEUES
 * @queue_depth:  M4NPU_HW_QUEUE_DEPTH
 * @pad:          0
 */
struct m4npu_hw_info {
	__u32 uapi_version;
	__u32 flags;
	__u64 pool_size;
	__u64 model_addr;
	__u64 model_size;
	__u64 model_region;
	__u16 max_queues;
	__u16 queue_depth;
	__u32 pad;
};

#define M4NPU_IOC_HW_GET_INFO _IOR(M4NPU_IOCTL_MAGIC, 0x20, struct m4npu_hw_info)

/**
 * struct m4npu_hw_cmd - payload of the device-side uring commands
 * @queue:  below M4NPU_HW_MAX_QUEUES
 * @tag:    slot in the queue, below M4NPU_HW_QUEUE_DEPTH
 * @result: COMMIT_AND_FETCH: output bytes or -errno of the finished job
 * @addr:   user address of a struct m4npu_hw_job filled on dispatch, at any
 *          time while the command is outstanding (keep it valid until then)
 */
struct m4npu_hw_cmd {
	__u16 queue;
	__u16 tag;
	__s32 result;
	__u64 addr;
};

struct m4npu_hw_range {
	__u64 addr;
	__u64 len;
};

/**
 * struct m4npu_hw_job - a job as the device sees it (device addresses)
 * @id:         unique while the module is loaded
 * @context_id: the submitting context
 * @op:         M4NPU_JOB_OP_*
 * @priority:   M4NPU_JOB_PRIO_*
 * @flags:      the job's flags
 * @pad:        0
 * @adapter:    the adapter's blob; len 0 for none
 * @input:      input range
 * @output:     output range
 * @state:      state range; len 0 for none
 */
struct m4npu_hw_job {
	__u64 id;
	__u64 context_id;
	__u16 op;
	__u8 priority;
	__u8 flags;
	__u32 pad;
	struct m4npu_hw_range adapter;
	struct m4npu_hw_range input;
	struct m4npu_hw_range output;
	struct m4npu_hw_range state;
};

#define M4NPU_URING_CMD_HW_FETCH _IOWR(M4NPU_IOCTL_MAGIC, 0x21, struct m4npu_hw_cmd)
#define M4NPU_URING_CMD_HW_COMMIT_AND_FETCH \
	_IOWR(M4NPU_IOCTL_MAGIC, 0x22, struct m4npu_hw_cmd)

/**
 * struct m4npu_hw_batch_cmd - payload of the batch commands (ublk BATCH_IO)
 * @queue: below M4NPU_HW_MAX_QUEUES
 * @count: entries at @addr, 1 to M4NPU_HW_QUEUE_DEPTH
 * @pad:   must be 0
 * @addr:  user address of the entries
 *
 * FETCH_BATCH waits for jobs of @queue and completes with their number,
 * written to @addr as struct m4npu_hw_batch_job, each holding an idle slot
 * until committed (one FETCH_BATCH per queue at a time: EBUSY). Its last
 * place only takes a job of a context with nothing else on the device, so
 * that one app's backlog cannot hold every place.
 * COMMIT_BATCH completes the jobs of @count struct m4npu_hw_batch_result at
 * @addr at once; a bad tag refuses the whole batch with EINVAL.
 */
struct m4npu_hw_batch_cmd {
	__u16 queue;
	__u16 count;
	__u32 pad;
	__u64 addr;
};

struct m4npu_hw_batch_job {
	__u16 tag;
	__u16 pad[3];
	struct m4npu_hw_job job;
};

struct m4npu_hw_batch_result {
	__u16 tag;
	__u16 pad;
	__s32 result;
};

#define M4NPU_URING_CMD_HW_FETCH_BATCH \
	_IOWR(M4NPU_IOCTL_MAGIC, 0x24, struct m4npu_hw_batch_cmd)
#define M4NPU_URING_CMD_HW_COMMIT_BATCH \
	_IOW(M4NPU_IOCTL_MAGIC, 0x25, struct m4npu_hw_batch_cmd)

/*
 * Recover from the device's death: jobs it held go back to the front of
 * their queues, and new ones queue, for the module's recovery_ms window; a
 * device attaching within it receives them again, past it they fail with
 * EIO (ublk's UBLK_F_USER_RECOVERY). A job may run twice: it reads its
 * input and adapter, overwrites its output and rewrites its state in place
 * (a GENERATE state records the id of the job that last advanced it, so a
 * re-run starts where the first run did).
 */
#define M4NPU_HW_FLAG_RECOVERY (1ULL << 0)

/**
 * struct m4npu_hw_set_flags - argument of M4NPU_IOC_HW_SET_FLAGS
 * @flags: M4NPU_HW_FLAG_*; replaces the session's flags (EINVAL if unknown)
 */
struct m4npu_hw_set_flags {
	__u64 flags;
};

#define M4NPU_IOC_HW_SET_FLAGS _IOW(M4NPU_IOCTL_MAGIC, 0x23, struct m4npu_hw_set_flags)

/* Adapter blobs (.m4a): the firmware layout plus the base model's hash. */

#define M4NPU_ADAPTER_MAGIC "M4NPUAD" /* 8 bytes with the NUL */
#define M4NPU_ADAPTER_FORMAT_VERSION 1

struct m4npu_adapter_header {
	__u8 magic[8];
	__u32 format_version;
	__u32 header_size;
	__u64 total_size;
	__u64 tensor_table_offset;
	__u32 tensor_count;
	__u32 tensor_entry_size;
	__u64 meta_offset;
	__u64 meta_size;
	__u64 data_offset;
	__u64 data_size;
	char name[64];
	__u8 content_hash[32];
	__u8 base_model_hash[32];
	__u8 reserved[32];
};

/* The foundation model's firmware blob: /lib/firmware/m4npu/<name> */

#define M4NPU_FW_MAGIC "M4NPUFW" /* 8 bytes with the NUL */
#define M4NPU_FW_FORMAT_VERSION 1
#define M4NPU_FW_ALIGN 4096
#define M4NPU_FW_NAME_LEN 64
/* Most tensors a firmware or adapter blob holds; their names are unique. */
#define M4NPU_FW_MAX_TENSORS 4096

/* Tensor element formats, numbered as ggml's enum ggml_type. */
#define M4NPU_FW_DTYPE_F32 0
#define M4NPU_FW_DTYPE_F16 1
#define M4NPU_FW_DTYPE_Q4_1 3
#define M4NPU_FW_DTYPE_Q8_0 8
#define M4NPU_FW_DTYPE_I8 24
#define M4NPU_FW_DTYPE_I32 26
#define M4NPU_FW_DTYPE_BYTES 0x100

/**
 * struct m4npu_fw_header - at offset 0 of a firmware blob
 *
 * Offsets are from the blob's start. @content_hash is the SHA-256 of bytes
 * [@header_size, @total_size): the model's identity, verified at load and
 * bound into every adapter. @meta is UTF-8 JSON (architecture, tokenizer).
 */
struct m4npu_fw_header {
	__u8 magic[8];
	__u32 format_version;
	__u32 header_size;
	__u64 total_size;
	__u64 tensor_table_offset;
	__u32 tensor_count;
	__u32 tensor_entry_size;
	__u64 meta_offset;
	__u64 meta_size;
	__u64 data_offset;
	__u64 data_size;
	char name[64];
	__u8 content_hash[32];
	__u8 reserved[32];
};

/**
 * struct m4npu_fw_tensor - one entry of the tensor table
 * @dims:   innermost first (GGUF order); unused ones are 1
 * @offset: in the data section, M4NPU_FW_ALIGN-aligned
 */
struct m4npu_fw_tensor {
	char name[M4NPU_FW_NAME_LEN];
	__u32 dtype;
	__u32 ndim;
	__u64 dims[4];
	__u64 offset;
	__u64 size;
};

#endif /* _UAPI_LINUX_M4NPU_H */
