use std::path::PathBuf;

use nix::errno::Errno;

/// Errors of the m4npu library, each worded for the app developer: print
/// them with `{}` (Display). Match a variant to act on a particular cause.
///
/// ```no_run
/// use m4npu::{Device, Error};
/// match Device::open().and_then(|dev| dev.embed("hello")) {
///     Ok(v) => println!("{} dimensions", v.len()),
///     Err(Error::NoNpuDevice) => eprintln!("no device serves jobs yet; retry later"),
///     Err(e) => eprintln!("embedding failed: {e}"),
/// }
/// ```
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
    /// The job descriptor is invalid (found by the library's checks, or
    /// `EINVAL` from the driver).
    #[error("invalid job: {0}")]
    InvalidJob(String),
    /// The driver does not know the job's operation.
    #[error("the driver does not support this job operation (is the m4npu module older than this library?)")]
    UnsupportedJobOp,
    /// The job names a buffer or adapter handle this context does not have.
    #[error("the job names a buffer or adapter this context does not have (handles belong to one open of /dev/m4npu)")]
    UnknownHandle,
    /// No process has `/dev/m4npu-hw` open to execute jobs.
    #[error("no NPU device is serving jobs (is vnpud running?)")]
    NoNpuDevice,
    /// A high-priority job from a process without `CAP_SYS_NICE`.
    #[error("high-priority jobs need CAP_SYS_NICE, as realtime scheduling does: submit at normal priority")]
    PriorityNotPermitted,
    /// The context has as many jobs in flight as the driver allows.
    #[error("too many jobs in flight on this context (module parameter ctx_max_jobs): wait for some to complete before submitting more")]
    TooManyJobs,
    /// The NPU device failed the job, reported an invalid result or went
    /// away while the job was queued or running (and, if it asked for
    /// recovery, no device came back within the driver's window).
    #[error("the NPU device failed or went away while the job was queued or running")]
    DeviceFailed,
    /// The io_uring the job was submitted on went away before it completed.
    #[error("the job was canceled: its io_uring was torn down before the job completed")]
    Canceled,
    /// A signal interrupted a synchronous job; its result is discarded.
    #[error("interrupted by a signal while waiting for the job; its result is discarded")]
    Interrupted,
    /// The device reported an error of its own for the job.
    #[error("the job failed on the NPU: {0}{hint}", hint = device_hint(*.0))]
    JobFailed(Errno),
    /// A device-side uring command failed.
    #[error("{op} on queue {queue} tag {tag} failed: {source}")]
    HwCommand { op: &'static str, queue: u16, tag: u16, source: Errno },
    /// The driver handed the device a job it cannot safely serve.
    #[error("invalid job from the driver: {0}")]
    BadHwJob(String),
    /// The loaded model's metadata lacks what a task call needs.
    #[error("foundation model metadata: {0}")]
    ModelMeta(String),
    /// Text could not be tokenized, or a tokenizer is not the model's.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

impl Error {
    /// The errno behind this error, where there is one: what the driver
    /// returned, or what it would have returned for a job the library
    /// refused itself.
    ///
    /// ```
    /// use m4npu::{Errno, Error};
    /// assert_eq!(Error::TooManyJobs.errno(), Some(Errno::EBUSY));
    /// assert_eq!(Error::InvalidJob("the input range is empty".into()).errno(), Some(Errno::EINVAL));
    /// assert_eq!(Error::Tokenizer("bad text".into()).errno(), None);
    /// ```
    pub fn errno(&self) -> Option<Errno> {
        Some(match self {
            Error::Open { source, .. } | Error::Ioctl { source, .. } | Error::HwCommand { source, .. } => *source,
            Error::JobFailed(e) => *e,
            Error::Io { source, .. } => Errno::from_raw(source.raw_os_error()?),
            Error::QuotaExceeded { .. } => Errno::EDQUOT,
            Error::NpuMemoryFull { .. } => Errno::ENOSPC,
            Error::WrongBaseModel { .. } => Errno::EMEDIUMTYPE,
            Error::AdapterTooLarge { .. } => Errno::EFBIG,
            Error::AdapterNotSealed => Errno::EPERM,
            Error::AdapterNotMemfd | Error::UnsupportedJobOp => Errno::EOPNOTSUPP,
            Error::NoModel => Errno::ENODEV,
            Error::InvalidJob(_) => Errno::EINVAL,
            Error::UnknownHandle => Errno::ENOENT,
            Error::NoNpuDevice => Errno::ENXIO,
            Error::TooManyJobs => Errno::EBUSY,
            Error::PriorityNotPermitted => Errno::EPERM,
            Error::DeviceFailed => Errno::EIO,
            Error::Canceled => Errno::ECANCELED,
            Error::Interrupted => Errno::EINTR,
            Error::UapiMismatch { .. }
            | Error::InvalidAdapter(_)
            | Error::FdInfo(_)
            | Error::BadHwJob(_)
            | Error::ModelMeta(_)
            | Error::Tokenizer(_) => return None,
        })
    }
}

/// The error for a job that failed with `e`, from `IOC_RUN` or a CQE.
pub(crate) fn job_error(e: Errno) -> Error {
    match e {
        Errno::EINVAL => Error::InvalidJob("the driver refused the descriptor (a field, range or overlap)".into()),
        Errno::EOPNOTSUPP => Error::UnsupportedJobOp,
        Errno::ENOENT => Error::UnknownHandle,
        Errno::ENODEV => Error::NoModel,
        Errno::ENXIO => Error::NoNpuDevice,
        Errno::EBUSY => Error::TooManyJobs,
        Errno::EPERM => Error::PriorityNotPermitted,
        Errno::EIO => Error::DeviceFailed,
        Errno::ECANCELED => Error::Canceled,
        Errno::EINTR => Error::Interrupted,
        e => Error::JobFailed(e),
    }
}

/// What the device's own errnos (vnpud's, see its `execute` module) mean.
fn device_hint(e: Errno) -> &'static str {
    match e {
        Errno::ENOEXEC => " (the NPU cannot run this adapter: its tensors or metadata do not fit the loaded foundation model)",
        Errno::EBADMSG => " (the NPU could not read the job's input or state: not in the m4npu_format::job_io layout)",
        Errno::EOVERFLOW => " (the output range is too small for the result)",
        Errno::ENOSPC => " (the generation session's KV cache is full)",
        _ => "",
    }
}

fn open_hint(e: Errno) -> &'static str {
    match e {
        Errno::ENOENT => " (is the m4npu module loaded?)",
        Errno::EACCES => " (no permission for the device node)",
        Errno::EBUSY => " (another process already serves as the NPU device: one open at a time)",
        _ => "",
    }
}

/// Result of the m4npu library.
pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_errnos_get_developer_messages() {
        let cases = [
            (Errno::ENXIO, "no NPU device is serving jobs (is vnpud running?)"),
            (Errno::EBUSY, "ctx_max_jobs"),
            (Errno::EPERM, "CAP_SYS_NICE"),
            (Errno::EIO, "NPU device failed or went away"),
            (Errno::ECANCELED, "io_uring was torn down"),
            (Errno::ENOENT, "handles belong to one open"),
            (Errno::EINTR, "interrupted by a signal"),
            (Errno::ENOEXEC, "cannot run this adapter"),
            (Errno::ENOSPC, "KV cache is full"),
        ];
        for (e, words) in cases {
            let err = job_error(e);
            assert!(err.to_string().contains(words), "{e}: {err}");
            assert_eq!(err.errno(), Some(e), "{err}");
        }
    }

    #[test]
    fn every_job_errno_survives_the_mapping() {
        for e in [Errno::EINVAL, Errno::EOPNOTSUPP, Errno::ENODEV, Errno::EPROTO, Errno::ENOMEM, Errno::EBADMSG] {
            assert_eq!(job_error(e).errno(), Some(e));
        }
        // A device errno the library has no words for is named as is.
        assert!(job_error(Errno::EPROTO).to_string().contains(&Errno::EPROTO.to_string()));
    }
}
