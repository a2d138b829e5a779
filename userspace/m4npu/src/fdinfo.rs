use std::os::fd::RawFd;

use crate::{Error, Result};

/// A context's entry in `/proc/self/fdinfo/<fd>` (DRM usage-stats keys).
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
}

fn kib(v: &str) -> Option<u64> {
    v.strip_suffix(" KiB")?.trim().parse::<u64>().ok()?.checked_mul(1024)
}

impl FdInfo {
    /// Parses the fdinfo text of an m4npu file.
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
                _ => {}
            }
        }
        if !driver {
            return Err(Error::FdInfo("not an m4npu file (no drm-driver: m4npu)".into()));
        }
        Ok(info)
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
        assert_eq!(i, FdInfo { client_id: 7, memory_bytes: 8192, quota_bytes: 64 << 20, buffers: 2, adapters: 1, pid: 42 });
    }

    #[test]
    fn refuses_other_files() {
        assert!(FdInfo::parse("pos:\t0\n").is_err());
        assert!(FdInfo::parse("drm-driver:\tm4npu\ndrm-memory-npu:\tlots\n").is_err());
    }
}
