//! `bench -- [threads] batch`: batched decode across sessions
//! (`Llama::decode_batch`) against the same sessions stepped one after
//! another with `forward`, without LoRA and with a distinct LoRA per session.

use crate::{best_of, machine};
use std::sync::Arc;
use vnpu_engine::models::synthetic::Rng;
use vnpu_engine::LoraSet;
use vnpu_engine::{
    weights, Adapter, AlignedBytes, BatchRow, Exec, ForwardOpts, Input, Llama, Proj,
};

/// `-- batch`: decode_batch against sequential forward steps, per model.
pub fn run(exec: &Arc<Exec>, runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let t = vnpu_engine::models::synthetic::tiny_llama(1);
    let m = Llama::from_region_with(&t.table, &t.blob, exec.clone())?;
    batch_sessions("synthetic tiny llama (d=64, 2 layers)", &m, 16, 32, runs)?;
    let path = weights::smollm2_gguf();
    match std::fs::read(&path) {
        Ok(file) => {
            let (table, blob) = vnpu_engine::pack_for_npu(&file)?;
            let blob = AlignedBytes::from_slice(&blob);
            let m = Llama::from_region_with(&table, &blob, exec.clone())?;
            batch_sessions("SmolLM2-135M Q4_1", &m, 128, 32, runs)?;
        }
        Err(e) => println!("SmolLM2 skipped: {} ({e})", path.display()),
    }
    println!(
        "load average (1/5/15 min) at end: {}",
        machine::loadavg_text(machine::loadavg())
    );
    Ok(())
}

/// N sessions with `ctx`-token prompts each decode `steps` tokens: once
/// through `decode_batch` (one call per step), once session after session
/// through `forward`; prints tokens/s of both and their ratio.
fn batch_sessions(
    name: &str,
    m: &Llama,
    ctx: usize,
    steps: usize,
    runs: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let c = m.cfg.clone();
    let mut rng = Rng::new(7);
    // One distinct rank-8 LoRA on q, k, v, o per session (no grouping to gain).
    let loras: Vec<LoraSet> = (0..8)
        .map(|_| {
            let mut set = LoraSet::default();
            for l in 0..c.n_layer {
                for p in [Proj::Q, Proj::K, Proj::V, Proj::O] {
                    let (i, o) = c.proj_dims(p);
                    set.add(l, p, 8, rng.vec(8 * i, 0.02), rng.vec(o * 8, 0.02), 1.0);
                }
            }
            set
        })
        .collect();
    println!("== {name}: {steps} decode steps per session after a {ctx}-token prompt ==");
    for with_lora in [false, true] {
        for n in [1usize, 2, 4, 8] {
            let ads: Vec<Option<&dyn Adapter>> = (0..n)
                .map(|s| with_lora.then_some(&loras[s] as &dyn Adapter))
                .collect();
            let mut kvs: Vec<AlignedBytes> = (0..n)
                .map(|s| {
                    let prompt: Vec<u32> = (0..ctx)
                        .map(|_| (rng.next_u64() % c.vocab as u64) as u32)
                        .collect();
                    let mut kv = AlignedBytes::zeroed(c.kv_bytes(ctx + steps));
                    let opts = ForwardOpts {
                        adapter: ads[s],
                        ..Default::default()
                    };
                    m.forward(Input::Tokens(&prompt), 0, &mut kv, &opts)
                        .map(|_| kv)
                })
                .collect::<Result<_, _>>()?;
            let token = 42 % c.vocab as u32;
            // Each run rewrites the same positions ctx..ctx+steps.
            let tb = best_of(runs, || {
                for i in 0..steps {
                    let mut rows: Vec<BatchRow> = kvs
                        .iter_mut()
                        .zip(&ads)
                        .map(|(kv, &adapter)| BatchRow {
                            token,
                            pos: ctx + i,
                            kv: &mut kv[..],
                            adapter,
                        })
                        .collect();
                    std::hint::black_box(m.decode_batch(&mut rows).expect("decode_batch"));
                }
            });
            let ts = best_of(runs, || {
                for i in 0..steps {
                    for (kv, &adapter) in kvs.iter_mut().zip(&ads) {
                        let opts = ForwardOpts {
                            adapter,
                            ..Default::default()
                        };
                        let out = m
                            .forward(Input::Tokens(&[token]), ctx + i, kv, &opts)
                            .expect("forward");
                        std::hint::black_box(out.logits);
                    }
                }
            });
            let toks = (n * steps) as f64;
            println!(
                "{} N={n}: decode_batch {:7.1} tok/s ({:.2} ms/step) | sequential forward {:7.1} tok/s | ratio {:.2}x",
                if with_lora { "LoRA/session" } else { "no LoRA     " },
                toks / tb,
                tb * 1e3 / steps as f64,
                toks / ts,
                ts / tb
            );
        }
    }
    Ok(())
}
