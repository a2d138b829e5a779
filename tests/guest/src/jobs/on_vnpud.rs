//! The driver's job tests with the virtual NPU as the device: real ops on
//! the tiny synthetic model from many processes at once, every output equal
//! to the engine's run on the same firmware in the submitting process; and
//! a killed vnpud failing its jobs, then restarting.

use anyhow::{ensure, Context, Result};
use m4npu::{Device, Errno, Error, JobDesc, Op, Priority};
use m4npu_format::job_io::{f32s, GenerateOutput, Input, STATE_KV_OFFSET};
use vnpud::execute::argmax;
use vnpud::foundation::{sub_models, Foundation};

use super::support::{device_state, pattern, DeviceState};
use crate::children::{Helper, HANG};
use crate::module;
use crate::vnpu::{start_vnpud, stop};

const TINY: &str = "/lib/firmware/m4npu/tiny.m4fw";
const PROCESSES: u32 = 4;
const PER_PROCESS: usize = 250;
/// Each job's slice of the input, output and state buffers.
const IN: usize = 256;
const OUT: usize = 1024;
const KV_TOKENS: usize = 16;

pub fn thousand_jobs_on_vnpud() -> Result<()> {
    module::reload("firmware=m4npu/tiny.m4fw")?;
    let mut vnpud = start_vnpud(16)?;
    let mut subs: Vec<Helper> = (0..PROCESSES)
        .map(|seed| Helper::spawn(&["--submit-vnpud-jobs", &PER_PROCESS.to_string(), &seed.to_string()]))
        .collect::<Result<_>>()?;
    for s in subs.iter_mut() {
        s.expect("ok", |l| (l == "ok").then_some(()))?;
        s.finish()?;
    }

    // Killed: vnpud asks for recovery, so a job submitted while it is gone
    // waits and the restarted vnpud runs it; stopped cleanly (SIGTERM), it
    // leaves nothing waiting, and jobs are refused at once.
    let dev = Device::open()?;
    let mut input = dev.alloc(IN)?;
    let len = Input::Tokens(vec![1, 2, 3]).encode_into(input.as_mut_slice())?;
    let output = dev.alloc(OUT)?;
    let embed = JobDesc::new(Op::Embed).input(&input, 0, len).output(&output, 0, OUT);
    ensure!(dev.run(&embed)? > 0, "vnpud is not serving");
    let want = output.as_slice().to_vec();
    vnpud.signal(libc::SIGKILL)?;
    let _ = vnpud.wait()?;
    ensure!(device_state()? == DeviceState::Recovering, "the driver does not wait for a killed vnpud to come back");
    let mut ring = dev.ring(4)?;
    ring.push(&embed, 1)?;
    ring.submit()?;
    let vnpud = start_vnpud(16)?;
    let done = ring.wait_timeout(1, HANG)?;
    ensure!(done.len() == 1 && done[0].res > 0, "the job across vnpud's restart: {done:?}");
    ensure!(output.as_slice() == want, "the job across vnpud's restart: another output");
    drop(ring);
    stop(vnpud)?;
    match dev.run(&embed) {
        Err(Error::NoNpuDevice) => Ok(()),
        other => anyhow::bail!("a job after vnpud stopped: {other:?}, want NoNpuDevice"),
    }
}

/// vnpud killed again and again while four apps' jobs stream through it
/// (`M4NPU_KILLS`, default 10; a long run sets more): with recovery, every
/// job still completes exactly once with the engine's output, and the pool
/// returns to where it was.
pub fn vnpud_killed_under_load() -> Result<()> {
    module::reload("firmware=m4npu/tiny.m4fw")?;
    let kills: usize = std::env::var("M4NPU_KILLS").ok().and_then(|v| v.parse().ok()).unwrap_or(10);
    let base = super::support::pool_used()?;
    let mut vnpud = start_vnpud(16)?;
    let mut subs: Vec<Helper> = (0..PROCESSES)
        .map(|seed| {
            let rounds = (kills / 5).max(1).to_string();
            Helper::spawn(&["--submit-vnpud-jobs", &PER_PROCESS.to_string(), &(10 + seed).to_string(), &rounds])
        })
        .collect::<Result<_>>()?;
    let mut killed = 0;
    while killed < kills {
        // Kill it while it holds jobs, whenever that is.
        let busy = crate::children::eventually("vnpud holds jobs", || {
            let state = super::support::debugfs_state()?;
            let at_device = state.lines().find_map(|l| l.strip_prefix("jobs:\t")).and_then(|l| l.split(", ").nth(1)).and_then(|l| l.split(' ').next()?.parse::<usize>().ok());
            Ok(match at_device {
                Some(n) if n > 0 => Ok(()),
                _ => Err(format!("no job at the device: {state}")),
            })
        });
        if busy.is_err() {
            break; // the apps are done
        }
        vnpud.signal(libc::SIGKILL)?;
        let _ = vnpud.wait()?;
        ensure!(device_state()? == DeviceState::Recovering, "vnpud killed with jobs: the driver does not wait for the next one");
        vnpud = start_vnpud(16)?;
        killed += 1;
    }
    for s in subs.iter_mut() {
        s.expect("ok", |l| (l == "ok").then_some(()))?;
        s.finish()?;
    }
    ensure!(killed >= kills.min(3), "vnpud was killed only {killed} times under load");
    println!("    vnpud killed {killed} times under load");
    stop(vnpud)?;
    // The apps' contexts go as io_uring lets go of their files.
    crate::children::eventually("the pool returns to its baseline", || {
        let used = super::support::pool_used()?;
        Ok(if used == base { Ok(()) } else { Err(format!("NPU memory in use: {used} bytes, {base} before")) })
    })
}

/// Token ids for job `i` of process `seed`, inside the tiny vocabularies.
fn tokens(seed: u32, i: usize, vocab: usize) -> Vec<u32> {
    let mut b = [0u8; 6];
    pattern(seed, i as u32, &mut b);
    b.iter().map(|&v| 1 + u32::from(v) % (vocab as u32 - 1)).collect()
}

/// `--submit-vnpud-jobs COUNT SEED [ROUNDS]`: COUNT jobs (ECHO, EMBED,
/// GENERATE in turn, all priorities) over one io_uring, ROUNDS times (1);
/// checks every completion against the reference run in this process.
/// Prints `ok`.
pub fn submit_vnpud_jobs(args: &[String]) -> Result<()> {
    let count: usize = args.first().context("COUNT")?.parse()?;
    let seed: u32 = args.get(1).context("SEED")?.parse()?;
    let rounds: u64 = args.get(2).map(|r| r.parse()).transpose()?.unwrap_or(1);
    let fw = vnpu_engine::AlignedBytes::from_slice(&std::fs::read(TINY)?);
    let subs = sub_models(&fw).map_err(anyhow::Error::msg)?;
    let reference = Foundation::build(&subs).map_err(anyhow::Error::msg)?;
    let (llama, bert) = (reference.backbone.as_ref().context("backbone")?, reference.text_encoder.as_ref().context("text encoder")?);
    let vocab = llama.cfg.vocab.min(bert.cfg.vocab);
    let state_len = STATE_KV_OFFSET + llama.cfg.kv_bytes(KV_TOKENS);

    let dev = Device::open()?;
    let mut input = dev.alloc(count * IN)?;
    let output = dev.alloc(count * OUT)?;
    let mut state = dev.alloc(count.div_ceil(3) * state_len)?;
    let ops = [Op::Echo, Op::Embed, Op::Generate];
    let prios = [Priority::Normal, Priority::High, Priority::Low];
    let mut ring = dev.ring(256)?;
    let mut lens = Vec::with_capacity(count);
    for i in 0..count {
        let chunk = &mut input.as_mut_slice()[i * IN..(i + 1) * IN];
        let len = match ops[i % 3] {
            Op::Echo => {
                pattern(seed, i as u32, chunk);
                IN
            }
            _ => Input::Tokens(tokens(seed, i, vocab)).encode_into(chunk)?,
        };
        lens.push(len);
    }
    for round in 1..=rounds {
        // Fresh sessions each round: every GENERATE job is a prompt.
        state.as_mut_slice().fill(0);
        for i in 0..count {
            let op = ops[i % 3];
            let mut job =
                JobDesc::new(op).input(&input, i * IN, lens[i]).output(&output, i * OUT, OUT).priority(prios[i / 3 % 3]);
            if op == Op::Generate {
                job = job.state(&state, i / 3 * state_len, state_len);
            }
            ring.push(&job, i as u64)?;
        }
        ring.submit()?;

        let done = ring.wait_timeout(count, HANG)?;
        ensure!(done.len() == count, "{} of {count} jobs completed within {} s", done.len(), HANG.as_secs());
        let mut seen = vec![0u32; count];
        let mut res = vec![0usize; count];
        for c in &done {
            let i = c.user_data as usize;
            *seen.get_mut(i).context("a completion for a job never submitted")? += 1;
            res[i] = c.result().with_context(|| format!("job {i} ({:?})", ops[i % 3]))?;
        }
        ensure!(seen.iter().all(|&n| n == 1), "jobs not completed exactly once");
        for i in 0..count {
            let out = &output.as_slice()[i * OUT..][..res[i]];
            match ops[i % 3] {
                Op::Echo => ensure!(out == &input.as_slice()[i * IN..(i + 1) * IN], "echo job {i}: wrong output"),
                Op::Embed => {
                    let want = bert.embed(&tokens(seed, i, vocab))?;
                    let got = f32s(out);
                    ensure!(got.len() == want.len(), "embed job {i}: {} values", got.len());
                    let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                    ensure!(diff < 1e-5, "embed job {i}: differs from the engine by {diff}");
                }
                _ => {
                    let ids = tokens(seed, i, vocab);
                    let mut kv = vec![0u8; llama.cfg.kv_bytes(KV_TOKENS)];
                    let logits = llama.prefill(&ids, &mut kv)?.logits.context("logits")?;
                    let got = GenerateOutput::decode(out)?;
                    ensure!(
                        got.next_token == argmax(&logits) && got.n_past as usize == ids.len(),
                        "generate job {i}: {got:?}, want token {}",
                        argmax(&logits)
                    );
                }
            }
        }
        let u = dev.usage()?;
        let n = count as u64 * round;
        ensure!((u.jobs_completed, u.jobs_failed, u.jobs_inflight) == (n, 0, 0), "fdinfo after {n} jobs: {u:?}");
    }
    // A job the device cannot read fails alone, with the device's errno.
    let garbage = JobDesc::new(Op::Embed).input(&output, 0, 64).output(&input, 0, IN);
    match dev.run(&garbage) {
        Err(Error::JobFailed(Errno::EBADMSG)) => {}
        other => anyhow::bail!("a job on garbage input: {other:?}, want EBADMSG"),
    }
    println!("ok");
    Ok(())
}
