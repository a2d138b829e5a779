//! The m4npu firmware format (`uapi::FwHeader` + tensor table + metadata +
//! aligned tensor data): a builder for packers and a validating reader for
//! the device side. The reader accepts exactly what the kernel accepts.

mod bytes;
mod firmware;

pub use firmware::{Firmware, FirmwareBuilder, FormatError, Tensor};
