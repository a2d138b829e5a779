//! Writes the seed corpus of the fuzz targets (`fuzz/`): one small valid
//! input of each kind, so that fuzzing starts past the magic numbers.
//!
//!   cargo run -p vnpud --example fuzz_seeds -- fuzz/corpus

use std::path::Path;

use m4npu_format::adapter_meta::{lora_name, AdapterMeta, AdapterTask, Pooling, SubModel};
use m4npu_format::job_io::{GenerateOutput, Input, StateHeader};
use m4npu_format::{AdapterBuilder, FirmwareBuilder};
use vnpu_engine::models::synthetic::{tiny_gguf, tiny_llama_config};

fn meta(task: AdapterTask, submodel: SubModel) -> AdapterMeta {
    AdapterMeta {
        task,
        submodel,
        labels: vec!["no".into(), "yes".into()],
        pooling: Pooling::Mean,
        feature_dim: None,
        text_embedding: None,
        layers: None,
        lora_alpha: 8.0,
        description: "fuzz seed".into(),
    }
}

/// A feature classifier on the synthetic backbone: input projection, a
/// rank-2 LoRA on q of layer 0, a head; and a text-encoder classifier.
fn adapters() -> Vec<Vec<u8>> {
    let c = tiny_llama_config();
    let d = c.d_model;
    let mut m = meta(AdapterTask::Classify, SubModel::Backbone);
    m.feature_dim = Some(3);
    m.layers = Some(1);
    let mut b = AdapterBuilder::new("seed-features", [0; 32]);
    b.meta(m.to_json());
    b.tensor_f32(&lora_name(0, "q", "a"), &[2, d], &vec![0.01; 2 * d]).expect("tensor");
    b.tensor_f32(&lora_name(0, "q", "b"), &[d, 2], &vec![0.01; 2 * d]).expect("tensor");
    b.tensor_f32("head.weight", &[2, d], &vec![0.1; 2 * d]).expect("tensor");
    b.tensor_f32("head.bias", &[2], &[0.0, 0.5]).expect("tensor");
    b.tensor_f32("input.weight", &[d, 3], &vec![0.2; 3 * d]).expect("tensor");
    b.tensor_f32("input.bias", &[d], &vec![0.0; d]).expect("tensor");
    let features = b.build().expect("adapter");
    // The synthetic MiniLM is 64 wide too.
    let mut b = AdapterBuilder::new("seed-text", [0; 32]);
    b.meta(meta(AdapterTask::Classify, SubModel::TextEncoder).to_json());
    b.tensor_f32("head.weight", &[2, 64], &vec![0.1; 128]).expect("tensor");
    b.tensor_f32("head.bias", &[2], &[0.0, 0.5]).expect("tensor");
    vec![features, b.build().expect("adapter")]
}

/// A safetensors file: its header length, JSON header, then the data.
fn safetensors() -> Vec<u8> {
    let header = br#"{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"F16","shape":[2],"data_offsets":[16,20]},"__metadata__":{"x":"y"}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    [1.0f32, 2.0, -3.0, 0.5].iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
    out.extend_from_slice(&[0x00, 0x3c, 0x00, 0xc0]);
    out
}

fn main() -> Result<(), String> {
    let root = std::env::args().nth(1).ok_or("usage: fuzz_seeds CORPUS_DIR")?;
    let write = |target: &str, name: &str, bytes: &[u8]| -> Result<(), String> {
        let dir = Path::new(&root).join(target);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        std::fs::write(dir.join(name), bytes).map_err(|e| format!("{target}/{name}: {e}"))
    };
    let mut fw = FirmwareBuilder::new("seed");
    fw.meta(br#"{"arch":"seed"}"#.to_vec());
    fw.tensor("t0", m4npu_uapi::FW_DTYPE_F32, &[4], vec![0; 16]).map_err(|e| e.to_string())?;
    fw.tensor("t1", m4npu_uapi::FW_DTYPE_I8, &[3, 5], (0..15).collect()).map_err(|e| e.to_string())?;
    write("firmware_blob", "small", &fw.build().map_err(|e| e.to_string())?)?;
    let ads = adapters();
    for (i, a) in ads.iter().enumerate() {
        write("adapter_blob", &format!("classifier-{i}"), a)?;
        write("vnpud_adapter", &format!("classifier-{i}"), a)?;
    }
    let mut m = meta(AdapterTask::Generate, SubModel::Backbone);
    m.labels.clear();
    for (i, m) in [meta(AdapterTask::Classify, SubModel::Backbone), meta(AdapterTask::Embed, SubModel::TextEncoder), m].iter().enumerate() {
        write("adapter_meta", &format!("meta-{i}"), &m.to_json())?;
    }
    write("job_io", "tokens", &Input::Tokens(vec![1, 5, 9, 2]).encode())?;
    write("job_io", "features", &Input::Features { dim: 2, data: vec![0.5, -1.0, 2.0, 0.0] }.encode())?;
    write("job_io", "mixed", &Input::Mixed { dim: 2, data: vec![0.5, -1.0, 2.0, 0.0], tokens: vec![1, 5] }.encode())?;
    let mut state = [0u8; 16];
    StateHeader { n_past: 3, last_job: 7 }.encode_into(&mut state).map_err(|e| e.to_string())?;
    write("job_io", "state", &state)?;
    let mut out = [0u8; 16];
    GenerateOutput { next_token: 4, n_past: 3, n_logits: 0 }.encode_into(&mut out);
    write("job_io", "output", &out)?;
    write("gguf", "tiny", &tiny_gguf())?;
    write("safetensors", "tiny", &safetensors())?;
    Ok(())
}
