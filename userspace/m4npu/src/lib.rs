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
//!
//! Jobs run synchronously with [`Device::run`] or many at once over
//! io_uring with [`uring::Ring`], or as `async fn`s on tokio with
//! [`aio::AsyncRing`] (cargo feature `tokio`, on by default); the crate
//! `m4npu-hw` is the other end, for the process that executes them. Task
//! calls on text ([`Device::embed`], [`Device::generate`],
//! [`Device::classify`]; cargo feature `text`, on by default) tokenize with
//! the loaded model's own tokenizers ([`model`]); without the feature, the
//! library does not build `tokenizers`, and jobs take token ids and feature
//! vectors.
//!
//! Example programs, in `examples/` (`cargo run --example NAME -- ARGS`;
//! they need a device that serves jobs, such as vnpud):
//!
//! - `classify`: a text or feature vectors through an app's adapter, labels
//!   best first ([`Device::classify`], [`Device::classify_features`]);
//! - `embed`: two sentences' embeddings and their cosine similarity
//!   ([`Device::embed`]);
//! - `generate`: a generation streamed token by token, optionally through
//!   an adapter ([`Device::generate`], [`Device::generate_with`]);
//! - `uring_batch`: many EMBED jobs submitted at once over io_uring,
//!   completions reaped in batches ([`uring::Ring`]);
//! - `async_echo`: ECHO jobs in flight together from one async task
//!   ([`aio::AsyncRing`]).

mod adapter;
#[cfg(feature = "tokio")]
pub mod aio;
mod buffer;
mod classify;
mod device;
mod error;
mod fdinfo;
mod job;
pub mod model;
mod sys;
mod tasks;
pub mod uring;

pub use adapter::Adapter;
pub use buffer::Buffer;
pub use classify::{labels_from_logits, Label};
pub use m4npu_format::adapter_meta::{AdapterMeta, AdapterTask};
pub use device::{Device, DeviceInfo, ModelInfo};
pub use fdinfo::FdInfo;
pub use job::{JobDesc, Op, Priority};
#[cfg(feature = "text")]
pub use tasks::Session;
pub use error::{Error, Result};
/// The io_uring core the rings share with m4npu-hw's device queues; not
/// part of the API.
#[doc(hidden)]
pub use sys::ring as ring_core;
pub use m4npu_uapi as uapi;
/// The errno type of [`Error::errno`] and the device side's results.
pub use nix::errno::Errno;
