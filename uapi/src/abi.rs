//! ABI of `/dev/m4npu`. Shared verbatim with the kernel module, so: no crate
//! attributes, no dependencies, only `core`.

/// Bumped on any incompatible change; userspace refuses a different major.
pub const UAPI_VERSION_MAJOR: u16 = 0;
/// Bumped when something is added compatibly.
pub const UAPI_VERSION_MINOR: u16 = 1;
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
    pub name: [u8; 64],
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
