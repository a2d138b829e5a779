//! The m4npu blob formats: firmware and adapters (`uapi::FwHeader` + tensor table + metadata +
//! aligned tensor data): a builder for packers and a validating reader for
//! the device side. The reader accepts exactly what the kernel accepts.

mod adapter;
pub mod adapter_meta;
mod bytes;
mod container;
mod firmware;
pub mod job_io;

pub use adapter::{adapter_base_model_hash, Adapter, AdapterBuilder};
pub use container::Tensor;
pub use firmware::{Firmware, FirmwareBuilder, FormatError};
