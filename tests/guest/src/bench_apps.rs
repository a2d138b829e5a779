//! `--bench-apps`: many apps, one NPU, through the real driver and vnpud
//! (`cargo xtask bench apps`, on the release kernel with the real model).
//! A benchmark, not a test: it prints one table and asserts nothing but
//! that every job succeeded.
//!
//! - N = 1, 2, 4, 8 generating apps, each its own process, context and
//!   LoRA adapter, each feeding an 8-token prompt and then 31 decode steps
//!   (32 tokens out): aggregate tokens/s run one after another (serial)
//!   against all at once, where vnpud batches their steps; per-app p50/p99
//!   step latency and Jain's fairness index over the apps' tokens/s; and
//!   the same sessions on the engine in this process, the bound on what
//!   batching can gain on this CPU.
//! - A light app (one EMBED at a time) alone, and next to an app that
//!   keeps `ctx_max_jobs` EMBEDs in flight: the light app's p50/p99.
//!
//! `--bench-app generate SEED` and `--bench-app flood` are the app
//! processes: they say `ready`, wait for the line `go`, run, and report.

use std::io::BufRead;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use m4npu::{model, Device, JobDesc, Op};
use m4npu_format::job_io::{GenerateOutput, Input, HEADER_BYTES, STATE_KV_OFFSET};

use crate::children::Helper;
use crate::vnpu::{start_vnpud, stop, stop_reporting, FIRMWARE};
use m4npu_hw::JobBuffers;
use vnpu_engine::AlignedBytes;
use vnpud::adapter::TaskAdapter;
use vnpud::execute;
use vnpud::foundation::{sub_models, Foundation};

const PROMPT: usize = 8;
const TOKENS: usize = 32;
const LIGHT_JOBS: usize = 40;

fn percentile(v: &[f64], p: f64) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn jain(x: &[f64]) -> f64 {
    let (s, q): (f64, f64) = (x.iter().sum(), x.iter().map(|v| v * v).sum());
    s * s / (x.len() as f64 * q)
}

/// What a generating app reports: seconds from its first job to its last,
/// and each step's latency in seconds.
struct Report {
    elapsed: f64,
    steps: Vec<f64>,
}

fn parse_report(line: &str) -> Option<Report> {
    let mut w = line.strip_prefix("done ")?.split(' ');
    let elapsed = w.next()?.parse().ok()?;
    let steps = w.next()?.split(',').map(|s| s.parse().ok()).collect::<Option<Vec<f64>>>()?;
    Some(Report { elapsed, steps })
}

/// Starts `n` generating apps, lets them go together, collects reports.
fn run_apps(seeds: &[u64]) -> Result<Vec<Report>> {
    let mut apps: Vec<Helper> = seeds.iter().map(|s| Helper::spawn(&["--bench-app", "generate", &s.to_string()])).collect::<Result<_>>()?;
    for a in apps.iter_mut() {
        a.expect_line("ready")?;
    }
    for a in apps.iter_mut() {
        a.send("go")?;
    }
    let mut reports = Vec::new();
    for a in apps.iter_mut() {
        reports.push(a.expect("its report", parse_report)?);
        a.finish()?;
    }
    Ok(reports)
}

/// Runs the apps of `seeds` at once on a vnpud of their own; their
/// reports, and what vnpud says it served.
fn run_batched(seeds: &[u64]) -> Result<(Vec<Report>, String)> {
    let vnpud = start_vnpud(16)?;
    let reports = run_apps(seeds)?;
    Ok((reports, stop_reporting(vnpud)?))
}

pub fn main(_args: &[String]) -> Result<()> {
    println!("many apps, one NPU: {PROMPT}-token prompt + {} decode steps per app, each app its own process, context and LoRA", TOKENS - 1);
    println!(
        "{:>5} {:>12} {:>12} {:>7} {:>10} {:>10} {:>7}",
        "apps", "serial tok/s", "batch tok/s", "ratio", "p50 ms", "p99 ms", "Jain"
    );
    for n in [1usize, 2, 4, 8] {
        let seeds: Vec<u64> = (0..n as u64).map(|i| 100 + i).collect();
        // Serial: the same apps, one after another.
        let mut serial_time = 0.0;
        let vnpud = start_vnpud(16)?;
        for &s in &seeds {
            serial_time += run_apps(&[s])?[0].elapsed;
        }
        stop(vnpud)?;
        let (reports, served) = run_batched(&seeds)?;
        let wall = reports.iter().map(|r| r.elapsed).fold(0.0, f64::max);
        let tokens = (n * TOKENS) as f64;
        let steps: Vec<f64> = reports.iter().flat_map(|r| r.steps.iter().copied()).collect();
        let rates: Vec<f64> = reports.iter().map(|r| TOKENS as f64 / r.elapsed).collect();
        println!(
            "{n:>5} {:>12.1} {:>12.1} {:>6.2}x {:>10.1} {:>10.1} {:>7.3}",
            tokens / serial_time,
            tokens / wall,
            serial_time / wall,
            percentile(&steps, 0.5) * 1e3,
            percentile(&steps, 0.99) * 1e3,
            jain(&rates)
        );
        println!("      vnpud (batched): {served}");
        if n > 1 {
            let dev = Device::open()?;
            println!("      the engine alone in this VM, batched/serial: {:.2}x", engine_alone(&dev, &seeds)?);
        }
    }

    // A light app next to a flooding one.
    let vnpud = start_vnpud(16)?;
    let dev = Device::open()?;
    let alone = light_app(&dev)?;
    let mut flood = Helper::spawn(&["--bench-app", "flood", "0"])?;
    flood.expect_line("ready")?;
    flood.send("go")?;
    flood.expect_line("flooding")?;
    let crowded = light_app(&dev)?;
    flood.send("stop")?;
    let flooded: u64 = flood.expect("the flood's job count", |l| l.strip_prefix("flooded ")?.parse().ok())?;
    flood.finish()?;
    println!("light app, one EMBED at a time ({LIGHT_JOBS} jobs):");
    println!("{:>28} {:>10} {:>10}", "", "p50 ms", "p99 ms");
    println!("{:>28} {:>10.1} {:>10.1}", "alone", percentile(&alone, 0.5) * 1e3, percentile(&alone, 0.99) * 1e3);
    println!(
        "{:>28} {:>10.1} {:>10.1}",
        "next to a flooding app",
        percentile(&crowded, 0.5) * 1e3,
        percentile(&crowded, 0.99) * 1e3
    );
    println!("(the flooding app kept ctx_max_jobs EMBEDs in flight and completed {flooded} of them)");
    drop(dev);
    println!("vnpud: {}", stop_reporting(vnpud)?);
    Ok(())
}

/// The same sessions' steps on the engine in this process (vnpud's
/// executor, no driver, no vnpud): batched against one after another,
/// what batching can gain on this CPU at best.
fn engine_alone(dev: &Device, seeds: &[u64]) -> Result<f64> {
    let blob = AlignedBytes::from_slice(&std::fs::read(FIRMWARE).with_context(|| format!("reading {FIRMWARE}"))?);
    let subs = sub_models(&blob).map_err(anyhow::Error::msg)?;
    let model = Foundation::build(&subs).map_err(anyhow::Error::msg)?;
    let llama = model.backbone.as_ref().context("no backbone")?;
    let blobs: Vec<AlignedBytes> = seeds.iter().map(|&s| Ok(AlignedBytes::from_slice(&adapter_blob(dev, s)?))).collect::<Result<_>>()?;
    let adapters: Vec<TaskAdapter<'_>> = blobs.iter().map(|b| TaskAdapter::parse(b, &model).map_err(anyhow::Error::msg)).collect::<Result<_>>()?;
    let n = seeds.len();
    let state_len = STATE_KV_OFFSET + llama.cfg.kv_bytes_per_token() * (PROMPT + TOKENS);
    let out_len = HEADER_BYTES + 4 * llama.cfg.vocab;
    // Sessions `apps` at once, steps in lock step; their seconds.
    let run = |apps: &[usize]| -> Result<f64> {
        let mut states: Vec<AlignedBytes> = apps.iter().map(|_| AlignedBytes::zeroed(state_len)).collect();
        let mut outs = vec![vec![0u8; out_len]; apps.len()];
        let mut next: Vec<Vec<u32>> = apps.iter().map(|&i| prompt(seeds[i])).collect();
        let t = Instant::now();
        for _ in 0..TOKENS {
            let inputs: Vec<Vec<u8>> = next.iter().map(|ids| Input::Tokens(ids.clone()).encode()).collect();
            let jobs = inputs
                .iter()
                .zip(outs.iter_mut())
                .zip(states.iter_mut())
                .zip(apps)
                .map(|(((input, output), state), &i)| (JobBuffers { input, output, state: Some(&mut state[..]), adapter: None }, Some(&adapters[i])))
                .collect();
            for (r, (out, next)) in execute::generate_batch(&model, jobs).into_iter().zip(outs.iter().zip(next.iter_mut())) {
                let len = r.map_err(|e| anyhow::anyhow!("engine step: {e}"))?;
                *next = vec![GenerateOutput::decode(&out[..len])?.next_token];
            }
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let serial = (0..n).map(|i| run(&[i])).sum::<Result<f64>>()?;
    let all: Vec<usize> = (0..n).collect();
    Ok(serial / run(&all)?)
}

/// An app's prompt tokens.
fn prompt(seed: u64) -> Vec<u32> {
    (0..PROMPT as u64).map(|t| 200 + ((seed * 17 + t * 31) % 2000) as u32).collect()
}

/// EMBED tokens for the text encoder: a short sentence's worth.
fn sentence(i: usize) -> Vec<u32> {
    (0..12).map(|t| 1000 + ((i * 7 + t * 13) % 5000) as u32).collect()
}

/// The light app: one EMBED at a time; each job's latency in seconds.
fn light_app(dev: &Device) -> Result<Vec<f64>> {
    let d = dev.model_meta()?.shape(model::TEXT_ENCODER)?.d_model;
    let mut out = Vec::new();
    for i in 0..LIGHT_JOBS {
        let t = Instant::now();
        dev.embed_tokens(&sentence(i), d)?;
        out.push(t.elapsed().as_secs_f64());
    }
    Ok(out)
}

/// A generation adapter for the loaded backbone: rank-8 LoRA on q and o of
/// the first two layers (d_model wide both ways), its factors from `seed`.
fn adapter_blob(dev: &Device, seed: u64) -> Result<Vec<u8>> {
    let hash = dev.info()?.model.context("no model")?.hash;
    let d = dev.model_meta()?.shape(model::BACKBONE)?.d_model;
    crate::adapter_tasks::generation_adapter(hash, seed, d, 8, &[(0, "q"), (0, "o"), (1, "q"), (1, "o")], 0.05)
}

fn wait_for_go() -> Result<()> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    ensure!(line.trim() == "go", "expected go, got {line:?}");
    Ok(())
}

/// `--bench-app generate SEED | flood 0`.
pub fn app(args: &[String]) -> Result<()> {
    let (kind, seed) = (args.first().context("KIND")?.as_str(), args.get(1).context("SEED")?.parse::<u64>()?);
    let dev = Device::open()?;
    match kind {
        "generate" => generate(&dev, seed),
        "flood" => flood(&dev),
        other => bail!("unknown app {other:?}"),
    }
}

fn generate(dev: &Device, seed: u64) -> Result<()> {
    let shape = dev.model_meta()?.shape(model::BACKBONE)?;
    let adapter = dev.load_adapter(&adapter_blob(dev, seed)?)?;
    let mut input = dev.alloc(4096)?;
    let output = dev.alloc(HEADER_BYTES + 4 * shape.vocab)?;
    let state = dev.alloc(STATE_KV_OFFSET + shape.kv_bytes_per_token * (PROMPT + TOKENS))?;
    let mut next = prompt(seed);
    println!("ready");
    wait_for_go()?;
    let start = Instant::now();
    let mut steps = Vec::with_capacity(TOKENS);
    for _ in 0..TOKENS {
        let len = Input::Tokens(std::mem::take(&mut next)).encode_into(input.as_mut_slice())?;
        let job = JobDesc::new(Op::Generate)
            .input(&input, 0, len)
            .output(&output, 0, output.len())
            .state(&state, 0, state.len())
            .adapter(&adapter);
        let t = Instant::now();
        let n = dev.run(&job)?;
        steps.push(t.elapsed().as_secs_f64());
        next = vec![GenerateOutput::decode(&output.as_slice()[..n])?.next_token];
    }
    let elapsed = start.elapsed().as_secs_f64();
    let steps: Vec<String> = steps.iter().map(|s| format!("{s:.6}")).collect();
    println!("done {elapsed:.6} {}", steps.join(","));
    Ok(())
}

/// Keeps as many EMBEDs in flight as the context may have, until `stop`.
fn flood(dev: &Device) -> Result<()> {
    let d = dev.model_meta()?.shape(model::TEXT_ENCODER)?.d_model;
    const IN: usize = 256;
    let depth = 256;
    let mut input = dev.alloc(depth * IN)?;
    let output = dev.alloc(depth * d * 4)?;
    let mut lens = Vec::new();
    for i in 0..depth {
        lens.push(Input::Tokens(sentence(i)).encode_into(&mut input.as_mut_slice()[i * IN..][..IN])?);
    }
    let job = |i: usize| JobDesc::new(Op::Embed).input(&input, i * IN, lens[i]).output(&output, i * d * 4, d * 4);
    let mut ring = dev.ring(depth as u32)?;
    println!("ready");
    wait_for_go()?;
    // Stop when told; the line arrives on a thread of its own.
    let (tx, stop) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        let _ = tx.send(());
    });
    for i in 0..depth {
        ring.push(&job(i), i as u64)?;
    }
    ring.submit()?;
    println!("flooding");
    let mut done = 0u64;
    while stop.try_recv().is_err() {
        for c in ring.wait_timeout(1, Duration::from_secs(1))? {
            c.result().with_context(|| format!("flood job {}", c.user_data))?;
            done += 1;
            ring.push(&job(c.user_data as usize), c.user_data)?;
        }
        ring.submit()?;
    }
    // Let the ring's jobs finish before the buffers go.
    let mut left = ring.pending();
    while left > 0 {
        left -= ring.wait(left)?.len();
    }
    println!("flooded {done}");
    Ok(())
}
