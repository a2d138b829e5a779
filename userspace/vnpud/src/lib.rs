//! The m4npu virtual NPU's device model: the foundation model built over
//! NPU memory, and what each job op computes on it. The `vnpud` binary
//! serves jobs from the driver with it; tests use it as the reference.

pub mod adapter;
pub mod adapter_cache;
pub mod execute;
pub mod foundation;
pub mod rounds;
