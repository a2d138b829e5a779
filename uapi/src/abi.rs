//! ABI of `/dev/m4npu`. Shared verbatim with the kernel module, so: no crate
//! attributes, no dependencies, only `core`.

/// Bumped on any incompatible change; userspace refuses a different major.
pub const UAPI_VERSION_MAJOR: u16 = 0;
/// Bumped when something is added compatibly.
pub const UAPI_VERSION_MINOR: u16 = 3;
/// `major << 16 | minor`, as reported by [`IOC_GET_INFO`].
pub const UAPI_VERSION: u32 = (UAPI_VERSION_MAJOR as u32) << 16 | UAPI_VERSION_MINOR as u32;

/// Misc device node for apps (mode 0666: every opener gets an isolated context).
pub const DEVICE_NAME: &str = "m4npu";

/// ioctl type byte; unassigned in Documentation/userspace-api/ioctl/ioctl-number.rst.
pub const IOCTL_MAGIC: u8 = 0xBA;

/// Direction bits of an ioctl command, asm-generic layout (x86, arm64, riscv).
pub const IOC_NONE: u32 = 0;
/// Userspace writes, the kernel reads.
pub const IOC_WRITE: u32 = 1;
/// The kernel writes, userspace reads.
pub const IOC_READ: u32 = 2;

const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;

/// `_IOC(dir, type, nr, size)`.
pub const fn ioc(dir: u32, ty: u8, nr: u8, size: usize) -> u32 {
    (dir << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// `_IOC_DIR(cmd)`.
pub const fn ioc_dir(cmd: u32) -> u32 {
    cmd >> IOC_DIRSHIFT
}

/// `_IOC_TYPE(cmd)`.
pub const fn ioc_type(cmd: u32) -> u8 {
    (cmd >> IOC_TYPESHIFT) as u8
}

/// `_IOC_NR(cmd)`.
pub const fn ioc_nr(cmd: u32) -> u8 {
    (cmd >> IOC_NRSHIFT) as u8
}

/// `_IOC_SIZE(cmd)`.
pub const fn ioc_size(cmd: u32) -> usize {
    ((cmd >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as usize
}

/// [`Info::flags`]: a foundation model is loaded and pinned.
pub const INFO_MODEL_LOADED: u32 = 1 << 0;

/// Argument of [`IOC_GET_INFO`]: the driver, its firmware and the caller's context.
///
/// Strings are NUL-padded UTF-8.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Info {
    /// [`UAPI_VERSION`] of the driver.
    pub uapi_version: u32,
    /// `INFO_*` flags.
    pub flags: u32,
    /// Id of the caller's context, unique for the module's lifetime; never 0.
    pub context_id: u64,
    /// Bytes of NPU memory owned by the driver.
    pub pool_size: u64,
    /// Bytes of NPU memory in use, firmware included.
    pub pool_used: u64,
    /// Bytes of the pinned foundation model; 0 without one.
    pub model_size: u64,
    /// Driver version string.
    pub driver_version: [u8; 32],
    /// Name of the foundation model; empty without one.
    pub model_name: [u8; 64],
    /// SHA-256 content hash of the foundation model; zero without one.
    pub model_hash: [u8; 32],
}

impl Info {
    /// All fields zero: the value userspace passes in.
    pub const fn zeroed() -> Self {
        Self {
            uapi_version: 0,
            flags: 0,
            context_id: 0,
            pool_size: 0,
            pool_used: 0,
            model_size: 0,
            driver_version: [0; 32],
            model_name: [0; 64],
            model_hash: [0; 32],
        }
    }
}

/// `_IOR(IOCTL_MAGIC, 0x00, struct m4npu_info)`: fill [`Info`].
pub const IOC_GET_INFO: u32 = ioc(IOC_READ, IOCTL_MAGIC, 0x00, core::mem::size_of::<Info>());

/// Argument of [`IOC_BO_CREATE`]: a buffer object in the caller's context.
///
/// Sizes are rounded up to whole pages, and that is what the context's
/// quota is charged. The buffer is zeroed. Map it with
/// `mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, mmap_offset)`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoCreate {
    /// In: bytes wanted, at least 1.
    pub size: u64,
    /// In: must be 0.
    pub flags: u32,
    /// Out: handle, valid in this context only; never 0.
    pub handle: u32,
    /// Out: `mmap()` offset of the buffer on this file.
    pub mmap_offset: u64,
}

/// Argument of [`IOC_BO_DESTROY`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoDestroy {
    /// A handle from [`IOC_BO_CREATE`] on this file.
    pub handle: u32,
    /// Must be 0.
    pub pad: u32,
}

/// `_IOWR(IOCTL_MAGIC, 0x01, struct m4npu_bo_create)`: errors are `EINVAL`
/// (size 0, flags), `EDQUOT` (context quota), `ENOSPC` (NPU memory full).
pub const IOC_BO_CREATE: u32 = ioc(IOC_READ | IOC_WRITE, IOCTL_MAGIC, 0x01, core::mem::size_of::<BoCreate>());
/// `_IOW(IOCTL_MAGIC, 0x02, struct m4npu_bo_destroy)`: `ENOENT` for a handle
/// this context does not have. Memory is freed once no mapping uses it.
pub const IOC_BO_DESTROY: u32 = ioc(IOC_WRITE, IOCTL_MAGIC, 0x02, core::mem::size_of::<BoDestroy>());

/// Argument of [`IOC_ADAPTER_LOAD`]: an adapter blob in a sealed memfd.
///
/// The memfd must carry `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`, so its
/// content cannot change while the kernel reads it. The blob is copied into
/// the context's NPU memory and charged to its quota.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdapterLoad {
    /// In: the memfd.
    pub fd: i32,
    /// In: must be 0.
    pub flags: u32,
    /// In: where the blob starts in the memfd.
    pub offset: u64,
    /// In: bytes of the blob.
    pub length: u64,
    /// Out: adapter handle, valid in this context only; never 0.
    pub handle: u32,
    /// Must be 0.
    pub pad: u32,
}

/// Argument of [`IOC_ADAPTER_UNLOAD`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdapterUnload {
    pub handle: u32,
    /// Must be 0.
    pub pad: u32,
}

/// `_IOWR(IOCTL_MAGIC, 0x03, struct m4npu_adapter_load)`. Errors: `EBADF`
/// (no such fd), `EOPNOTSUPP` (not a memfd), `EPERM` (seals missing),
/// `EINVAL` (flags, pad, range outside the file), `EFBIG` (larger than the
/// quota), `ENOEXEC` (not a valid adapter blob), `EBADMSG` (checksum),
/// `ENODEV` (no foundation model loaded), `EMEDIUMTYPE` (trained for
/// another foundation model), `EDQUOT`, `ENOSPC`.
pub const IOC_ADAPTER_LOAD: u32 = ioc(IOC_READ | IOC_WRITE, IOCTL_MAGIC, 0x03, core::mem::size_of::<AdapterLoad>());
/// `_IOW(IOCTL_MAGIC, 0x04, struct m4npu_adapter_unload)`: `ENOENT` for a
/// handle this context does not have.
pub const IOC_ADAPTER_UNLOAD: u32 = ioc(IOC_WRITE, IOCTL_MAGIC, 0x04, core::mem::size_of::<AdapterUnload>());

/// Argument of [`IOC_MODEL_META`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelMeta {
    /// In: userspace buffer for the metadata.
    pub addr: u64,
    /// In: bytes of the buffer. Out: bytes of the metadata (copied only if
    /// they fit; call again with a larger buffer otherwise).
    pub size: u64,
}

/// `_IOWR(IOCTL_MAGIC, 0x06, struct m4npu_model_meta)`: the pinned model's
/// metadata (UTF-8 JSON: sub-models, their configuration and tokenizers),
/// so apps tokenize exactly as the model expects. `ENODEV` without a model,
/// `EFAULT` for a bad buffer.
pub const IOC_MODEL_META: u32 = ioc(IOC_READ | IOC_WRITE, IOCTL_MAGIC, 0x06, core::mem::size_of::<ModelMeta>());

// ---- Jobs ----

/// A byte range of one of the context's buffer objects.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BoRange {
    /// BO handle in the submitting context; 0 = no range (only where optional).
    pub handle: u32,
    /// Must be 0.
    pub pad: u32,
    /// Start in the BO.
    pub offset: u64,
    /// Bytes; `offset + length` must lie inside the BO.
    pub length: u64,
}

/// [`Job::op`]: pooled embedding of the input (text encoder or backbone).
pub const JOB_OP_EMBED: u16 = 1;
/// [`Job::op`]: the adapter's task head on the input (needs an adapter).
pub const JOB_OP_CLASSIFY: u16 = 2;
/// [`Job::op`]: one generation step on the backbone, prefill or decode; the
/// state range holds the KV cache of the session (needs a state range).
pub const JOB_OP_GENERATE: u16 = 3;
/// [`Job::op`]: the device copies the input to the output unchanged
/// (bring-up and tests of the job path).
pub const JOB_OP_ECHO: u16 = 4;
/// One past the highest known op.
pub const JOB_OP_COUNT: u16 = 5;

/// [`Job::priority`]: the default.
pub const JOB_PRIO_NORMAL: u8 = 0;
/// [`Job::priority`]: dispatched before every normal and low job. Needs
/// `CAP_SYS_NICE`, as realtime priorities do (`EPERM` otherwise).
pub const JOB_PRIO_HIGH: u8 = 1;
/// [`Job::priority`]: dispatched when nothing else waits.
///
/// Within a priority the driver serves contexts in turn (start-time fair
/// queuing): a context with many jobs waiting delays another context's next
/// job by at most one job of its own, whatever its backlog.
pub const JOB_PRIO_LOW: u8 = 2;

/// A job: what the NPU runs, on what, into where. The payload of
/// [`URING_CMD_RUN`] (in the SQE's command area, which needs a ring set up
/// with `IORING_SETUP_SQE128`) and the argument of [`IOC_RUN`].
///
/// Everything is checked against the submitting context before the job is
/// queued; the job keeps its adapter and buffers alive until it completes,
/// even if they are unloaded or destroyed meanwhile. Input and output (and
/// state) must not overlap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Job {
    /// Adapter handle in this context; 0 = the foundation model alone.
    pub adapter: u32,
    /// `JOB_OP_*`.
    pub op: u16,
    /// `JOB_PRIO_*`.
    pub priority: u8,
    /// Must be 0.
    pub flags: u8,
    /// What the device reads (tokens or features, as the op defines).
    pub input: BoRange,
    /// Where the device writes its result.
    pub output: BoRange,
    /// Read and written by the device (a generation session's KV cache);
    /// handle 0 for none.
    pub state: BoRange,
}

/// Room for a command in a 128-byte SQE (`IORING_SETUP_SQE128`).
pub const URING_CMD_SQE128_BYTES: usize = 80;

/// `_IOW(IOCTL_MAGIC, 0x05, struct m4npu_job)`: run a job and wait for it.
/// Returns the number of output bytes. Errors, in the order checked:
/// `EOPNOTSUPP` (unknown op), `EINVAL` (flags, pad, priority, empty input
/// or output, a state range with handle 0 but an offset or length,
/// `JOB_OP_CLASSIFY` without an adapter, `JOB_OP_GENERATE` without state),
/// `ENODEV` (no foundation model), `ENOENT` (unknown handle), `EINVAL` (a
/// range outside its BO, overlapping ranges), `ENXIO` (no device serving
/// jobs, and none recovering: see [`HW_FLAG_RECOVERY`]), `EBUSY` (the context's in-flight limit); then `EIO` (the device
/// failed or went away) or the `-errno` the device reported for the job.
/// Only a fatal signal ends the wait early. Refused descriptors do not count
/// in fdinfo's job counters; a job whose app went away counts as failed.
pub const IOC_RUN: u32 = ioc(IOC_WRITE, IOCTL_MAGIC, 0x05, core::mem::size_of::<Job>());

/// `IORING_OP_URING_CMD` opcode (`sqe->cmd_op`) on `/dev/m4npu`: run the
/// [`Job`] in the SQE's command area. The CQE's `res` is the number of output
/// bytes or `-errno` as for [`IOC_RUN`] (`ECANCELED` when the ring goes away
/// first). A `cmd_op` the driver does not know is `EOPNOTSUPP`; a ring
/// without `IORING_SETUP_SQE128` is `EINVAL`.
pub const URING_CMD_RUN: u32 = ioc(IOC_WRITE, IOCTL_MAGIC, 0x10, core::mem::size_of::<Job>());

// ---- The device side: /dev/m4npu-hw ----

/// Misc device node of the device side (mode 0600, one open at a time).
pub const HW_DEVICE_NAME: &str = "m4npu-hw";
/// Queues a device may use (one per worker).
pub const HW_MAX_QUEUES: u16 = 16;
/// Jobs a queue may hold at once (its tags are `0..HW_QUEUE_DEPTH`).
pub const HW_QUEUE_DEPTH: u16 = 64;

/// Argument of [`IOC_HW_GET_INFO`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwInfo {
    /// [`UAPI_VERSION`].
    pub uapi_version: u32,
    /// `INFO_*` flags.
    pub flags: u32,
    /// Bytes of NPU memory; `mmap()` offset `a` of the device file is device
    /// address `a`.
    pub pool_size: u64,
    /// Device address of the foundation model's blob (its header first).
    pub model_addr: u64,
    /// Bytes of the blob; 0 without a model.
    pub model_size: u64,
    /// Bytes from `model_addr` that may only be mapped read-only.
    pub model_region: u64,
    /// [`HW_MAX_QUEUES`].
    pub max_queues: u16,
    /// [`HW_QUEUE_DEPTH`].
    pub queue_depth: u16,
    /// Must be 0.
    pub pad: u32,
}

/// `_IOR(IOCTL_MAGIC, 0x20, struct m4npu_hw_info)`.
pub const IOC_HW_GET_INFO: u32 = ioc(IOC_READ, IOCTL_MAGIC, 0x20, core::mem::size_of::<HwInfo>());

/// Payload of the device-side uring commands (fits a 64-byte SQE), after
/// ublk's `struct ublksrv_io_cmd`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwCmd {
    /// Queue, below [`HW_MAX_QUEUES`].
    pub queue: u16,
    /// Slot in the queue, below [`HW_QUEUE_DEPTH`].
    pub tag: u16,
    /// [`URING_CMD_HW_COMMIT_AND_FETCH`]: output bytes of the finished job
    /// (at most its output length) or `-errno` for the app; else 0.
    pub result: i32,
    /// Userspace address of a [`HwJob`] that the driver fills when it hands
    /// this slot a job: at any time while the command is outstanding, from
    /// the device's own task, so the memory must stay valid until then.
    pub addr: u64,
}

/// A range of NPU memory by device address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwRange {
    pub addr: u64,
    /// 0 = absent.
    pub len: u64,
}

/// A job as the device sees it: device addresses only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwJob {
    /// Unique while the module is loaded.
    pub id: u64,
    /// The submitting context ([`Info::context_id`]).
    pub context_id: u64,
    /// `JOB_OP_*`.
    pub op: u16,
    /// `JOB_PRIO_*`.
    pub priority: u8,
    pub flags: u8,
    pub pad: u32,
    /// The adapter's blob (header first); `len` 0 for none.
    pub adapter: HwRange,
    pub input: HwRange,
    pub output: HwRange,
    /// `len` 0 for none.
    pub state: HwRange,
}

/// `IORING_OP_URING_CMD` on `/dev/m4npu-hw`: make slot (`queue`, `tag`)
/// ready for a job. Completes with 0 once a [`HwJob`] was written to `addr`,
/// `EFAULT` if it could not be, `ECANCELED` when the ring goes away.
/// `EINVAL` for a queue or tag out of range or a nonzero `result`, `EBUSY`
/// if the slot already waits or holds a job.
///
/// A session ends when its opener closes the device file (or exits), even
/// while the ring still holds the file: a restarted device attaches at once.
/// Commands of an ended session fail with `ENXIO`.
pub const URING_CMD_HW_FETCH: u32 = ioc(IOC_READ | IOC_WRITE, IOCTL_MAGIC, 0x21, core::mem::size_of::<HwCmd>());
/// Completes the slot's job with `result`, then waits for the next as
/// [`URING_CMD_HW_FETCH`]. `EINVAL` if the slot holds no job, or the result
/// is neither a valid `-errno` nor within the job's output length (the app
/// then gets `EIO`).
pub const URING_CMD_HW_COMMIT_AND_FETCH: u32 =
    ioc(IOC_READ | IOC_WRITE, IOCTL_MAGIC, 0x22, core::mem::size_of::<HwCmd>());

/// Payload of the batch commands on `/dev/m4npu-hw` (fits a 64-byte SQE),
/// after ublk's `BATCH_IO`: many jobs fetched, or committed, per command.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwBatchCmd {
    /// Queue, below [`HW_MAX_QUEUES`].
    pub queue: u16,
    /// Entries at `addr`: room for this many [`HwBatchJob`]s
    /// ([`URING_CMD_HW_FETCH_BATCH`]) or this many [`HwBatchResult`]s
    /// ([`URING_CMD_HW_COMMIT_BATCH`]); 1 to [`HW_QUEUE_DEPTH`].
    pub count: u16,
    /// Must be 0.
    pub pad: u32,
    /// Userspace address of the entries.
    pub addr: u64,
}

/// An entry [`URING_CMD_HW_FETCH_BATCH`] writes: a job and the slot (tag)
/// of the queue it holds until committed.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwBatchJob {
    pub tag: u16,
    pub pad: [u16; 3],
    pub job: HwJob,
}

/// An entry [`URING_CMD_HW_COMMIT_BATCH`] reads: a held slot and its job's
/// result, as [`HwCmd::result`] of [`URING_CMD_HW_COMMIT_AND_FETCH`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwBatchResult {
    pub tag: u16,
    /// Must be 0.
    pub pad: u16,
    pub result: i32,
}

/// `IORING_OP_URING_CMD` on `/dev/m4npu-hw`: wait for jobs for queue
/// `queue`. Completes with the number of jobs (1 to `count`) written to
/// `addr` as [`HwBatchJob`]s, each holding an idle slot of the queue until
/// committed (slots waiting with a single FETCH are left to it). The last
/// of the `count` places only takes a job of a context with nothing else on
/// the device, so that one app's backlog cannot hold every place (fewer
/// jobs come back rather than that); `ECANCELED` when the ring goes away. `EINVAL` for a queue out of range,
/// a count of 0 or above [`HW_QUEUE_DEPTH`] or a nonzero pad, `EBUSY` if the
/// queue already has a FETCH_BATCH outstanding, `EFAULT` if the entries could
/// not be written (those jobs fail with `EIO`). As with single FETCHes, the
/// driver writes the entries from the device's own task.
pub const URING_CMD_HW_FETCH_BATCH: u32 =
    ioc(IOC_READ | IOC_WRITE, IOCTL_MAGIC, 0x24, core::mem::size_of::<HwBatchCmd>());
/// Completes the jobs of the `count` [`HwBatchResult`]s at `addr` at once;
/// the CQE's `res` is `count`. The whole batch is refused with `EINVAL`,
/// nothing committed, if an entry names a tag out of range, not holding a
/// job, or twice, or has a nonzero pad; `EFAULT` if the entries cannot be
/// read. A result the job cannot take (see [`URING_CMD_HW_COMMIT_AND_FETCH`])
/// fails that job with `EIO`. It does not fetch: keep a FETCH_BATCH
/// outstanding for that.
pub const URING_CMD_HW_COMMIT_BATCH: u32 = ioc(IOC_WRITE, IOCTL_MAGIC, 0x25, core::mem::size_of::<HwBatchCmd>());

/// [`HwSetFlags::flags`]: recover from the device's death. Jobs the device
/// held when its session ended go back to the front of their queues instead
/// of failing, and jobs keep queueing, for the driver's recovery window
/// (module parameter `recovery_ms`); a device that attaches within it
/// receives them again, past it they fail with `EIO` (after ublk's
/// `UBLK_F_USER_RECOVERY`). Every job still completes exactly once.
///
/// A job may therefore run twice, and the device must make that safe: a job
/// only reads its input and adapter, overwrites its output, and rewrites
/// its state in place. `JOB_OP_GENERATE` writes the KV rows at its own
/// position, and vnpud's state header records the id ([`HwJob::id`]) of the
/// job that last advanced it, so a re-run starts where the first run did
/// and writes what it wrote (`m4npu_format::job_io::StateHeader`).
pub const HW_FLAG_RECOVERY: u64 = 1 << 0;
/// Every flag [`IOC_HW_SET_FLAGS`] knows.
pub const HW_FLAGS_ALL: u64 = HW_FLAG_RECOVERY;

/// Argument of [`IOC_HW_SET_FLAGS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HwSetFlags {
    /// `HW_FLAG_*`; replaces the session's flags.
    pub flags: u64,
}

/// `_IOW(IOCTL_MAGIC, 0x23, struct m4npu_hw_set_flags)`: set the session's
/// flags (none at open). `EINVAL` for an unknown flag. A device clears
/// [`HW_FLAG_RECOVERY`] before a clean stop, so that waiting jobs fail at
/// once instead of waiting out the window.
pub const IOC_HW_SET_FLAGS: u32 = ioc(IOC_WRITE, IOCTL_MAGIC, 0x23, core::mem::size_of::<HwSetFlags>());

// ---- Adapter blobs (`.m4a`) ----

/// First bytes of an adapter blob.
pub const ADAPTER_MAGIC: [u8; 8] = *b"M4NPUAD\0";
/// Version of the adapter layout.
pub const ADAPTER_FORMAT_VERSION: u32 = 1;

/// Header at offset 0 of an adapter blob: the firmware layout (tensor
/// table of [`FwTensor`], JSON metadata, [`FW_ALIGN`]-aligned data) plus the
/// foundation model it was trained for. The metadata names the task, labels,
/// LoRA rank and targets; the tensors hold LoRA matrices, the task head and
/// the optional input projection.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterHeader {
    /// [`ADAPTER_MAGIC`].
    pub magic: [u8; 8],
    /// [`ADAPTER_FORMAT_VERSION`].
    pub format_version: u32,
    /// `size_of::<AdapterHeader>()`.
    pub header_size: u32,
    /// Bytes of the whole blob.
    pub total_size: u64,
    pub tensor_table_offset: u64,
    pub tensor_count: u32,
    /// `size_of::<FwTensor>()`.
    pub tensor_entry_size: u32,
    pub meta_offset: u64,
    pub meta_size: u64,
    pub data_offset: u64,
    pub data_size: u64,
    /// NUL-padded adapter name.
    pub name: [u8; 64],
    /// SHA-256 of bytes `header_size..total_size`.
    pub content_hash: [u8; 32],
    /// Content hash of the foundation model this adapter was trained for.
    pub base_model_hash: [u8; 32],
    /// Must be 0.
    pub reserved: [u8; 32],
}

/// Where a blob's sections lie: the part of [`FwHeader`] and
/// [`AdapterHeader`] that both formats share and check alike.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobSections {
    pub header_size: u64,
    pub total_size: u64,
    pub tensor_table_offset: u64,
    pub tensor_count: u32,
    pub tensor_entry_size: u32,
    pub meta_offset: u64,
    pub meta_size: u64,
    pub data_offset: u64,
    pub data_size: u64,
}

macro_rules! blob_sections {
    ($header:ty) => {
        impl $header {
            /// The section fields.
            pub const fn sections(&self) -> BlobSections {
                BlobSections {
                    header_size: self.header_size as u64,
                    total_size: self.total_size,
                    tensor_table_offset: self.tensor_table_offset,
                    tensor_count: self.tensor_count,
                    tensor_entry_size: self.tensor_entry_size,
                    meta_offset: self.meta_offset,
                    meta_size: self.meta_size,
                    data_offset: self.data_offset,
                    data_size: self.data_size,
                }
            }
        }
    };
}

blob_sections!(FwHeader);
blob_sections!(AdapterHeader);

// ---- The foundation model's firmware blob: /lib/firmware/m4npu/<name> ----

/// First bytes of a firmware blob.
pub const FW_MAGIC: [u8; 8] = *b"M4NPUFW\0";
/// Version of the layout below.
pub const FW_FORMAT_VERSION: u32 = 1;
/// Alignment of the data section and of every tensor in it.
pub const FW_ALIGN: u64 = 4096;
/// Bytes of a tensor's name field, its NUL included.
pub const FW_NAME_LEN: usize = 64;
/// Most tensors a firmware or adapter blob may hold; their names are
/// unique (a lookup by name must not depend on table order).
pub const FW_MAX_TENSORS: u32 = 4096;

/// Tensor element formats (numbered as ggml's `ggml_type`).
pub const FW_DTYPE_F32: u32 = 0;
/// IEEE half.
pub const FW_DTYPE_F16: u32 = 1;
/// Blocks of 32: f16 scale, f16 min, 16 bytes of 4-bit quants.
pub const FW_DTYPE_Q4_1: u32 = 3;
/// Blocks of 32: f16 scale, 32 int8 quants.
pub const FW_DTYPE_Q8_0: u32 = 8;
/// Plain int8.
pub const FW_DTYPE_I8: u32 = 24;
/// Plain int32.
pub const FW_DTYPE_I32: u32 = 26;
/// Opaque bytes (engine-specific packed layouts).
pub const FW_DTYPE_BYTES: u32 = 0x100;

/// Header at offset 0 of a firmware blob. All offsets are from the blob's
/// start; the kernel checks every one against `total_size`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwHeader {
    /// [`FW_MAGIC`].
    pub magic: [u8; 8],
    /// [`FW_FORMAT_VERSION`].
    pub format_version: u32,
    /// `size_of::<FwHeader>()`.
    pub header_size: u32,
    /// Bytes of the whole blob.
    pub total_size: u64,
    /// Offset of `tensor_count` [`FwTensor`] entries.
    pub tensor_table_offset: u64,
    /// Number of tensors.
    pub tensor_count: u32,
    /// `size_of::<FwTensor>()`.
    pub tensor_entry_size: u32,
    /// Offset and size of the metadata: UTF-8 JSON (architecture,
    /// hyper-parameters, tokenizer) for the device and the app library.
    pub meta_offset: u64,
    pub meta_size: u64,
    /// Offset ([`FW_ALIGN`]-aligned) and size of the tensor data.
    pub data_offset: u64,
    pub data_size: u64,
    /// NUL-padded model name.
    pub name: [u8; 64],
    /// SHA-256 of bytes `header_size..total_size`: the model's identity,
    /// verified by the kernel at load and bound into every adapter.
    pub content_hash: [u8; 32],
    /// Must be 0.
    pub reserved: [u8; 32],
}

/// One tensor of the firmware.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FwTensor {
    /// NUL-padded name (GGUF / safetensors naming, prefixed by sub-model).
    pub name: [u8; FW_NAME_LEN],
    /// `FW_DTYPE_*`.
    pub dtype: u32,
    /// Number of used entries in `dims`.
    pub ndim: u32,
    /// Dimensions, innermost first (GGUF order); unused ones are 1.
    pub dims: [u64; 4],
    /// Offset in the data section, [`FW_ALIGN`]-aligned.
    pub offset: u64,
    /// Bytes.
    pub size: u64,
}
