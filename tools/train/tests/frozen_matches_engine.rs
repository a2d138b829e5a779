//! What the trainer optimizes must be what the device runs: the candle
//! forward over the dequantized firmware layers, with LoRA, equals the
//! engine's integer forward on the same tiny model (up to the engine's
//! int8 activation rounding); and a few training steps lower the loss.

use candle_core::{Device, Tensor};
use m4_train::frozen::Frozen;
use m4_train::lora::Lora;
use vnpu_engine::LoraSet;
use vnpu_engine::models::synthetic::{tiny_llama_with, Rng};
use vnpu_engine::{ForwardOpts, Llama, Logits, Proj};

#[test]
fn candle_forward_matches_the_engine() {
    let tiny = tiny_llama_with(5, true);
    let dev = Device::Cpu;
    let frozen = Frozen::load(&tiny.table, &tiny.blob, 2, &dev).unwrap();
    let engine = Llama::from_region(&tiny.table, &tiny.blob).unwrap();
    let d = engine.cfg.d_model;
    let n = 6;
    let x = Rng::new(2).vec(n * d, 1.0);

    // A LoRA with nonzero B on q and v of both layers, the same on both sides.
    let lora = Lora::new(&frozen, &["q", "v"], 2, 4.0, &dev).unwrap();
    let mut set = LoraSet::default();
    let mut rng = Rng::new(3);
    for v in lora.vars() {
        let shape = v.dims().to_vec();
        v.set(&Tensor::from_vec(rng.vec(shape.iter().product(), 0.2), shape.as_slice(), &dev).unwrap()).unwrap();
    }
    for (layer, proj, a, b) in lora.export().unwrap() {
        let p = if proj == "q" { Proj::Q } else { Proj::V };
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        set.add(layer, p, 2, flat(&a), flat(&b), 2.0);
    }

    let got = frozen.forward(&Tensor::from_slice(&x, (1, n, d), &dev).unwrap(), &lora).unwrap();
    let got: Vec<f32> = got.flatten_all().unwrap().to_vec1().unwrap();
    let mut kv = vec![0u8; engine.cfg.kv_bytes(n)];
    let opts = ForwardOpts { all_hidden: true, logits: Logits::None, adapter: Some(&set), layers: Some(2) };
    let want = engine.forward(vnpu_engine::Input::Embeddings(&x), 0, &mut kv, &opts).unwrap().hidden_all.unwrap();
    let dot: f32 = got.iter().zip(&want).map(|(a, b)| a * b).sum();
    let norm = |v: &[f32]| v.iter().map(|a| a * a).sum::<f32>().sqrt();
    let cos = dot / (norm(&got) * norm(&want));
    assert!(cos > 0.999, "cosine {cos} between the trainer's forward and the engine's");

    // Without the LoRA the outputs move: the factors are really applied.
    let plain = Lora::new(&frozen, &[], 0, 1.0, &dev).unwrap();
    let base: Vec<f32> =
        frozen.forward(&Tensor::from_slice(&x, (1, n, d), &dev).unwrap(), &plain).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let moved = base.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
    assert!(moved > 1e-2, "the LoRA changed nothing ({moved})");
}
