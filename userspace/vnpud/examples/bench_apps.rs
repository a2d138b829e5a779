//! Many apps, one NPU, on the host path: N apps simulated on vnpud's
//! executor (no VM, no driver), each with its own session and adapter.
//!
//!   cargo run -p vnpud --release --example bench_apps -- [--firmware PATH | --synthetic] [--rounds R] [--apps 1,2,4,8]
//!
//! The model: `--firmware PATH` (an `.m4fw` from `m4 pack firmware`), else
//! `target/guest/foundation.m4fw` if a guest build left one, else the
//! synthetic tiny model built in-process (as `m4 pack firmware --synthetic 1`
//! packs it; `--synthetic` asks for it explicitly).
//!
//! For N = 1, 2, 4, 8 apps:
//! - generate: each app has its own session (its own KV state range) and
//!   its own rank-8 LoRA on q and v of every backbone layer, prefills an
//!   8-token prompt and generates 32 tokens (the prefill job gives the first
//!   one, 31 one-token decode jobs the rest). "serial": the apps' jobs one
//!   after another through `execute::run_with`, round-robin, as a
//!   one-job-at-a-time device serves them. "batched": each step of all N
//!   apps as one `execute::generate_batch` call, as vnpud runs the steps of
//!   one fetch (the N prefills of step 0 go through the same call, which
//!   runs prefills one by one). Adapters are parsed once beforehand, as
//!   vnpud's adapter cache does, so neither side pays for parsing.
//! - classify: each app has a feature classifier (input projection from 16
//!   features, rank-8 LoRA on q and v of every layer, mean pooling, a
//!   4-label head) and runs 32 CLASSIFY jobs of 8 feature rows. "serial":
//!   one after another through `run_with`; "batched": job `j` of all N
//!   apps as one `execute::pooled_batch_jobs` call (the backbone once for
//!   all, each app's LoRA on its own rows), as vnpud runs a round's
//!   classifications. Outputs must be equal, bit for bit.
//!
//! Columns. tok/s (jobs/s for classify) is aggregate: all apps' generated
//! tokens over the wall time of the whole run, prefill included;
//! "decode ratio" is batched/serial over the 31 decode steps alone. A step's
//! latency for an app is the time from the moment all N apps' steps are
//! there to the moment its own result is: the batch call that carried it
//! (batched), or its wait in the round-robin round (serial; the app served
//! last waits for all N jobs). p50/p99 are over decode steps, pooled over
//! rounds, for the worst app; "first token" is the same for the prefill
//! step. Jain's fairness index is over the apps' throughput (tokens of the
//! app / time until its last token): the apps here are equal and move in
//! lock step, so batched it is exactly 1 by construction and serial it is
//! within a hair of 1 (the last app in the round finishes a job later). It
//! is a sanity check of the harness, not a measure of vnpud's scheduling
//! under unequal load.
//!
//! Every round checks that batched and serial gave each app the same
//! tokens, the same last output (logits included) and the same final state,
//! bit for bit, and aborts if not. Serial and batched alternate (which goes
//! first alternates too) over R rounds (default 3); the table gives the
//! median and min–max over rounds, the ratio taken per round.

use std::path::PathBuf;
use std::time::Instant;

use m4npu::Op;
use m4npu_format::adapter_meta::{lora_name, AdapterMeta, AdapterTask, Pooling, SubModel};
use m4npu_format::job_io::{f32s, GenerateOutput, Input, StateHeader, HEADER_BYTES, STATE_KV_OFFSET};
use m4npu_format::AdapterBuilder;
use m4npu_hw::JobBuffers;
use vnpu_engine::models::synthetic::Rng;
use vnpu_engine::{AlignedBytes, LlamaConfig};
use vnpud::adapter::TaskAdapter;
use vnpud::execute::{generate_batch, pooled_batch_jobs, run_with};
use vnpud::foundation::{sub_models, Foundation, SubModel as Sub, SyntheticWeights};

/// App counts measured, unless `--apps` names others.
const APPS: [usize; 4] = [1, 2, 4, 8];
const PROMPT: usize = 8;
/// Generated tokens per app: the prefill's one, then one per decode step.
const TOKENS: usize = 32;
const RANK: usize = 8;
const FEATURES: usize = 16;
const FEATURE_ROWS: usize = 8;
const LABELS: usize = 4;
const CLASSIFY_JOBS: usize = 32;

/// Where the weights live: a firmware file read into aligned memory (as
/// the driver pins it), or the synthetic tiny model built here.
enum Weights {
    Firmware(AlignedBytes),
    Synthetic(SyntheticWeights),
}

impl Weights {
    fn subs(&self) -> Result<Vec<Sub<'_>>, String> {
        match self {
            Weights::Firmware(blob) => sub_models(blob),
            Weights::Synthetic(w) => Ok(w.sub_models()),
        }
    }
}

fn meta(task: AdapterTask) -> AdapterMeta {
    AdapterMeta {
        task,
        submodel: SubModel::Backbone,
        labels: vec![],
        pooling: Pooling::Mean,
        feature_dim: None,
        text_embedding: None,
        layers: None,
        lora_alpha: 2.0 * RANK as f32,
        description: String::new(),
    }
}

/// Rank-8 LoRA on q and v of every layer, LoRA-style init scale: A ~ 1/sqrt(in),
/// B small but non-zero (a trained adapter's B is not zero).
fn add_lora(b: &mut AdapterBuilder, rng: &mut Rng, c: &LlamaConfig) {
    for layer in 0..c.n_layer {
        for proj in ["q", "v"] {
            let p = vnpud::adapter::proj_named(proj).expect("q and v");
            let (i, o) = c.proj_dims(p);
            let a = rng.vec(RANK * i, 1.0 / (i as f32).sqrt());
            let bb = rng.vec(o * RANK, 0.02);
            b.tensor_f32(&lora_name(layer, proj, "a"), &[RANK, i], &a).expect("lora a");
            b.tensor_f32(&lora_name(layer, proj, "b"), &[o, RANK], &bb).expect("lora b");
        }
    }
}

fn generate_adapter(k: usize, rng: &mut Rng, c: &LlamaConfig) -> AlignedBytes {
    let mut b = AdapterBuilder::new(&format!("gen{k}"), [k as u8; 32]);
    b.meta(meta(AdapterTask::Generate).to_json());
    add_lora(&mut b, rng, c);
    AlignedBytes::from_slice(&b.build().expect("generate adapter"))
}

fn classify_adapter(k: usize, rng: &mut Rng, c: &LlamaConfig) -> AlignedBytes {
    let d = c.d_model;
    let mut m = meta(AdapterTask::Classify);
    m.feature_dim = Some(FEATURES as u32);
    m.labels = (0..LABELS).map(|i| format!("l{i}")).collect();
    let mut b = AdapterBuilder::new(&format!("cls{k}"), [100 + k as u8; 32]);
    b.meta(m.to_json());
    add_lora(&mut b, rng, c);
    b.tensor_f32("input.weight", &[d, FEATURES], &rng.vec(d * FEATURES, 1.0 / (FEATURES as f32).sqrt())).unwrap();
    b.tensor_f32("input.bias", &[d], &rng.vec(d, 0.1)).unwrap();
    b.tensor_f32("head.weight", &[LABELS, d], &rng.vec(LABELS * d, 1.0 / (d as f32).sqrt())).unwrap();
    b.tensor_f32("head.bias", &[LABELS], &rng.vec(LABELS, 0.1)).unwrap();
    AlignedBytes::from_slice(&b.build().expect("classify adapter"))
}

/// One generation run of N apps: what it produced and how long it took.
struct GenRun {
    wall: f64,
    /// Wall time of the decode steps (after every app's prefill).
    decode_wall: f64,
    tokens: Vec<Vec<u32>>,
    last_out: Vec<Vec<u8>>,
    states: Vec<AlignedBytes>,
    /// Per app: step latencies (step 0 = the prefill).
    lat: Vec<Vec<f64>>,
    /// Per app: time from the start to its last token.
    finish: Vec<f64>,
}

struct Setup<'f> {
    f: &'f Foundation<'f>,
    state_len: usize,
    out_len: usize,
    prompts: Vec<Vec<u32>>,
}

impl<'f> Setup<'f> {
    fn fresh(&self, n: usize) -> (Vec<AlignedBytes>, Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let states = (0..n).map(|_| AlignedBytes::zeroed(self.state_len)).collect();
        let outs = vec![vec![0u8; self.out_len]; n];
        let inputs = self.prompts[..n].iter().map(|p| Input::Tokens(p.clone()).encode()).collect();
        (states, outs, inputs)
    }

    /// Reads app `i`'s output after step `s`: its token, and its next input.
    fn took(&self, i: usize, s: usize, r: Result<usize, nix::errno::Errno>, out: &[u8], run: &mut GenRun) -> Vec<u8> {
        let n = r.unwrap_or_else(|e| panic!("app {i} step {s}: GENERATE failed: {e}"));
        let g = GenerateOutput::decode(out).expect("GENERATE output");
        assert_eq!(g.n_past as usize, PROMPT + s, "app {i} step {s}: n_past");
        assert_eq!(n, HEADER_BYTES + 4 * g.n_logits as usize, "app {i} step {s}: output size");
        run.tokens[i].push(g.next_token);
        Input::Tokens(vec![g.next_token]).encode()
    }

    fn new_run(n: usize) -> GenRun {
        GenRun {
            wall: 0.0,
            decode_wall: 0.0,
            tokens: vec![Vec::new(); n],
            last_out: Vec::new(),
            states: Vec::new(),
            lat: vec![Vec::with_capacity(TOKENS); n],
            finish: vec![0.0; n],
        }
    }

    /// The apps' generations: each step one job at a time, round-robin,
    /// through `run_with` (serial), or all apps' steps as one
    /// `generate_batch` call (batched).
    fn generate(&self, ads: &[TaskAdapter<'_>], batched: bool) -> GenRun {
        let n = ads.len();
        let (mut states, mut outs, mut inputs) = self.fresh(n);
        let mut run = Self::new_run(n);
        let t0 = Instant::now();
        let mut decode_t0 = 0.0;
        for s in 0..TOKENS {
            if s == 1 {
                decode_t0 = t0.elapsed().as_secs_f64();
            }
            let step = Instant::now();
            // Each job's result, its latency in the step and when it ended.
            let done: Vec<(Result<usize, nix::errno::Errno>, f64, f64)> = if batched {
                let jobs = outs
                    .iter_mut()
                    .zip(states.iter_mut())
                    .zip(&inputs)
                    .zip(ads)
                    .map(|(((out, state), input), a)| {
                        (JobBuffers { input, output: out, state: Some(&mut state[..]), adapter: None }, Some(a))
                    })
                    .collect();
                let results = generate_batch(self.f, jobs);
                let (dt, at) = (step.elapsed().as_secs_f64(), t0.elapsed().as_secs_f64());
                results.into_iter().map(|r| (r, dt, at)).collect()
            } else {
                (0..n)
                    .map(|i| {
                        let b = JobBuffers { input: &inputs[i], output: &mut outs[i], state: Some(&mut states[i][..]), adapter: None };
                        let r = run_with(self.f, Some(Op::Generate), b, Some(&ads[i]));
                        (r, step.elapsed().as_secs_f64(), t0.elapsed().as_secs_f64())
                    })
                    .collect()
            };
            for (i, (r, dt, at)) in done.into_iter().enumerate() {
                run.lat[i].push(dt);
                run.finish[i] = at;
                inputs[i] = self.took(i, s, r, &outs[i], &mut run);
            }
        }
        run.wall = t0.elapsed().as_secs_f64();
        run.decode_wall = run.wall - decode_t0;
        run.last_out = outs;
        run.states = states;
        run
    }
}

/// Batched must be serial, bit for bit: tokens, last outputs, final states.
fn check_equal(n: usize, serial: &GenRun, batched: &GenRun) {
    for i in 0..n {
        let why = if serial.tokens[i] != batched.tokens[i] {
            Some(format!("tokens\n  serial  {:?}\n  batched {:?}", serial.tokens[i], batched.tokens[i]))
        } else if serial.last_out[i] != batched.last_out[i] {
            Some("last output (logits)".to_string())
        } else if serial.states[i][..] != batched.states[i][..] {
            Some("final state (KV cache)".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            eprintln!("FATAL: N={n} app {i}: batched output differs from serial: {why}");
            std::process::exit(2);
        }
        let h = StateHeader::decode(&serial.states[i]).expect("state header");
        assert_eq!(h.n_past as usize, PROMPT + TOKENS - 1, "app {i}: tokens in the session");
        assert_eq!(serial.tokens[i].len(), TOKENS);
    }
}

/// N classify apps' runs: wall time, per-app job latencies, per-app finish
/// time, and every app's outputs (to compare serial with batched).
struct ClsRun {
    wall: f64,
    lat: Vec<Vec<f64>>,
    finish: Vec<f64>,
    outputs: Vec<Vec<Vec<u8>>>,
}

/// N classify apps, `CLASSIFY_JOBS` jobs each: round-robin through
/// `run_with` (serial), or job `j` of every app as one
/// `pooled_batch_jobs` call (batched).
#[allow(clippy::needless_range_loop)] // job j of every app
fn classify(f: &Foundation<'_>, ads: &[TaskAdapter<'_>], inputs: &[Vec<Vec<u8>>], batched: bool) -> ClsRun {
    let n = ads.len();
    let mut run = ClsRun { wall: 0.0, lat: vec![Vec::with_capacity(CLASSIFY_JOBS); n], finish: vec![0.0; n], outputs: vec![Vec::new(); n] };
    let t0 = Instant::now();
    for j in 0..CLASSIFY_JOBS {
        let round = Instant::now();
        let mut outs = vec![vec![0u8; 4 * LABELS]; n];
        let results: Vec<_> = if batched {
            let jobs = outs
                .iter_mut()
                .enumerate()
                .map(|(i, out)| (Some(Op::Classify), JobBuffers { input: &inputs[i][j], output: out, state: None, adapter: None }, Some(&ads[i]), 0))
                .collect();
            let r = pooled_batch_jobs(f, jobs);
            let at = (round.elapsed().as_secs_f64(), t0.elapsed().as_secs_f64());
            (0..n).for_each(|i| {
                run.lat[i].push(at.0);
                run.finish[i] = at.1;
            });
            r
        } else {
            outs.iter_mut()
                .enumerate()
                .map(|(i, out)| {
                    let b = JobBuffers { input: &inputs[i][j], output: out, state: None, adapter: None };
                    let r = run_with(f, Some(Op::Classify), b, Some(&ads[i]));
                    run.lat[i].push(round.elapsed().as_secs_f64());
                    run.finish[i] = t0.elapsed().as_secs_f64();
                    r
                })
                .collect()
        };
        for (i, (r, out)) in results.into_iter().zip(outs).enumerate() {
            let len = r.unwrap_or_else(|e| panic!("classify app {i} job {j}: {e}"));
            let logits = f32s(&out[..len]);
            assert!(logits.len() == LABELS && logits.iter().all(|v| v.is_finite()), "classify app {i}: {logits:?}");
            run.outputs[i].push(out);
        }
    }
    run.wall = t0.elapsed().as_secs_f64();
    run
}

fn jain(x: &[f64]) -> f64 {
    let s: f64 = x.iter().sum();
    let s2: f64 = x.iter().map(|v| v * v).sum();
    s * s / (x.len() as f64 * s2)
}

/// Nearest-rank percentile.
fn pct(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1]
}

fn median(v: &[f64]) -> f64 {
    pct(v, 50.0)
}

/// "median`unit` (min–max)" of the rounds.
fn spread(v: &[f64], prec: usize, unit: &str) -> String {
    let (lo, hi) = (v.iter().copied().fold(f64::INFINITY, f64::min), v.iter().copied().fold(0.0, f64::max));
    if v.len() == 1 {
        format!("{:.prec$}{unit}", v[0])
    } else {
        format!("{:.prec$}{unit} ({:.prec$}–{:.prec$})", median(v), lo, hi)
    }
}

/// Seconds as milliseconds, with the digits that mean something.
fn ms(s: f64) -> String {
    let m = s * 1e3;
    if m < 1.0 {
        format!("{m:.3}")
    } else if m < 10.0 {
        format!("{m:.2}")
    } else {
        format!("{m:.1}")
    }
}

/// Worst app's p50 / p99 over `per_app` latency samples (seconds), in ms.
fn worst_p50_p99(per_app: &[Vec<f64>]) -> String {
    let p50 = per_app.iter().map(|v| pct(v, 50.0)).fold(0.0, f64::max);
    let p99 = per_app.iter().map(|v| pct(v, 99.0)).fold(0.0, f64::max);
    format!("{} / {}", ms(p50), ms(p99))
}

fn loadavg() -> (String, f64) {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let three: Vec<&str> = s.split_whitespace().take(3).collect();
    let one = three.first().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    (if three.is_empty() { "?".into() } else { three.join(" ") }, one)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).and_then(|l| l.split(':').nth(1)).map(|m| m.trim().to_string()))
        .unwrap_or_else(|| "?".into())
}

fn print_table(head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let cells: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let pad = w[i] - c.chars().count();
                if i < 2 { format!("{c}{}", " ".repeat(pad)) } else { format!("{}{c}", " ".repeat(pad)) }
            })
            .collect();
        println!("| {} |", cells.join(" | "));
    };
    line(head.to_vec());
    println!("|{}|", w.iter().map(|n| "-".repeat(n + 2)).collect::<Vec<_>>().join("|"));
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

struct Args {
    firmware: Option<PathBuf>,
    synthetic: bool,
    rounds: usize,
    apps: Vec<usize>,
}

fn args() -> Args {
    let mut a = Args { firmware: None, synthetic: false, rounds: 3, apps: APPS.to_vec() };
    let mut it = std::env::args().skip(1);
    while let Some(s) = it.next() {
        match s.as_str() {
            "--firmware" => a.firmware = Some(it.next().expect("--firmware PATH").into()),
            "--synthetic" => a.synthetic = true,
            "--rounds" => a.rounds = it.next().and_then(|r| r.parse::<usize>().ok()).expect("--rounds R").max(1),
            "--apps" => {
                let list = it.next().expect("--apps N,N,...");
                a.apps = list.split(',').map(|n| n.trim().parse().ok().filter(|&n: &usize| n > 0).expect("--apps: counts > 0")).collect();
            }
            "-h" | "--help" => {
                println!("bench_apps [--firmware PATH | --synthetic] [--rounds R] [--apps 1,2,4,8]");
                std::process::exit(0);
            }
            other => panic!("unknown argument {other} (bench_apps [--firmware PATH | --synthetic] [--rounds R] [--apps 1,2,4,8])"),
        }
    }
    a
}

fn main() -> Result<(), String> {
    let args = args();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (load_start, load1) = loadavg();
    let loaded = load1 > cores as f64;
    println!(
        "load average (1/5/15 min) at start: {load_start} on {cores} cores{}",
        if loaded { "  ** LOADED: 1-min load exceeds the core count; numbers are suspect **" } else { "" }
    );

    let default_fw = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/guest/foundation.m4fw");
    let (weights, what) = match (&args.firmware, args.synthetic) {
        (Some(_), true) => return Err("--firmware and --synthetic exclude each other".into()),
        (None, true) => (Weights::Synthetic(SyntheticWeights::new(1)), "synthetic tiny model (in-process, as m4 pack firmware --synthetic 1)".to_string()),
        (Some(p), false) => {
            let blob = std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
            (Weights::Firmware(AlignedBytes::from_slice(&blob)), p.display().to_string())
        }
        (None, false) if default_fw.exists() => {
            let blob = std::fs::read(&default_fw).map_err(|e| format!("{}: {e}", default_fw.display()))?;
            let p = default_fw.canonicalize().unwrap_or(default_fw);
            (Weights::Firmware(AlignedBytes::from_slice(&blob)), p.display().to_string())
        }
        (None, false) => {
            println!("no {} (guest build) and no --firmware: using the synthetic tiny model", default_fw.display());
            (Weights::Synthetic(SyntheticWeights::new(1)), "synthetic tiny model (in-process)".to_string())
        }
    };
    let subs = weights.subs()?;
    let f = Foundation::build(&subs)?;
    let llama = f.backbone.as_ref().ok_or("the firmware has no backbone")?;
    let c = llama.cfg.clone();
    println!(
        "model: {what}\nbackbone: {} layers, d_model {}, vocab {}, kv {} B/token; {} rounds",
        c.n_layer,
        c.d_model,
        c.vocab,
        c.kv_bytes_per_token(),
        args.rounds
    );

    let max = *args.apps.iter().max().ok_or("--apps: no app count")?;
    let mut rng = Rng::new(42);
    let gen_blobs: Vec<AlignedBytes> = (0..max).map(|k| generate_adapter(k, &mut rng, &c)).collect();
    let cls_blobs: Vec<AlignedBytes> = (0..max).map(|k| classify_adapter(k, &mut rng, &c)).collect();
    let gen_ads: Vec<TaskAdapter<'_>> = gen_blobs.iter().map(|b| TaskAdapter::parse(b, &f)).collect::<Result<_, _>>()?;
    let cls_ads: Vec<TaskAdapter<'_>> = cls_blobs.iter().map(|b| TaskAdapter::parse(b, &f)).collect::<Result<_, _>>()?;
    let setup = Setup {
        f: &f,
        state_len: STATE_KV_OFFSET + c.kv_bytes(PROMPT + TOKENS),
        out_len: HEADER_BYTES + 4 * c.vocab,
        prompts: (0..max).map(|_| (0..PROMPT).map(|_| (rng.next_u64() % c.vocab as u64) as u32).collect()).collect(),
    };
    let cls_inputs: Vec<Vec<Vec<u8>>> = (0..max)
        .map(|_| {
            (0..CLASSIFY_JOBS)
                .map(|_| Input::Features { dim: FEATURES, data: rng.vec(FEATURE_ROWS * FEATURES, 1.0) }.encode())
                .collect()
        })
        .collect();

    // Warm-up (page in the weights, fill the thread pool), not measured.
    let w = setup.generate(&gen_ads[..1], false);
    let wb = setup.generate(&gen_ads[..1], true);
    check_equal(1, &w, &wb);
    classify(&f, &cls_ads[..1], &cls_inputs[..1], false);
    classify(&f, &cls_ads[..1], &cls_inputs[..1], true);

    let started = Instant::now();
    let mut rows = Vec::new();
    for &n in &args.apps {
        let ads = &gen_ads[..n];
        let (mut s_tps, mut b_tps, mut ratio, mut d_ratio, mut j_b) = (vec![], vec![], vec![], vec![], vec![]);
        let mut s_lat = vec![Vec::new(); n];
        let mut b_lat = vec![Vec::new(); n];
        let (mut s_first, mut b_first) = (vec![Vec::new(); n], vec![Vec::new(); n]);
        for round in 0..args.rounds {
            let (s, b) = if round % 2 == 0 {
                let s = setup.generate(ads, false);
                (s, setup.generate(ads, true))
            } else {
                let b = setup.generate(ads, true);
                (setup.generate(ads, false), b)
            };
            check_equal(n, &s, &b);
            let toks = (n * TOKENS) as f64;
            let dtoks = (n * (TOKENS - 1)) as f64;
            s_tps.push(toks / s.wall);
            b_tps.push(toks / b.wall);
            ratio.push(s.wall / b.wall);
            d_ratio.push((dtoks / b.decode_wall) / (dtoks / s.decode_wall));
            j_b.push(jain(&b.finish.iter().map(|t| TOKENS as f64 / t).collect::<Vec<_>>()));
            for i in 0..n {
                s_first[i].push(s.lat[i][0]);
                b_first[i].push(b.lat[i][0]);
                s_lat[i].extend_from_slice(&s.lat[i][1..]);
                b_lat[i].extend_from_slice(&b.lat[i][1..]);
            }
            eprintln!(
                "  generate N={n} round {}: serial {:.1} tok/s, batched {:.1} tok/s ({:.1}s elapsed)",
                round + 1,
                s_tps[round],
                b_tps[round],
                started.elapsed().as_secs_f64()
            );
        }
        let first_worst = |v: &[Vec<f64>]| ms(v.iter().map(|x| median(x)).fold(0.0, f64::max));
        rows.push(vec![
            format!("generate {PROMPT}+{TOKENS}"),
            n.to_string(),
            spread(&s_tps, 1, ""),
            spread(&b_tps, 1, ""),
            spread(&ratio, 2, "x"),
            format!("{:.2}x", median(&d_ratio)),
            worst_p50_p99(&s_lat),
            worst_p50_p99(&b_lat),
            format!("{} / {}", first_worst(&s_first), first_worst(&b_first)),
            format!("{:.4} (batched)", median(&j_b)),
        ]);
    }
    for &n in &args.apps {
        let (ads, inputs) = (&cls_ads[..n], &cls_inputs[..n]);
        let (mut s_jps, mut b_jps, mut ratio, mut j_s) = (vec![], vec![], vec![], vec![]);
        let (mut s_lat, mut b_lat) = (vec![Vec::new(); n], vec![Vec::new(); n]);
        for round in 0..args.rounds {
            let (s, b) = if round % 2 == 0 {
                let s = classify(&f, ads, inputs, false);
                (s, classify(&f, ads, inputs, true))
            } else {
                let b = classify(&f, ads, inputs, true);
                (classify(&f, ads, inputs, false), b)
            };
            assert!(s.outputs == b.outputs, "classify N={n}: batched outputs differ from serial");
            let jobs = (n * CLASSIFY_JOBS) as f64;
            s_jps.push(jobs / s.wall);
            b_jps.push(jobs / b.wall);
            ratio.push(s.wall / b.wall);
            j_s.push(jain(&s.finish.iter().map(|t| CLASSIFY_JOBS as f64 / t).collect::<Vec<_>>()));
            s.lat.into_iter().enumerate().for_each(|(i, v)| s_lat[i].extend(v));
            b.lat.into_iter().enumerate().for_each(|(i, v)| b_lat[i].extend(v));
        }
        eprintln!(
            "  classify N={n}: serial {:.1} jobs/s, batched {:.1} jobs/s ({:.1}s elapsed)",
            median(&s_jps),
            median(&b_jps),
            started.elapsed().as_secs_f64()
        );
        rows.push(vec![
            format!("classify {FEATURE_ROWS}x{FEATURES}"),
            n.to_string(),
            spread(&s_jps, 1, " jobs/s"),
            spread(&b_jps, 1, " jobs/s"),
            spread(&ratio, 2, "x"),
            "—".into(),
            worst_p50_p99(&s_lat),
            worst_p50_p99(&b_lat),
            "—".into(),
            format!("{:.4} (serial)", median(&j_s)),
        ]);
    }

    let (load_end, load1_end) = loadavg();
    println!();
    println!(
        "== vnpud bench apps (host path): {}, {cores} logical CPUs, engine isa {:?}, {} round(s), median (min–max) ==",
        cpu_model(),
        vnpu_engine::compute::kernels::detect(),
        args.rounds
    );
    println!(
        "model: {what}; generate = {PROMPT}-token prompt + {TOKENS} tokens per app, rank-{RANK} LoRA (q, v, every layer) per app; \
         classify = {CLASSIFY_JOBS} jobs of {FEATURE_ROWS}x{FEATURES} features per app, rank-{RANK} LoRA + head"
    );
    println!(
        "load average (1/5/15 min): start {load_start}, end {load_end}{}",
        if loaded || load1_end > cores as f64 { "  ** LOADED: load exceeded the core count **" } else { "" }
    );
    print_table(
        &[
            "workload",
            "apps",
            "serial tok/s",
            "batched tok/s",
            "batched/serial",
            "decode ratio",
            "serial step p50/p99 ms",
            "batched step p50/p99 ms",
            "first token ms s/b",
            "Jain",
        ],
        &rows,
    );
    println!("outputs equal: yes (every app, every round: tokens, last logits and final KV state of batched = serial, bit for bit; \
         classify logits too)");
    println!(
        "(Jain is 1 by construction here: equal apps in lock step. Step latency = from all N steps present to the app's \
         result; serial = its wait in the round-robin round.)"
    );
    Ok(())
}
