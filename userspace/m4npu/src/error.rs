use std::path::PathBuf;

use nix::errno::Errno;

/// Errors of the m4npu library, each worded for the app developer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The device node could not be opened.
    #[error("cannot open {}: {source}{}", path.display(), open_hint(*source))]
    Open { path: PathBuf, source: Errno },
    /// The driver speaks another major UAPI version than this library.
    #[error("driver UAPI {}.{} is incompatible with this library's {}.{}",
        driver >> 16, driver & 0xffff, library >> 16, library & 0xffff)]
    UapiMismatch { driver: u32, library: u32 },
    /// The context's NPU memory quota (module parameter `ctx_quota_mb`) is used up.
    #[error("context memory quota exceeded: {used} of {quota} bytes used, {requested} more requested")]
    QuotaExceeded { requested: u64, used: u64, quota: u64 },
    /// The NPU memory pool has no free range large enough.
    #[error("NPU memory is full: no free range of {requested} bytes (module parameter pool_mb)")]
    NpuMemoryFull { requested: u64 },
    /// The adapter was trained for another foundation model than the one
    /// the device runs.
    #[error("adapter was trained for foundation model {}, this device runs {}",
        crate::adapter::describe_hash(adapter), crate::adapter::describe_hash(device))]
    WrongBaseModel { adapter: Option<[u8; 32]>, device: Option<[u8; 32]> },
    /// The adapter blob is malformed.
    #[error("invalid adapter: {0}")]
    InvalidAdapter(String),
    /// An adapter larger than the whole context quota.
    #[error("adapter of {size} bytes exceeds the context memory quota of {quota} bytes")]
    AdapterTooLarge { size: u64, quota: u64 },
    /// The memfd lacks `F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW`.
    #[error("adapter memfd is not sealed against writes, shrinking and growing (F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW)")]
    AdapterNotSealed,
    /// The adapter fd is not a memfd.
    #[error("adapters must be passed in a sealed memfd, not another kind of file")]
    AdapterNotMemfd,
    /// The driver has no foundation model pinned.
    #[error("no foundation model is loaded (check the m4npu firmware parameter and the kernel log)")]
    NoModel,
    /// Local I/O while preparing a request.
    #[error("{what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
    /// The driver's fdinfo could not be read or parsed.
    #[error("cannot read the driver's fdinfo: {0}")]
    FdInfo(String),
    /// An ioctl failed with an errno the library has no better words for.
    #[error("{op} failed: {source}")]
    Ioctl { op: &'static str, source: Errno },
}

fn open_hint(e: Errno) -> &'static str {
    match e {
        Errno::ENOENT => " (is the m4npu module loaded?)",
        Errno::EACCES => " (no permission for the device node)",
        _ => "",
    }
}

/// Result of the m4npu library.
pub type Result<T> = std::result::Result<T, Error>;
