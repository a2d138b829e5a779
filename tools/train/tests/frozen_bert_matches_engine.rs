//! The text encoder the trainer optimizes must be the one the device runs:
//! the candle forward over the dequantized firmware weights, padded batch
//! and all, with LoRA on every projection BERT has, gives the engine's
//! sentence embeddings with the same factors (up to the engine's int8
//! activation rounding).

use candle_core::{Device, Tensor};
use m4_train::frozen_bert::FrozenBert;
use m4_train::lora::Lora;
use vnpu_engine::models::synthetic::{tiny_bert_safetensors, Rng};
use vnpu_engine::{AlignedBytes, Bert, LoraSet};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (norm(a) * norm(b))
}

#[test]
fn candle_text_encoder_matches_the_engine() {
    let (table, blob) = vnpu_engine::formats::pack::pack_bert(&tiny_bert_safetensors(7), 4, 1e-12).unwrap();
    let blob = AlignedBytes::from_slice(&blob);
    let dev = Device::Cpu;
    let frozen = FrozenBert::load(&table, &blob, &dev).unwrap();
    let engine = Bert::from_region(&table, &blob).unwrap();
    // Different lengths: the candle batch pads, the engine's does not.
    let seqs: [&[u32]; 3] = [&[1, 5, 9, 13, 2], &[1, 7, 2], &[1, 40, 41, 3, 3, 8, 22, 2]];

    let targets = ["q", "k", "v", "o", "up", "down"];
    let lora = Lora::on(0..frozen.layers.len(), &targets, 2, 4.0, |p| frozen.cfg.proj_dims(p), &dev).unwrap();
    let mut rng = Rng::new(3);
    for v in lora.vars() {
        let shape = v.dims().to_vec();
        v.set(&Tensor::from_vec(rng.vec(shape.iter().product(), 0.3), shape.as_slice(), &dev).unwrap()).unwrap();
    }
    let mut set = LoraSet::default();
    for (layer, proj, a, b) in lora.export().unwrap() {
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        set.add(layer, vnpud::adapter::proj_named(proj).unwrap(), 2, flat(&a), flat(&b), 2.0);
    }

    let got = frozen.embed(&seqs, &lora).unwrap().to_vec2::<f32>().unwrap();
    let want = engine.embed_batch_with(&seqs, Some(&set)).unwrap();
    let base = engine.embed_batch(&seqs).unwrap();
    let plain = frozen.embed(&seqs, &Lora::default()).unwrap().to_vec2::<f32>().unwrap();
    for i in 0..seqs.len() {
        let c = cosine(&got[i], &want[i]);
        assert!(c > 0.999, "sentence {i}: cosine {c} between the trainer's embedding and the engine's");
        let c = cosine(&plain[i], &base[i]);
        assert!(c > 0.999, "sentence {i}: without LoRA, cosine {c}");
        // The LoRA really moves the embedding, on both sides alike.
        assert!(cosine(&want[i], &base[i]) < 0.99, "sentence {i}: the LoRA changed little");
    }
}
