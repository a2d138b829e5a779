//! Formats: the source checkpoints (GGUF, safetensors), the engine's own
//! tensor table over one byte region, and the packer between them.

pub mod gguf;
pub mod pack;
pub mod safetensors;
pub mod tensor;
