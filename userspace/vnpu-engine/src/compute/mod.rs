//! Compute: the ISA kernels, the thread pool and the executor that runs
//! them, the quantized formats they consume, and the f32 row operations
//! (norms, LoRA) between the matmuls.

pub mod exec;
pub mod kernels;
pub mod lora;
pub mod norm;
pub mod quant;
pub mod rows;
pub mod threadpool;

pub use exec::{Exec, QMat};
pub use kernels::Isa;
pub use rows::{ActRows, RowSplit, Rows};
