//! Throughput numbers for the engine on the real models.
//!
//!   cargo run -p vnpu-engine --release --example bench -- [threads]
//!
//! Prints SmolLM2 prefill (128-token prompt) and decode tok/s, MiniLM
//! sentences/s (32-token sentences, batch 1 and 32) and int8 GEMM GOPS.
//! `VNPU_ISA=scalar|avx2|avx512` forces a kernel set.

use std::sync::Arc;
use std::time::Instant;
use vnpu_engine::kernels::{self, OutMat};
use vnpu_engine::quant::{self, ActQ8, Q4_1Mat, Q8_0Mat};
use vnpu_engine::synthetic::Rng;
use vnpu_engine::{weights, AlignedBytes, Bert, Exec, Llama};

/// Best wall time of `runs`; with 1 thread also reports the best thread
/// CPU time, which stays meaningful when other jobs load the machine.
fn best_of<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    let mut wall = f64::INFINITY;
    let mut cpu = f64::INFINITY;
    for _ in 0..runs {
        let (t, c) = (Instant::now(), thread_cpu_secs());
        f();
        wall = wall.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(thread_cpu_secs() - c);
    }
    LAST_CPU.with(|l| l.set(cpu));
    wall
}

thread_local!(static LAST_CPU: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) });

fn cpu_note(threads: usize, units: f64, what: &str) -> String {
    if threads != 1 {
        return String::new();
    }
    let c = LAST_CPU.with(|l| l.get());
    format!("  [{:.1} {what}/cpu-s]", units / c)
}

/// CPU time of this thread: GEMM GOPS that are not skewed by other load on
/// a shared machine.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // Safety: valid out-pointer; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // BENCH_ONLY=prefill|decode|minilm|gemm restricts the run (for profiling).
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let want = |w: &str| only.is_empty() || only == w;
    let threads: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let exec = Arc::new(Exec::new(threads));
    println!("threads={threads} isa={:?}", exec.isa);

    // SmolLM2
    let file = std::fs::read(weights::smollm2_gguf())?;
    let t = Instant::now();
    let (table, blob) = vnpu_engine::pack_for_npu(&file)?;
    println!(
        "smollm2 pack: {:.2}s, blob {:.1} MiB",
        t.elapsed().as_secs_f64(),
        blob.len() as f64 / 1048576.0
    );
    let blob = AlignedBytes::from_slice(&blob);
    let m = Llama::from_region_with(&table, &blob, exec.clone())?;
    let mut rng = Rng::new(1);
    let prompt: Vec<u32> = (0..128)
        .map(|_| 100 + (rng.next_u64() % 40000) as u32)
        .collect();
    let mut kv = AlignedBytes::zeroed(m.cfg.kv_bytes(512));
    m.prefill(&prompt, &mut kv)?;
    let tp = best_of(if want("prefill") { 3 } else { 1 }, || {
        m.prefill(&prompt, &mut kv).expect("prefill");
    });
    println!(
        "smollm2 prefill 128 tok: {:.1} ms  -> {:.0} tok/s{}",
        tp * 1e3,
        128.0 / tp,
        cpu_note(threads, 128.0, "tok")
    );
    let steps = 64;
    let td = best_of(if want("decode") { 3 } else { 1 }, || {
        let mut tok = 42u32;
        for i in 0..steps {
            let out = m.decode_step(tok, 128 + i, &mut kv).expect("decode");
            let l = out.logits.expect("logits");
            tok = l
                .iter()
                .enumerate()
                .fold(0, |b, (i, &x)| if x > l[b] { i } else { b }) as u32;
        }
    });
    println!(
        "smollm2 decode (ctx 128..192): {:.2} ms/tok -> {:.1} tok/s{}",
        td * 1e3 / steps as f64,
        steps as f64 / td,
        cpu_note(threads, steps as f64, "tok")
    );

    if !(want("minilm") || want("gemm")) {
        return Ok(());
    }
    // MiniLM
    let file = std::fs::read(weights::minilm_safetensors())?;
    let (table, blob) = vnpu_engine::pack_for_npu(&file)?;
    let blob = AlignedBytes::from_slice(&blob);
    let b = Bert::from_region_with(&table, &blob, exec.clone())?;
    let sents: Vec<Vec<u32>> = (0..32)
        .map(|_| {
            let mut s = vec![101u32];
            s.extend((0..30).map(|_| 1000 + (rng.next_u64() % 20000) as u32));
            s.push(102);
            s
        })
        .collect();
    let refs: Vec<&[u32]> = sents.iter().map(|s| s.as_slice()).collect();
    b.embed(refs[0])?;
    let t1 = best_of(3, || {
        for s in &refs {
            b.embed(s).expect("embed");
        }
    });
    println!(
        "minilm batch 1 (32 tok): {:.2} ms/sent -> {:.0} sent/s{}",
        t1 * 1e3 / 32.0,
        32.0 / t1,
        cpu_note(threads, 32.0, "sent")
    );
    let t32 = best_of(3, || {
        b.embed_batch(&refs).expect("embed");
    });
    println!(
        "minilm batch 32 (32 tok): {:.1} ms/batch -> {:.0} sent/s{}",
        t32 * 1e3,
        32.0 / t32,
        cpu_note(threads, 32.0, "sent")
    );

    // Raw GEMM (single thread and pooled), FFN-shaped: 1536 x 576, 128 tokens.
    let (rows, k, n) = (1536, 576, 128);
    let wf = rng.vec(rows * k, 0.05);
    let xf = rng.vec(n * k, 1.0);
    let mut x = ActQ8::default();
    x.quantize(&xf, n, k);
    let w4 = AlignedBytes::from_slice(&quant::quantize_q4_1(&wf, rows, k));
    let w8 = AlignedBytes::from_slice(&quant::quantize_q8_0(&wf, rows, k));
    let w4 = Q4_1Mat::from_bytes(&w4, rows, k)?;
    let w8 = Q8_0Mat::from_bytes(&w8, rows, k)?;
    let mut out = vec![0f32; n * rows];
    let ops = 2.0 * (rows * k * n) as f64;
    for (name, isq4) in [("q4_1", true), ("q8_0", false)] {
        let t1 = best_of(5, || {
            let o = OutMat::new(&mut out, n, rows);
            unsafe {
                if isq4 {
                    kernels::gemm_q4_1(exec.isa, &w4, &x, 0, rows, o)
                } else {
                    kernels::gemm_q8_0(exec.isa, &w8, &x, 0, rows, o)
                }
            }
        });
        let cpu = LAST_CPU.with(|l| l.get());
        let w = if isq4 {
            vnpu_engine::ops::QMat::Q4_1(w4)
        } else {
            vnpu_engine::ops::QMat::Q8_0(w8)
        };
        let tp = best_of(5, || exec.matmul(&w, &x, &mut out));
        println!(
            "gemm {name} {rows}x{k}x{n}: 1 thread {:.1} GOPS ({:.1} per cpu-second), {threads} threads {:.1} GOPS",
            ops / t1 / 1e9,
            ops / cpu / 1e9,
            ops / tp / 1e9
        );
    }
    Ok(())
}
