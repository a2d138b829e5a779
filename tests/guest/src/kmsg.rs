//! Reading what the kernel logged since a point in time, from /dev/kmsg.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;

/// A cursor into the kernel log, created at its current end.
pub struct Kmsg(File);

impl Kmsg {
    pub fn now() -> std::io::Result<Self> {
        let mut f = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open("/dev/kmsg")?;
        f.seek(SeekFrom::End(0))?;
        Ok(Self(f))
    }

    /// Messages logged since the cursor (or its last call), text only.
    pub fn new_messages(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 8192];
        // Each read() returns one record; EAGAIN means none is left.
        while let Ok(n) = self.0.read(&mut buf) {
            if n == 0 {
                break;
            }
            let rec = String::from_utf8_lossy(&buf[..n]);
            if let Some((_, msg)) = rec.split_once(';') {
                out.push(msg.lines().next().unwrap_or_default().to_string());
            }
        }
        out
    }
}
