//! Jobs that run: synchronously and over io_uring, what the device computes
//! reaching the app, device errors reaching it as they are, and accounting.

use anyhow::{bail, ensure, Context, Result};
use m4npu::{Buffer, Device, Errno, JobDesc, Op, Priority};

use super::support::{debugfs_context, device_attached, expect_errno, expect_message, pattern, PlayDevice};
use crate::adapters;
use crate::children::HANG;
use crate::play_device::expected;

const KIB: usize = 1024;

fn model_hash(dev: &Device) -> Result<[u8; 32]> {
    Ok(dev.info()?.model.context("no model loaded")?.hash)
}

fn counter(state: &Buffer<'_>) -> u64 {
    u64::from_le_bytes(state.as_slice()[..8].try_into().expect("8 bytes"))
}

pub fn jobs_without_a_device_are_enxio() -> Result<()> {
    ensure!(!device_attached()?, "a device is attached");
    let dev = Device::open()?;
    let (input, output) = (dev.alloc(4096)?, dev.alloc(4096)?);
    let job = JobDesc::new(Op::Echo).input(&input, 0, 64).output(&output, 0, 64);
    let r = dev.run(&job);
    if let Err(e) = &r {
        expect_message(e, "no NPU device is serving jobs (is vnpud running?)")?;
    }
    expect_errno("RUN without a device", r, Errno::ENXIO)?;
    let mut ring = dev.ring(8)?;
    for i in 0..4 {
        ring.push(&job, i)?;
    }
    let done = ring.wait_timeout(4, HANG)?;
    ensure!(done.len() == 4, "{} of 4 completions", done.len());
    for c in done {
        ensure!(c.res == -libc::ENXIO, "uring RUN without a device: res {}, want -ENXIO", c.res);
    }
    let u = dev.usage()?;
    ensure!(u.jobs_submitted == 0 && u.jobs_inflight == 0 && u.jobs_failed == 0, "refused jobs were counted: {u:?}");
    Ok(())
}

pub fn jobs_run_sync_and_over_io_uring() -> Result<()> {
    let device = PlayDevice::start("serve", 2, 8)?;
    ensure!(device_attached()?, "debugfs does not show the play device");
    let dev = Device::open()?;
    let mut input = dev.alloc(64 * KIB)?;
    pattern(1, 0, input.as_mut_slice());
    let inp = input.as_slice().to_vec();
    let output = dev.alloc(128 * KIB)?;
    let state = dev.alloc(4096)?;
    let adapter = dev.load_adapter(&adapters::synthetic("job-test", model_hash(&dev)?))?;
    let out = |at: usize, n: usize| output.as_slice()[at..at + n].to_vec();

    let n = dev.run(&JobDesc::new(Op::Echo).input(&input, 100, 1000).output(&output, 0, 4096))?;
    ensure!(n == 1000, "ECHO of 1000 bytes returned {n}");
    ensure!(out(0, 1000) == inp[100..1100], "ECHO output differs from its input");

    // The output range is shorter than the input: the device fills it.
    let n = dev.run(&JobDesc::new(Op::Embed).input(&input, 0, 3000).output(&output, 8192, 2048))?;
    ensure!(n == 2048, "EMBED into 2048 bytes returned {n}");
    ensure!(out(8192, 2048) == expected(Op::Embed, &inp[..2048], None), "EMBED output wrong");

    // The device checks that the adapter range holds an adapter blob.
    let job = JobDesc::new(Op::Classify).adapter(&adapter).input(&input, 5000, 100).output(&output, 12288, 100);
    let n = dev.run(&job.priority(Priority::High))?;
    ensure!(n == 100 && out(12288, 100) == expected(Op::Classify, &inp[5000..5100], None), "CLASSIFY: {n} bytes");

    // GENERATE steps: the device reads the state counter and writes it back.
    for step in 0..3 {
        let job = JobDesc::new(Op::Generate).input(&input, 6000, 64).output(&output, 16384, 64).state(&state, 0, 8);
        let n = dev.run(&job.priority(Priority::Low))?;
        ensure!(n == 64, "GENERATE step {step} returned {n}");
        ensure!(out(16384, 64) == expected(Op::Generate, &inp[6000..6064], Some(step)), "GENERATE step {step}: output");
        ensure!(counter(&state) == step + 1, "after GENERATE step {step} the state counter is {}", counter(&state));
    }

    // Input and output side by side in one buffer.
    let mut both = dev.alloc(8192)?;
    pattern(2, 0, &mut both.as_mut_slice()[..4096]);
    let n = dev.run(&JobDesc::new(Op::Echo).input(&both, 0, 4096).output(&both, 4096, 4096))?;
    ensure!(n == 4096 && both.as_slice()[..4096] == both.as_slice()[4096..], "ECHO within one buffer");

    // Over io_uring: more jobs than the ring's completion queue holds, each
    // with its own input range (of its own length) and output range.
    let mut ring = dev.ring(16)?;
    let ops = [Op::Echo, Op::Embed, Op::Classify];
    let prios = [Priority::Normal, Priority::High, Priority::Low];
    let len = |i: usize| 1000 - i;
    for i in 0..48 {
        let mut job = JobDesc::new(ops[i % 3])
            .input(&input, i * KIB, len(i))
            .output(&output, 64 * KIB + i * KIB, KIB)
            .priority(prios[i / 3 % 3]);
        if ops[i % 3] == Op::Classify {
            job = job.adapter(&adapter);
        }
        ring.push(&job, i as u64)?;
    }
    let gen = JobDesc::new(Op::Generate).input(&input, 0, 64).output(&output, 20480, 64).state(&state, 0, 8);
    ring.push(&gen, 1000)?;
    let done = ring.wait_timeout(49, HANG)?;
    ensure!(done.len() == 49, "{} of 49 uring jobs completed", done.len());
    let mut seen = [0; 49];
    for c in done {
        let i = c.user_data as usize;
        if i == 1000 {
            ensure!(c.res == 64, "uring GENERATE: res {}", c.res);
            seen[48] += 1;
            continue;
        }
        ensure!(i < 48, "a completion for unknown job {i}");
        seen[i] += 1;
        ensure!(c.res == len(i) as i32, "uring job {i}: res {}, want {}", c.res, len(i));
        let want = expected(ops[i % 3], &inp[i * KIB..i * KIB + len(i)], None);
        ensure!(out(64 * KIB + i * KIB, len(i)) == want, "uring job {i} ({:?}): output wrong", ops[i % 3]);
    }
    ensure!(seen.iter().all(|&n| n == 1), "completions per job: {seen:?}");
    ensure!(out(20480, 64) == expected(Op::Generate, &inp[..64], Some(3)), "uring GENERATE output");
    ensure!(counter(&state) == 4, "after the uring GENERATE the state counter is {}", counter(&state));
    drop((ring, adapter));
    device.stop()
}

/// The device's errno reaches the app as is; an invalid result is `EIO`.
pub fn device_errors_reach_the_app() -> Result<()> {
    let dev = Device::open()?;
    let (input, output) = (dev.alloc(4096)?, dev.alloc(4096)?);
    let job = JobDesc::new(Op::Echo).input(&input, 0, 64).output(&output, 0, 64);
    let cases = [
        ("errno=71", Errno::EPROTO, "the job failed"),
        ("overflow", Errno::EIO, "the NPU device failed"),
    ];
    for (mode, want, words) in cases {
        let device = PlayDevice::start(mode, 1, 4)?;
        match dev.run(&job) {
            Err(e) => expect_message(&e, words)?,
            Ok(n) => bail!("device mode {mode}: RUN succeeded with {n} bytes"),
        }
        expect_errno(&format!("RUN, device mode {mode}"), dev.run(&job), want)?;
        let mut ring = dev.ring(4)?;
        for i in 0..3 {
            ring.push(&job, i)?;
        }
        let done = ring.wait_timeout(3, HANG)?;
        ensure!(done.len() == 3, "device mode {mode}: {} of 3 completions", done.len());
        for c in done {
            ensure!(c.res == -(want as i32), "uring RUN, device mode {mode}: res {}, want -{want}", c.res);
        }
        device.stop()?;
    }
    let u = dev.usage()?;
    ensure!(
        (u.jobs_submitted, u.jobs_completed, u.jobs_failed, u.jobs_inflight) == (10, 0, 10, 0),
        "fdinfo after 10 failed jobs: {u:?}"
    );
    Ok(())
}

pub fn fdinfo_counts_jobs() -> Result<()> {
    let device = PlayDevice::start("serve", 1, 4)?;
    let dev = Device::open()?;
    let id = dev.info()?.context_id;
    let u = dev.usage()?;
    ensure!((u.jobs_submitted, u.engine_ns) == (0, 0), "a fresh context has job counts: {u:?}");
    let (input, output) = (dev.alloc(4096)?, dev.alloc(4096)?);
    let job = JobDesc::new(Op::Embed).input(&input, 0, 512).output(&output, 0, 512);
    for _ in 0..5 {
        dev.run(&job)?;
    }
    let mut ring = dev.ring(8)?;
    for i in 0..5 {
        ring.push(&job, i)?;
    }
    let done = ring.wait_timeout(5, HANG)?;
    ensure!(done.len() == 5 && done.iter().all(|c| c.res == 512), "uring jobs: {done:?}");
    let u = dev.usage()?;
    ensure!(
        (u.jobs_submitted, u.jobs_completed, u.jobs_failed, u.jobs_inflight) == (10, 10, 0, 0),
        "fdinfo after 10 jobs: {u:?}"
    );
    ensure!(u.engine_ns > 0, "drm-engine-npu is 0 ns after 10 jobs");
    let line = debugfs_context(id)?.context("the context is not in debugfs")?;
    ensure!(line.contains("10 completed") && line.contains("0 failed"), "debugfs context line: {line}");
    let other = Device::open()?.usage()?;
    ensure!(other.jobs_submitted == 0 && other.engine_ns == 0, "another context shows these jobs: {other:?}");
    device.stop()
}
