//! App library for m4npu.
//!
//! Every [`Device`] is one open of `/dev/m4npu` and so one isolated driver
//! context: its buffers and adapters are invisible to every other open.
//!
//! ```no_run
//! let dev = m4npu::Device::open()?;
//! let info = dev.info()?;
//! println!("driver {} context {}", info.driver_version, info.context_id);
//! # Ok::<(), m4npu::Error>(())
//! ```

mod adapter;
mod buffer;
mod device;
mod error;
mod fdinfo;

pub use adapter::Adapter;
pub use buffer::Buffer;
pub use device::{Device, DeviceInfo, ModelInfo};
pub use fdinfo::FdInfo;
pub use error::{Error, Result};
pub use m4npu_uapi as uapi;
