use std::os::fd::RawFd;

use crate::{Error, Result};

/// A context's entry in `/proc/self/fdinfo/<fd>` (DRM usage-stats keys):
/// [`Device::usage`](crate::Device::usage) for this process's own context,
/// [`FdInfo::all_contexts`] for every one.
///
/// ```no_run
/// let u = m4npu::Device::open()?.usage()?;
/// println!("context {}: {} of {} bytes", u.client_id, u.memory_bytes, u.quota_bytes);
/// # Ok::<(), m4npu::Error>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FdInfo {
    /// `drm-client-id`: the context id.
    pub client_id: u64,
    /// `drm-memory-npu`: NPU memory held.
    pub memory_bytes: u64,
    /// `m4npu-quota`.
    pub quota_bytes: u64,
    /// `m4npu-bos`: live buffer objects.
    pub buffers: u64,
    /// `m4npu-adapters`: loaded adapters.
    pub adapters: u64,
    /// `m4npu-pid`: process that opened the device.
    pub pid: u32,
    /// `drm-engine-npu`: time the device spent on this context's jobs.
    pub engine_ns: u64,
    /// `m4npu-jobs-submitted`: jobs the driver accepted.
    pub jobs_submitted: u64,
    /// `m4npu-jobs-completed`: jobs that finished with a result.
    pub jobs_completed: u64,
    /// `m4npu-jobs-failed`: jobs that finished with an error (or whose
    /// submitter went away first).
    pub jobs_failed: u64,
    /// `m4npu-jobs-inflight`: jobs queued or at the device.
    pub jobs_inflight: u64,
    /// `m4npu-jobs-queued`: jobs waiting in the driver for the device.
    pub jobs_queued: u64,
    /// `m4npu-queue-delay`: time this context's jobs have waited in the
    /// driver for the device, all told.
    pub queue_delay_ns: u64,
}

fn kib(v: &str) -> Option<u64> {
    v.strip_suffix(" KiB")?.trim().parse::<u64>().ok()?.checked_mul(1024)
}

fn ns(v: &str) -> Option<u64> {
    v.strip_suffix(" ns")?.trim().parse().ok()
}

impl FdInfo {
    /// Parses the fdinfo text of an m4npu file.
    ///
    /// ```
    /// let text = "drm-driver:\tm4npu\ndrm-client-id:\t7\ndrm-memory-npu:\t8 KiB\nm4npu-jobs-inflight:\t3\n";
    /// let info = m4npu::FdInfo::parse(text)?;
    /// assert_eq!((info.client_id, info.memory_bytes, info.jobs_inflight), (7, 8192, 3));
    /// assert!(m4npu::FdInfo::parse("pos:\t0\n").is_err()); // not an m4npu file
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn parse(text: &str) -> Result<Self> {
        let mut info = FdInfo::default();
        let mut driver = false;
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            let v = v.trim();
            let bad = || Error::FdInfo(format!("bad value in {line:?}"));
            match k {
                "drm-driver" => driver = v == "m4npu",
                "drm-client-id" => info.client_id = v.parse().map_err(|_| bad())?,
                "drm-memory-npu" => info.memory_bytes = kib(v).ok_or_else(bad)?,
                "m4npu-quota" => info.quota_bytes = kib(v).ok_or_else(bad)?,
                "m4npu-bos" => info.buffers = v.parse().map_err(|_| bad())?,
                "m4npu-adapters" => info.adapters = v.parse().map_err(|_| bad())?,
                "m4npu-pid" => info.pid = v.parse().map_err(|_| bad())?,
                "drm-engine-npu" => info.engine_ns = ns(v).ok_or_else(bad)?,
                "m4npu-jobs-submitted" => info.jobs_submitted = v.parse().map_err(|_| bad())?,
                "m4npu-jobs-completed" => info.jobs_completed = v.parse().map_err(|_| bad())?,
                "m4npu-jobs-failed" => info.jobs_failed = v.parse().map_err(|_| bad())?,
                "m4npu-jobs-inflight" => info.jobs_inflight = v.parse().map_err(|_| bad())?,
                "m4npu-jobs-queued" => info.jobs_queued = v.parse().map_err(|_| bad())?,
                "m4npu-queue-delay" => info.queue_delay_ns = ns(v).ok_or_else(bad)?,
                _ => {}
            }
        }
        if !driver {
            return Err(Error::FdInfo("not an m4npu file (no drm-driver: m4npu)".into()));
        }
        Ok(info)
    }

    /// Every open context on the system that this process may inspect
    /// (all of them for root): each file of `device` (the `/dev/m4npu`
    /// node) found under `/proc/<pid>/fd`, once per context however many
    /// fds or processes share it. What `m4 top` shows.
    ///
    /// ```no_run
    /// for c in m4npu::FdInfo::all_contexts(&m4npu::Device::default_path())? {
    ///     println!("context {} of pid {}: {} bytes", c.client_id, c.pid, c.memory_bytes);
    /// }
    /// # Ok::<(), m4npu::Error>(())
    /// ```
    pub fn all_contexts(device: &std::path::Path) -> Result<Vec<Self>> {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(device).map_err(|e| Error::FdInfo(format!("{}: {e}", device.display())))?.rdev();
        let mut seen = std::collections::BTreeMap::new();
        let procs = std::fs::read_dir("/proc").map_err(|e| Error::FdInfo(format!("/proc: {e}")))?;
        for pid in procs.flatten().filter(|p| p.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))) {
            // Processes come and go, and others' fds may be closed to us.
            let Ok(fds) = std::fs::read_dir(pid.path().join("fd")) else { continue };
            for fd in fds.flatten() {
                if std::fs::metadata(fd.path()).map_or(true, |m| m.rdev() != rdev) {
                    continue;
                }
                let info = pid.path().join("fdinfo").join(fd.file_name());
                if let Some(c) = std::fs::read_to_string(info).ok().and_then(|t| Self::parse(&t).ok()) {
                    seen.insert(c.client_id, c);
                }
            }
        }
        Ok(seen.into_values().collect())
    }

    pub(crate) fn read(fd: RawFd) -> Result<Self> {
        let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).map_err(|e| Error::FdInfo(e.to_string()))?;
        Self::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_driver_keys() {
        let t = "pos:\t0\nflags:\t02\ndrm-driver:\tm4npu\ndrm-client-id:\t7\ndrm-memory-npu:\t8 KiB\n\
                 drm-engine-npu:\t0 ns\nm4npu-pid:\t42\nm4npu-bos:\t2\nm4npu-adapters:\t1\nm4npu-quota:\t65536 KiB\n";
        let i = FdInfo::parse(t).unwrap();
        let want =
            FdInfo { client_id: 7, memory_bytes: 8192, quota_bytes: 64 << 20, buffers: 2, adapters: 1, pid: 42, ..Default::default() };
        assert_eq!(i, want);
    }

    #[test]
    fn parses_job_keys() {
        let t = "drm-driver:\tm4npu\ndrm-client-id:\t3\ndrm-engine-npu:\t123456789012 ns\n\
                 m4npu-jobs-submitted:\t1000\nm4npu-jobs-completed:\t990\nm4npu-jobs-failed:\t4\n\
                 m4npu-jobs-inflight:\t6\nm4npu-jobs-queued:\t2\nm4npu-queue-delay:\t5000 ns\n";
        let i = FdInfo::parse(t).unwrap();
        assert_eq!(i.engine_ns, 123_456_789_012);
        assert_eq!((i.jobs_submitted, i.jobs_completed, i.jobs_failed, i.jobs_inflight), (1000, 990, 4, 6));
        assert_eq!((i.jobs_queued, i.queue_delay_ns), (2, 5000));
        assert!(FdInfo::parse("drm-driver:\tm4npu\ndrm-engine-npu:\t12 ms\n").is_err());
        assert!(FdInfo::parse("drm-driver:\tm4npu\nm4npu-jobs-failed:\t-1\n").is_err());
    }

    #[test]
    fn refuses_other_files() {
        assert!(FdInfo::parse("pos:\t0\n").is_err());
        assert!(FdInfo::parse("drm-driver:\tm4npu\ndrm-memory-npu:\tlots\n").is_err());
    }
}
