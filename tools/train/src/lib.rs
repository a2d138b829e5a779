//! Offline adapter training for m4npu: the benchmark tasks' data, the
//! frozen foundation layers in candle, the training loops and recipes, and
//! evaluation with the device's own job code.

pub mod apps;
pub mod augment;
pub mod init;
pub mod data;
pub mod eval;
pub mod frozen;
pub mod frozen_bert;
pub mod lora;
pub mod recipe;
pub mod report;
pub mod sets;
pub mod text;
pub mod texts;
pub mod train;
