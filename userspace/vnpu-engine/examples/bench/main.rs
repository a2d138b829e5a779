//! Throughput of the engine on the real models, side by side with the
//! reference runtimes at their best, in one run:
//!
//!   cargo run -p vnpu-engine --release --example bench -- [threads] [--compare] [--rounds N]
//!
//! Each round takes one sample of every engine number (SmolLM2 prefill of a
//! 128- and a 512-token prompt, decode, MiniLM sentences/s at batch 1 and
//! 32, the machine's read bandwidth), then, with `--compare`, one sample of
//! every peer variant: llama.cpp on the packaged Q4_1 GGUF and on its own
//! Q4_0 requantization, ONNX Runtime on the float MiniLM graph and on its
//! own int8 dynamic quantization (tools/fixtures/bench_*.py, kept running
//! between rounds). Each side's turn opens with an untimed run, so neither
//! is timed while the other's idle threads still spin. The table gives the median and min–max of each side and
//! of the per-round ratio, and each variant's accuracy against a float
//! reference. A run whose load average exceeds the core count is flagged.
//!
//!   cargo run -p vnpu-engine --release --example bench -- [threads] batch
//!
//! instead measures batched decode across sessions (see batch.rs).
//!
//! `VNPU_ISA=scalar|avx2|avx512` (aarch64: `scalar|neon|dotprod|i8mm`)
//! forces a kernel set; `BENCH_ONLY=prefill|prefill512|decode|minilm|gemm` restricts
//! the engine part (profiling); `BENCH_RUNS` sets the GEMM's best-of;
//! `VNPU_BENCH_PYTHON` picks the interpreter for the peers.

mod batch;
mod machine;
mod peers;
mod stats;

use peers::Peer;
use serde_json::{json, Value};
use stats::{Record, Samples};
use std::sync::Arc;
use std::time::Instant;
use vnpu_engine::compute::kernels::{self, OutMat, PeakProbe};
use vnpu_engine::compute::quant::{self, ActQ8, Q4_1Mat, Q8_0Mat};
use vnpu_engine::models::synthetic::Rng;
use vnpu_engine::TextTokenizer;
use vnpu_engine::{weights, AlignedBytes, Bert, Exec, ForwardOpts, Input, Llama, Logits};

type BoxResult<T> = Result<T, Box<dyn std::error::Error>>;

const STEPS: usize = 64;
const DECODE_TOKEN: u32 = 42;

/// Real sentences for the MiniLM accuracy check (the speed sentences are
/// random ids of a fixed length, which a batch needs).
const SENTENCES: [&str; 12] = [
    "The train to the airport leaves every twenty minutes.",
    "I loved the film, but the ending felt rushed.",
    "Please remind me to call the dentist tomorrow morning.",
    "Heavy rain is expected across the north this weekend.",
    "How do I reset my password if I lost my phone?",
    "The committee approved the budget after a long debate.",
    "This recipe needs two eggs, flour, butter and a pinch of salt.",
    "Battery life dropped sharply after the last software update.",
    "She scored twice in the second half to win the match.",
    "Turn left at the bakery and the museum is on your right.",
    "The new vaccine reduced hospital admissions by a third.",
    "Our flight was delayed, so we missed the connection in Paris.",
];

/// Best wall time of `runs`; `LAST_CPU` keeps the best CPU time of this
/// thread, which stays meaningful with 1 thread on a busy machine.
pub fn best_of<F: FnMut()>(runs: usize, mut f: F) -> f64 {
    let mut wall = f64::INFINITY;
    let mut cpu = f64::INFINITY;
    for _ in 0..runs {
        let (t, c) = (Instant::now(), machine::thread_cpu_secs());
        f();
        wall = wall.min(t.elapsed().as_secs_f64());
        cpu = cpu.min(machine::thread_cpu_secs() - c);
    }
    LAST_CPU.with(|l| l.set(cpu));
    wall
}

thread_local!(static LAST_CPU: std::cell::Cell<f64> = const { std::cell::Cell::new(0.0) });

fn timed<F: FnOnce()>(f: F) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

struct Args {
    threads: usize,
    compare: bool,
    rounds: usize,
    batch: bool,
}

fn args() -> Args {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let rounds_at = a.iter().position(|s| s == "--rounds");
    Args {
        threads: a
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(i.wrapping_sub(1)) != rounds_at)
            .find_map(|(_, s)| s.parse().ok())
            .unwrap_or(2),
        compare: a.iter().any(|s| s == "--compare"),
        rounds: rounds_at
            .and_then(|i| a.get(i + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(7)
            .max(1),
        batch: a.iter().any(|s| s == "batch"),
    }
}

/// The inputs every side measures: the same token ids everywhere.
struct Workload {
    prompt: Vec<u32>,
    long_prompt: Vec<u32>,
    sents: Vec<Vec<u32>>,
}

impl Workload {
    fn new() -> Workload {
        let mut rng = Rng::new(1);
        let long_prompt: Vec<u32> = (0..512)
            .map(|_| 100 + (rng.next_u64() % 40000) as u32)
            .collect();
        let sents = (0..32)
            .map(|_| {
                let mut s = vec![101u32];
                s.extend((0..30).map(|_| 1000 + (rng.next_u64() % 20000) as u32));
                s.push(102);
                s
            })
            .collect();
        Workload {
            prompt: long_prompt[..128].to_vec(),
            long_prompt,
            sents,
        }
    }
}

struct Models<'a> {
    llama: Llama<'a>,
    bert: Bert<'a>,
    kv: AlignedBytes,
}

impl Models<'_> {
    /// One sample of every engine number, into `rec` under `engine.*`.
    fn round(&mut self, w: &Workload, want: &dyn Fn(&str) -> bool, rec: &mut Record, r: usize) {
        let Models { llama, bert, kv } = self;
        let refs: Vec<&[u32]> = w.sents.iter().map(|s| s.as_slice()).collect();
        // An untimed run of the first workload: a peer's idle threads
        // (OpenMP, ONNX Runtime's pool) spin for a while after its turn,
        // and the peers' turns open the same way.
        if ["prefill", "prefill512", "decode"].iter().any(|x| want(x)) {
            llama.prefill(&w.prompt, kv).expect("prefill");
        } else if want("minilm") {
            bert.embed_batch(&refs).expect("embed");
        }
        if want("prefill") {
            let t = timed(|| drop(llama.prefill(&w.prompt, kv).expect("prefill")));
            rec.push("engine.prefill", r, w.prompt.len() as f64 / t);
        }
        if want("prefill512") {
            let t = timed(|| drop(llama.prefill(&w.long_prompt, kv).expect("prefill")));
            rec.push("engine.prefill512", r, w.long_prompt.len() as f64 / t);
        }
        if want("decode") {
            llama.prefill(&w.prompt, kv).expect("prefill");
            let t = timed(|| {
                for i in 0..STEPS {
                    let out = llama
                        .decode_step(DECODE_TOKEN, w.prompt.len() + i, kv)
                        .expect("decode");
                    std::hint::black_box(out.logits);
                }
            });
            rec.push("engine.decode", r, STEPS as f64 / t);
        }
        if want("minilm") {
            let t = timed(|| {
                for s in &refs {
                    std::hint::black_box(bert.embed(s).expect("embed"));
                }
            });
            rec.push("engine.minilm1", r, refs.len() as f64 / t);
            let t = timed(|| drop(bert.embed_batch(&refs).expect("embed")));
            rec.push("engine.minilm32", r, refs.len() as f64 / t);
        }
    }
}

fn main() -> BoxResult<()> {
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let want = |w: &str| only.is_empty() || only == w;
    let a = args();
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let cores = machine::logical_cpus();
    let load_start = machine::loadavg();
    let exec = Arc::new(Exec::new(a.threads));
    println!(
        "threads={} isa={:?} load={}",
        a.threads,
        exec.isa,
        machine::loadavg_text(load_start)
    );
    if a.batch {
        return batch::run(&exec, runs);
    }
    let w = Workload::new();

    let file = std::fs::read(weights::smollm2_gguf())?;
    let (ltable, lblob) = vnpu_engine::pack_for_npu(&file)?;
    let lblob = AlignedBytes::from_slice(&lblob);
    let file = std::fs::read(weights::minilm_safetensors())?;
    let (btable, bblob) = vnpu_engine::pack_for_npu(&file)?;
    let bblob = AlignedBytes::from_slice(&bblob);
    let mut models = Models {
        llama: Llama::from_region_with(&ltable, &lblob, exec.clone())?,
        bert: Bert::from_region_with(&btable, &bblob, exec.clone())?,
        kv: AlignedBytes::zeroed(0),
    };
    models.kv = AlignedBytes::zeroed(models.llama.cfg.kv_bytes(512));
    let bert_tok = TextTokenizer::from_tokenizer_json(&weights::minilm_tokenizer())?;
    let acc_sents: Vec<Vec<u32>> = SENTENCES
        .iter()
        .map(|s| bert_tok.encode(s, true))
        .collect::<Result<_, _>>()?;

    let mut peers: Vec<Peer> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    let tmp = std::env::temp_dir().join(format!("vnpu-bench-{}", std::process::id()));
    if a.compare {
        std::fs::create_dir_all(&tmp)?;
        let reqs = [
            (
                "llama.cpp",
                "bench_llamacpp.py",
                json!({"prompt": w.prompt, "decode_steps": STEPS, "decode_token": DECODE_TOKEN}),
                "pip install llama-cpp-python==0.3.36 (builds from source, ~15 min)",
            ),
            (
                "ONNX Runtime",
                "bench_onnxruntime.py",
                json!({"sentences": w.sents, "accuracy": acc_sents}),
                "pip install onnxruntime onnx numpy",
            ),
        ];
        for (name, script, req, hint) in reqs {
            let path = tmp.join(format!("{script}.json"));
            std::fs::write(&path, req.to_string())?;
            println!("starting {name} ({script}) ...");
            match Peer::start(name, script, a.threads, &path) {
                Ok(p) => peers.push(p),
                Err(e) => missing.push(format!("{name} unavailable: {e}\n  to enable: {hint}")),
            }
        }
    }

    // The kernels first, while the peers sit idle (after a round their
    // threads may still spin).
    let gemm = if want("gemm") {
        Some(gemm_bench(&exec, runs)?)
    } else {
        None
    };
    // 512 MiB, written once: only when decode is measured against it.
    let probe = want("decode").then(|| machine::ReadProbe::new(a.threads));
    let mut rec = Record::default();
    let mut warm = Record::default();
    models.round(&w, &want, &mut warm, 0);
    for r in 0..a.rounds {
        models.round(&w, &want, &mut rec, r);
        if let Some(p) = &probe {
            rec.push("machine.read_bw", r, p.sample());
        }
        for p in &mut peers {
            match p.measure() {
                Ok(v) => record_peer(&mut rec, p.name, &v, r),
                Err(e) => println!("round {r}: {e}"),
            }
        }
        let nums: Vec<String> = [
            ("prefill", "engine.prefill", "tok/s"),
            ("prefill512", "engine.prefill512", "tok/s"),
            ("decode", "engine.decode", "tok/s"),
            ("MiniLM b1", "engine.minilm1", "sent/s"),
            ("MiniLM b32", "engine.minilm32", "sent/s"),
        ]
        .iter()
        .filter_map(|(name, key, unit)| Some(format!("{name} {:.0} {unit}", rec.get(key).last()?)))
        .collect();
        println!("round {}/{}: engine {}", r + 1, a.rounds, nums.join(", "));
    }
    let _ = std::fs::remove_dir_all(&tmp);

    let load_end = machine::loadavg();
    let loaded = [load_start, load_end]
        .iter()
        .flatten()
        .any(|l| l[0] > cores as f64);
    println!();
    println!(
        "== vnpu-engine vs peers: {} threads, isa {:?}, {} ({cores} logical CPUs), {} rounds, median (min–max) ==",
        a.threads,
        exec.isa,
        machine::cpu_model(),
        a.rounds
    );
    println!(
        "load average (1/5/15 min): start {}, end {}{}",
        machine::loadavg_text(load_start),
        machine::loadavg_text(load_end),
        if loaded {
            format!("  <- LOADED: above the {cores} cores; these numbers are not comparable")
        } else {
            String::new()
        }
    );
    print_speed(&rec, &peers, &models, &w);
    if a.compare {
        print_accuracy(&peers, &mut models, &acc_sents)?;
    }
    if let Some((rows, peak)) = gemm {
        print_gemm(&rows, peak, a.threads, runs);
    }
    for p in &peers {
        if let Some(si) = p.ready["system_info"].as_str() {
            println!("{}: {si}", p.name);
        }
    }
    for m in &missing {
        println!("WARNING: {m}");
    }
    if loaded {
        println!("WARNING: load average above {cores}: rerun on an idle machine");
    }
    Ok(())
}

/// `{variant: {metric: v}}` into `<peer>.<variant>.<metric>`.
fn record_peer(rec: &mut Record, peer: &str, v: &Value, round: usize) {
    if let Some(vs) = v.as_object() {
        for (variant, ms) in vs {
            for (m, x) in ms.as_object().into_iter().flatten() {
                if let Some(x) = x.as_f64() {
                    rec.push(&format!("{peer}.{variant}.{m}"), round, x);
                }
            }
        }
    }
}

fn print_table(head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let c: Vec<String> = cells
            .iter()
            .zip(&w)
            .map(|(s, &n)| format!("{s}{}", " ".repeat(n - s.chars().count())))
            .collect();
        println!("| {} |", c.join(" | "));
    };
    line(head.to_vec());
    println!(
        "|{}|",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect());
    }
}

fn print_speed(rec: &Record, peers: &[Peer], models: &Models, w: &Workload) {
    let engine_of = |name: &str| {
        peers
            .iter()
            .find(|p| p.name == name)
            .map_or(name.to_string(), |p| p.engine().to_string())
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row =
        |what: &str, ours: &str, peer: String, theirs: Samples, target: f64, pct: bool| {
            let us = rec.get(ours);
            let q = us.ratio(&theirs);
            let (scale, suffix, prec) = if pct { (100.0, "%", 0) } else { (1.0, "x", 2) };
            rows.push(vec![
                what.into(),
                us.cell(1, 1.0, ""),
                peer,
                theirs.cell(1, 1.0, ""),
                q.cell(prec, scale, suffix),
                format!(">= {:.p$}{suffix}", target * scale, p = prec),
                match q.median() {
                    Some(m) if m >= target => "met".into(),
                    Some(_) => "NOT met".into(),
                    None => "n/a".into(),
                },
            ]);
        };
    let llama = engine_of("llama.cpp");
    let ort = engine_of("ONNX Runtime");
    for (what, ours, metric, targets) in [
        (
            "SmolLM2 prefill 128 tok (tok/s)",
            "engine.prefill",
            "prefill_tok_s",
            [6.0, 2.0],
        ),
        (
            "SmolLM2 decode ctx 128-192 (tok/s)",
            "engine.decode",
            "decode_tok_s",
            [2.0, 1.5],
        ),
    ] {
        for (variant, target) in ["Q4_1", "Q4_0"].into_iter().zip(targets) {
            let theirs = rec.get(&format!("llama.cpp.{variant}.{metric}"));
            row(
                what,
                ours,
                format!("{llama} {variant}"),
                theirs,
                target,
                false,
            );
        }
    }
    for (what, ours, metric) in [
        (
            "MiniLM batch 1, 32 tok (sent/s)",
            "engine.minilm1",
            "batch1_sent_s",
        ),
        (
            "MiniLM batch 32, 32 tok (sent/s)",
            "engine.minilm32",
            "batch32_sent_s",
        ),
    ] {
        for (variant, target) in [("float", 1.5), ("int8", 1.2)] {
            let theirs = rec.get(&format!("ONNX Runtime.{variant}.{metric}"));
            row(
                what,
                ours,
                format!("{ort} {variant}"),
                theirs,
                target,
                false,
            );
        }
    }
    row(
        "SmolLM2 prefill 512 tok (tok/s)",
        "engine.prefill512",
        "vnpu-engine, 128 tok".into(),
        rec.get("engine.prefill"),
        0.85,
        true,
    );
    // Decode as bandwidth: bytes a step reads (weights + KV at the middle
    // position) times steps/s, against the machine's read bandwidth.
    let step_bytes = models.llama.decode_read_bytes(w.prompt.len() + STEPS / 2) as f64;
    let engine_bw = rec.get("engine.decode").map(|d| d * step_bytes / 1e9);
    let machine_bw = rec.get("machine.read_bw").map(|b| b / 1e9);
    let q = engine_bw.ratio(&machine_bw);
    rows.push(vec![
        format!(
            "SmolLM2 decode read rate (GB/s; {:.1} MB/step)",
            step_bytes / 1e6
        ),
        engine_bw.cell(1, 1.0, ""),
        "machine read bandwidth".into(),
        machine_bw.cell(1, 1.0, ""),
        q.cell(0, 100.0, "%"),
        ">= 70%".into(),
        match q.median() {
            Some(m) if m >= 0.7 => "met".into(),
            Some(_) => "NOT met".into(),
            None => "n/a".into(),
        },
    ]);
    print_table(
        &[
            "benchmark",
            "vnpu-engine",
            "peer",
            "peer value",
            "ratio",
            "target",
            "",
        ],
        &rows,
    );
}

/// Each variant against its float reference: SmolLM2's teacher-forced
/// top-1 agreement with llama.cpp on F32 weights, MiniLM's embedding
/// cosine against ONNX Runtime's float graph. The engine is scored here
/// against the references the peers computed.
fn print_accuracy(peers: &[Peer], models: &mut Models, acc_sents: &[Vec<u32>]) -> BoxResult<()> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    if let Some(p) = peers.iter().find(|p| p.name == "llama.cpp") {
        let ids = |v: &Value| -> Vec<u32> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|x| x.as_u64().map(|x| x as u32))
                .collect()
        };
        let (passage, reference) = (ids(&p.ready["passage"]), ids(&p.ready["reference_top1"]));
        let opts = ForwardOpts {
            logits: Logits::All,
            ..Default::default()
        };
        let m = &models.llama;
        let out = m.forward(Input::Tokens(&passage), 0, &mut models.kv, &opts)?;
        let logits = out.logits.unwrap_or_default();
        let ours: Vec<u32> = logits
            .chunks_exact(m.cfg.vocab)
            .map(|l| argmax(l) as u32)
            .collect();
        let same = ours.iter().zip(&reference).filter(|(a, b)| a == b).count();
        let refname = "top-1 agreement with llama.cpp on F32 weights";
        rows.push(vec![
            "SmolLM2".into(),
            "vnpu-engine (Q4_1 weights, int8 activations)".into(),
            format!(
                "{:.1}% of {} positions",
                100.0 * same as f64 / reference.len().max(1) as f64,
                reference.len()
            ),
            refname.into(),
        ]);
        for variant in ["Q4_1", "Q4_0"] {
            let v = &p.ready["variants"][variant];
            rows.push(vec![
                "SmolLM2".into(),
                format!("{} {variant}", p.engine()),
                format!(
                    "{:.1}% of {} positions",
                    100.0 * v["top1_agree"].as_f64().unwrap_or(f64::NAN),
                    v["positions"]
                ),
                refname.into(),
            ]);
        }
    }
    if let Some(p) = peers.iter().find(|p| p.name == "ONNX Runtime") {
        let refname = "embedding cosine with ONNX Runtime float, mean (min)";
        let reference: Vec<Vec<f32>> = p.ready["reference_embeddings"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| {
                e.as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|x| x.as_f64().map(|x| x as f32))
                    .collect()
            })
            .collect();
        let mut cs = Vec::new();
        for (ids, r) in acc_sents.iter().zip(&reference) {
            cs.push(cosine(&models.bert.embed(ids)?, r));
        }
        let cos_cell = |mean: f64, min: f64| format!("{mean:.5} ({min:.5})");
        let mean = cs.iter().sum::<f64>() / cs.len().max(1) as f64;
        let min = cs.iter().copied().fold(f64::INFINITY, f64::min);
        rows.push(vec![
            "MiniLM".into(),
            "vnpu-engine (Q8_0 weights, int8 activations)".into(),
            cos_cell(mean, min),
            refname.into(),
        ]);
        let v = &p.ready["variants"]["int8"];
        rows.push(vec![
            "MiniLM".into(),
            format!("{} int8", p.engine()),
            cos_cell(
                v["cos_mean"].as_f64().unwrap_or(f64::NAN),
                v["cos_min"].as_f64().unwrap_or(f64::NAN),
            ),
            refname.into(),
        ]);
    }
    if !rows.is_empty() {
        println!();
        println!(
            "accuracy against float references ({} sentences for MiniLM)",
            acc_sents.len()
        );
        print_table(&["model", "variant", "accuracy", "against"], &rows);
    }
    Ok(())
}

type GemmRow = (&'static str, f64, f64);

/// The int8 GEMMs on an FFN-shaped problem (1536 x 576, 128 tokens):
/// GOPS per CPU-second of one thread and on the pool, best of `runs`.
fn gemm_bench(exec: &Exec, runs: usize) -> BoxResult<(Vec<GemmRow>, Option<PeakProbe>)> {
    let (grows, gk, gn) = (1536, 576, 128);
    let mut rng = Rng::new(3);
    let wf = rng.vec(grows * gk, 0.05);
    let xf = rng.vec(gn * gk, 1.0);
    let mut gx = ActQ8::default();
    gx.quantize(&xf, gn, gk);
    let w4b = AlignedBytes::from_slice(&quant::quantize_q4_1(&wf, grows, gk));
    let w8b = AlignedBytes::from_slice(&quant::quantize_q8_0(&wf, grows, gk));
    let w4 = Q4_1Mat::from_bytes(&w4b, grows, gk)?;
    let w8 = Q8_0Mat::from_bytes(&w8b, grows, gk)?;
    let mut out = vec![0f32; gn * grows];
    let ops = 2.0 * (grows * gk * gn) as f64;
    let mut rows = Vec::new();
    for (name, isq4) in [("q4_1", true), ("q8_0", false)] {
        let w = if isq4 {
            vnpu_engine::QMat::Q4_1(w4)
        } else {
            vnpu_engine::QMat::Q8_0(w8)
        };
        exec.matmul(&w, &gx, &mut out); // wakes the pool
        best_of(runs, || {
            let o = OutMat::new(&mut out, gn, grows);
            // SAFETY: `exec.isa` was detected on this CPU; the operands
            // were built with the shapes passed.
            unsafe {
                if isq4 {
                    kernels::gemm_q4_1(exec.isa, &w4, &gx, 0, grows, o)
                } else {
                    kernels::gemm_q8_0(exec.isa, &w8, &gx, 0, grows, o)
                }
            }
        });
        let cpu = LAST_CPU.with(|l| l.get());
        let tp = best_of(runs, || exec.matmul(&w, &gx, &mut out));
        rows.push((name, ops / cpu / 1e9, ops / tp / 1e9));
    }
    Ok((rows, kernels::probe_peak(exec.isa)))
}

fn print_gemm(rows: &[GemmRow], peak: Option<PeakProbe>, threads: usize, runs: usize) {
    let frac = |v: f64, cores: usize| {
        peak.map_or("-".into(), |p| {
            format!("{:.0}%", 100.0 * v / (p.core_gops() * cores as f64))
        })
    };
    let mut t = Vec::new();
    for &(name, per_cpu, pooled) in rows {
        t.push(vec![
            format!("GEMM {name} 1536x576x128, 1 thread (GOPS per cpu-second)"),
            format!("{per_cpu:.1}"),
            frac(per_cpu, 1),
        ]);
        t.push(vec![
            format!("GEMM {name} 1536x576x128, {threads} threads (GOPS)"),
            format!("{pooled:.1}"),
            frac(pooled, threads),
        ]);
    }
    println!();
    println!("engine kernels, best of {runs}");
    print_table(&["kernel", "vnpu-engine", "of int8 peak"], &t);
    if let Some(p) = peak {
        println!(
            "int8 peak per core = {:.2} GHz (measured: chain of dependent adds) x {:.2} int8 multiplies/cycle \
             (measured: independent vpmaddubsw ymm or vpdpbusd zmm) x {} MAC x 2 ops = {:.0} GOPS",
            p.ghz,
            p.mul_per_cycle,
            p.macs_per_mul,
            p.core_gops()
        );
    }
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}
