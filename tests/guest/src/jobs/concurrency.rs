//! Many jobs from many processes at once: every job completes exactly once,
//! with its own output.

use anyhow::{ensure, Context, Result};
use m4npu::{Device, JobDesc, Op, Priority};

use super::support::{pattern, PlayDevice};
use crate::children::{Helper, HANG};
use crate::play_device::expected;

const PROCESSES: u32 = 4;
const PER_PROCESS: usize = 250;
/// Bytes of each job's input and output.
const LEN: usize = 64;

fn submitters() -> Result<Vec<Helper>> {
    (0..PROCESSES)
        .map(|seed| Helper::spawn(&["--submit-jobs", &PER_PROCESS.to_string(), &seed.to_string()]))
        .collect()
}

fn expect_ok(subs: &mut [Helper]) -> Result<()> {
    for s in subs.iter_mut() {
        s.expect("ok", |l| (l == "ok").then_some(()))?;
        s.finish()?;
    }
    Ok(())
}

pub fn thousand_jobs_from_four_processes() -> Result<()> {
    // Served as they come, by a thread per queue; then in batches.
    for mode in ["serve", "serve-batch"] {
        let device = PlayDevice::start(mode, 4, 16)?;
        expect_ok(&mut submitters()?)?;
        device.stop()?;
    }

    // All 1000 in flight at the same time: a device with 16 x 64 slots
    // takes them all, then commits them at once.
    let mut device = PlayDevice::start("stall", 16, 64)?;
    let mut subs = submitters()?;
    for s in subs.iter_mut() {
        s.expect_line(&format!("submitted {PER_PROCESS}"))?;
    }
    let total = PROCESSES as usize * PER_PROCESS;
    device.wait_held(total)?;
    let released = device.release()?;
    ensure!(released == total, "the device held {released} jobs, {total} were submitted");
    expect_ok(&mut subs)?;
    device.stop()
}

/// `--submit-jobs COUNT SEED`: submits COUNT jobs over one io_uring, each
/// with an input of its own, and checks every completion and output.
/// Prints `submitted COUNT` once all are with the driver, `ok` at the end.
pub fn submit_jobs(args: &[String]) -> Result<()> {
    let count: usize = args.first().context("COUNT")?.parse()?;
    let seed: u32 = args.get(1).context("SEED")?.parse()?;
    let dev = Device::open()?;
    let mut input = dev.alloc(count * LEN)?;
    for (i, chunk) in input.as_mut_slice().chunks_mut(LEN).enumerate() {
        pattern(seed, i as u32, chunk);
    }
    let output = dev.alloc(count * LEN)?;
    let state = dev.alloc(count * 8)?;
    let ops = [Op::Echo, Op::Embed, Op::Generate];
    let prios = [Priority::Normal, Priority::High, Priority::Low];
    let mut ring = dev.ring(256)?;
    for i in 0..count {
        let op = ops[i % 3];
        let mut job =
            JobDesc::new(op).input(&input, i * LEN, LEN).output(&output, i * LEN, LEN).priority(prios[i / 3 % 3]);
        if op == Op::Generate {
            job = job.state(&state, i * 8, 8);
        }
        ring.push(&job, i as u64)?;
    }
    ring.submit()?;
    println!("submitted {count}");

    let done = ring.wait_timeout(count, HANG)?;
    ensure!(done.len() == count, "{} of {count} jobs completed within {} s", done.len(), HANG.as_secs());
    let mut seen = vec![0u32; count];
    for c in &done {
        let n = seen.get_mut(c.user_data as usize).context("a completion for a job never submitted")?;
        *n += 1;
        ensure!(c.res == LEN as i32, "job {}: res {}", c.user_data, c.res);
    }
    let twice: Vec<usize> = (0..count).filter(|&i| seen[i] != 1).collect();
    ensure!(twice.is_empty(), "jobs not completed exactly once: {twice:?}");
    ensure!(ring.wait_timeout(1, std::time::Duration::ZERO)?.is_empty(), "completions after the last job");
    for i in 0..count {
        let op = ops[i % 3];
        let counter = (op == Op::Generate).then_some(0);
        let want = expected(op, &input.as_slice()[i * LEN..(i + 1) * LEN], counter);
        ensure!(output.as_slice()[i * LEN..(i + 1) * LEN] == want[..], "job {i} ({op:?}): wrong output");
        if op == Op::Generate {
            let c = u64::from_le_bytes(state.as_slice()[i * 8..i * 8 + 8].try_into()?);
            ensure!(c == 1, "job {i}: state counter {c} after one GENERATE");
        }
    }
    let u = dev.usage()?;
    let count = count as u64;
    ensure!(
        (u.jobs_submitted, u.jobs_completed, u.jobs_failed, u.jobs_inflight) == (count, count, 0, 0),
        "fdinfo after {count} jobs: {u:?}"
    );
    ensure!(u.engine_ns > 0, "drm-engine-npu is 0 after {count} jobs");
    println!("ok");
    Ok(())
}
