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
