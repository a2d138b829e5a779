//! Jobs the driver refuses, synchronously and over io_uring alike: bad
//! descriptors, handles it does not know, uring commands it does not know,
//! the in-flight limit, and no model.

use std::os::fd::AsRawFd;

use anyhow::{bail, ensure, Context, Result};
use io_uring::{opcode, types, IoUring};
use m4npu::uapi::{self, BoRange, Job};
use m4npu::{uring, Buffer, Device, Errno, Error, JobDesc, Op};

use super::support::{expect_errno, expect_message, PlayDevice};
use crate::children::HANG;
use crate::raw::{errno_name, ioctl};
use crate::{adapters, firmware, module};

fn range(b: &Buffer<'_>, offset: u64, length: u64) -> BoRange {
    BoRange { handle: b.handle(), pad: 0, offset, length }
}

/// Runs every case synchronously and over io_uring; returns what went wrong.
fn check_all(dev: &Device, cases: &[(String, Job, Result<usize, Errno>)]) -> Result<Vec<String>> {
    let mut wrong = Vec::new();
    let describe = |r: &Result<usize, Errno>| match r {
        Ok(n) => format!("{n} bytes"),
        Err(e) => e.to_string(),
    };
    for (what, job, want) in cases {
        let got = dev.run_raw(job).map_err(|e| e.errno().unwrap_or(Errno::UnknownErrno));
        if got != *want {
            wrong.push(format!("sync {what}: {}, want {}", describe(&got), describe(want)));
        }
    }
    let mut ring = dev.ring(64)?;
    for (i, (_, job, _)) in cases.iter().enumerate() {
        ring.push_raw(job, i as u64)?;
    }
    let done = ring.wait_timeout(cases.len(), HANG)?;
    ensure!(done.len() == cases.len(), "{} of {} uring jobs completed", done.len(), cases.len());
    for c in done {
        let (what, _, want) = &cases[c.user_data as usize];
        let got = if c.res >= 0 { Ok(c.res as usize) } else { Err(Errno::from_raw(-c.res)) };
        if got != *want {
            wrong.push(format!("uring {what}: {}, want {}", describe(&got), describe(want)));
        }
    }
    Ok(wrong)
}

pub fn bad_job_descriptors_are_refused() -> Result<()> {
    let device = PlayDevice::start("serve", 1, 8)?;
    let dev = Device::open()?;
    let (a, b, s) = (dev.alloc(8192)?, dev.alloc(8192)?, dev.alloc(4096)?);
    let adapter = dev.load_adapter(&adapters::synthetic("refusals", dev.info()?.model.context("no model")?.hash))?;
    let base = Job { op: uapi::JOB_OP_EMBED, input: range(&a, 0, 64), output: range(&b, 0, 64), ..Default::default() };
    let with = |f: &dyn Fn(&mut Job)| {
        let mut j = base;
        f(&mut j);
        j
    };
    let generate = with(&|j| {
        j.op = uapi::JOB_OP_GENERATE;
        j.state = range(&s, 0, 8);
    });
    let gen_with = |f: &dyn Fn(&mut Job)| {
        let mut j = generate;
        f(&mut j);
        j
    };
    // A second context, with more buffers and adapters than ours: handles
    // that exist there and not here.
    let other = Device::open()?;
    let theirs = (0..6).map(|_| other.alloc(4096)).collect::<m4npu::Result<Vec<_>>>()?;
    let blob = adapters::synthetic("theirs", other.info()?.model.context("no model")?.hash);
    let their_adapters = (0..3).map(|_| other.load_adapter(&blob)).collect::<m4npu::Result<Vec<_>>>()?;
    let ours = [a.handle(), b.handle(), s.handle()];
    let foreign_bo = theirs.iter().map(Buffer::handle).find(|h| !ours.contains(h)).context("no foreign BO handle")?;
    let foreign_adapter =
        their_adapters.iter().map(|x| x.handle()).find(|&h| h != adapter.handle()).context("no foreign adapter")?;

    use Errno::{EINVAL, ENOENT, EOPNOTSUPP};
    let valid: Vec<(&str, Job)> = vec![
        ("EMBED", base),
        ("GENERATE with state", generate),
        ("CLASSIFY with an adapter", with(&|j| {
            j.op = uapi::JOB_OP_CLASSIFY;
            j.adapter = adapter.handle();
        })),
        ("input and output side by side in one BO", with(&|j| j.output = range(&a, 64, 64))),
        ("high priority", with(&|j| j.priority = uapi::JOB_PRIO_HIGH)),
        ("low priority", with(&|j| j.priority = uapi::JOB_PRIO_LOW)),
    ];
    let refused: Vec<(&str, Job, Errno)> = vec![
        ("flags", with(&|j| j.flags = 1), EINVAL),
        ("input pad", with(&|j| j.input.pad = 1), EINVAL),
        ("output pad", with(&|j| j.output.pad = 1), EINVAL),
        ("state pad", gen_with(&|j| j.state.pad = 1), EINVAL),
        ("priority 3", with(&|j| j.priority = 3), EINVAL),
        ("priority 255", with(&|j| j.priority = 255), EINVAL),
        ("input past its BO", with(&|j| j.input.offset = 8192 - 32), EINVAL),
        ("output past its BO", with(&|j| j.output.length = 8193), EINVAL),
        ("state past its BO", gen_with(&|j| j.state.offset = 4090), EINVAL),
        ("input offset overflowing", with(&|j| j.input.offset = u64::MAX - 10), EINVAL),
        ("output length overflowing", with(&|j| j.output.length = u64::MAX), EINVAL),
        ("input and output overlapping", with(&|j| j.output = range(&a, 32, 64)), EINVAL),
        ("input and output the same range", with(&|j| j.output = j.input), EINVAL),
        ("output and state overlapping", gen_with(&|j| j.state = range(&b, 60, 8)), EINVAL),
        ("input and state overlapping", gen_with(&|j| j.state = range(&a, 0, 8)), EINVAL),
        ("empty input", with(&|j| j.input.length = 0), EINVAL),
        ("empty output", with(&|j| j.output.length = 0), EINVAL),
        ("no input handle", with(&|j| j.input.handle = 0), EINVAL),
        ("no output handle", with(&|j| j.output.handle = 0), EINVAL),
        ("empty state range", gen_with(&|j| j.state.length = 0), EINVAL),
        ("CLASSIFY without an adapter", with(&|j| j.op = uapi::JOB_OP_CLASSIFY), EINVAL),
        ("GENERATE without state", with(&|j| j.op = uapi::JOB_OP_GENERATE), EINVAL),
        ("op 0", with(&|j| j.op = 0), EOPNOTSUPP),
        ("op JOB_OP_COUNT", with(&|j| j.op = uapi::JOB_OP_COUNT), EOPNOTSUPP),
        ("op 0xffff", with(&|j| j.op = 0xffff), EOPNOTSUPP),
        ("unknown input handle", with(&|j| j.input.handle = 999), ENOENT),
        ("unknown output handle", with(&|j| j.output.handle = 999), ENOENT),
        ("unknown state handle", gen_with(&|j| j.state.handle = 999), ENOENT),
        ("unknown adapter", with(&|j| j.adapter = 999), ENOENT),
        ("another context's BO as input", with(&|j| j.input.handle = foreign_bo), ENOENT),
        ("another context's BO as output", with(&|j| j.output.handle = foreign_bo), ENOENT),
        ("another context's BO as state", gen_with(&|j| j.state.handle = foreign_bo), ENOENT),
        ("another context's adapter", with(&|j| j.adapter = foreign_adapter), ENOENT),
    ];
    let mut cases: Vec<(String, Job, Result<usize, Errno>)> =
        valid.iter().map(|(w, j)| (w.to_string(), *j, Ok(64))).collect();
    cases.extend(refused.iter().map(|(w, j, e)| (w.to_string(), *j, Err(*e))));
    let wrong = check_all(&dev, &cases)?;
    ensure!(wrong.is_empty(), "{} of {} cases went wrong:\n    {}", wrong.len(), cases.len() * 2, wrong.join("\n    "));

    // Refused descriptors are no jobs.
    let n = 2 * valid.len() as u64;
    let u = dev.usage()?;
    ensure!(
        (u.jobs_submitted, u.jobs_completed, u.jobs_failed, u.jobs_inflight) == (n, n, 0, 0),
        "fdinfo after {n} valid and many refused jobs: {u:?}"
    );

    // The library refuses such descriptors itself, in words.
    match dev.run(&JobDesc::new(Op::Echo).input(&a, 8000, 400).output(&b, 0, 64)) {
        Err(e @ Error::InvalidJob(_)) => expect_message(&e, "outside its 8192-byte buffer")?,
        other => bail!("library RUN of a range past its buffer: {other:?}"),
    }
    match dev.run(&JobDesc::new(Op::Echo).input(&a, 0, 64).output(&theirs[0], 0, 64)) {
        Err(e @ Error::InvalidJob(_)) => expect_message(&e, "belongs to another Device")?,
        other => bail!("library RUN with another context's buffer: {other:?}"),
    }
    drop((theirs, their_adapters, adapter));
    device.stop()
}

pub fn uring_commands_are_checked() -> Result<()> {
    let device = PlayDevice::start("serve", 1, 4)?;
    let dev = Device::open()?;
    let (a, b) = (dev.alloc(4096)?, dev.alloc(4096)?);
    let job = Job { op: uapi::JOB_OP_ECHO, input: range(&a, 0, 64), output: range(&b, 0, 64), ..Default::default() };
    let payload = uring::payload(&job);

    // A ring of 64-byte SQEs has room for 16 bytes of the 80-byte descriptor.
    let mut small = IoUring::new(4)?;
    let sqe = opcode::UringCmd16::new(types::Fd(dev.as_raw_fd()), uapi::URING_CMD_RUN)
        .cmd(payload[..16].try_into()?)
        .build()
        .user_data(7);
    // SAFETY: the command names no memory of ours.
    unsafe { small.submission().push(&sqe) }.map_err(|_| anyhow::anyhow!("submission queue full"))?;
    let ts = types::Timespec::from(HANG);
    let _ = small.submitter().submit_with_args(1, &types::SubmitArgs::new().timespec(&ts));
    let res = small.completion().next().map(|c| c.result()).context("no completion for RUN on a 64-byte SQE ring")?;
    ensure!(res == -libc::EINVAL, "RUN on a ring without SQE128: res {res}, want -EINVAL");

    let unknown = [
        ("nr 0x11", uapi::ioc(uapi::IOC_WRITE, uapi::IOCTL_MAGIC, 0x11, size_of::<Job>())),
        ("0", 0),
        ("the RUN ioctl's number", uapi::IOC_RUN),
        ("the device side's FETCH", uapi::URING_CMD_HW_FETCH),
    ];
    let mut ring = dev.ring(8)?;
    for (i, (_, op)) in unknown.iter().enumerate() {
        ring.push_cmd(*op, payload, i as u64)?;
    }
    ring.push_raw(&job, 100)?;
    let done = ring.wait_timeout(unknown.len() + 1, HANG)?;
    ensure!(done.len() == unknown.len() + 1, "{} completions: {done:?}", done.len());
    for c in done {
        match unknown.get(c.user_data as usize) {
            Some((what, _)) => ensure!(c.res == -libc::EOPNOTSUPP, "cmd_op {what}: res {}, want -EOPNOTSUPP", c.res),
            None => ensure!(c.res == 64, "the valid RUN next to them: res {}", c.res),
        }
    }

    // The ioctl's contract: argument size and direction, and the pointer.
    let p = &job as *const Job as usize;
    for (what, cmd, want) in [
        ("short", uapi::ioc(uapi::IOC_WRITE, uapi::IOCTL_MAGIC, 0x05, size_of::<Job>() - 8), libc::EINVAL),
        ("read-write", uapi::ioc(uapi::IOC_READ | uapi::IOC_WRITE, uapi::IOCTL_MAGIC, 0x05, size_of::<Job>()), libc::EINVAL),
    ] {
        let r = ioctl(&dev, cmd, p);
        ensure!(r == Err(want), "RUN ioctl, {what}: {r:?}, want {}", errno_name(want));
    }
    let r = ioctl(&dev, uapi::IOC_RUN, 0);
    ensure!(r == Err(libc::EFAULT), "RUN ioctl from NULL: {r:?}, want EFAULT");
    ensure!(ioctl(&dev, uapi::IOC_RUN, p) == Ok(64), "the valid RUN ioctl");
    device.stop()
}

fn ctx_max_jobs() -> Result<usize> {
    let p = "/sys/module/m4npu/parameters/ctx_max_jobs";
    Ok(std::fs::read_to_string(p).with_context(|| format!("reading {p}"))?.trim().parse()?)
}

pub fn in_flight_limit_is_ebusy() -> Result<()> {
    let limit = ctx_max_jobs()?;
    ensure!(limit == 256, "ctx_max_jobs defaults to {limit}, documented 256");
    let mut device = PlayDevice::start("stall", 1, 8)?;
    let dev = Device::open()?;
    let (input, output) = (dev.alloc((limit + 1) * 64)?, dev.alloc((limit + 1) * 64)?);
    let job = |i: usize| JobDesc::new(Op::Echo).input(&input, i * 64, 64).output(&output, i * 64, 64);
    let mut ring = dev.ring(512)?;
    for i in 0..limit {
        ring.push(&job(i), i as u64)?;
    }
    ring.submit()?;
    // The device holds what its slots take; the rest waits in the driver.
    device.wait_held(8)?;
    let u = dev.usage()?;
    ensure!(u.jobs_inflight == limit as u64, "{limit} jobs submitted, fdinfo: {u:?}");

    ring.push(&job(limit), 9999)?;
    let done = ring.wait_timeout(1, HANG)?;
    ensure!(done.len() == 1 && done[0].user_data == 9999, "one past the limit over io_uring: {done:?}");
    ensure!(done[0].res == -libc::EBUSY, "one past the limit over io_uring: res {}, want -EBUSY", done[0].res);
    let r = dev.run(&job(limit));
    if let Err(e) = &r {
        expect_message(e, "ctx_max_jobs")?;
    }
    expect_errno("sync RUN past the limit", r, Errno::EBUSY)?;

    // The limit is per context.
    let other = Device::open()?;
    let (oi, oo) = (other.alloc(4096)?, other.alloc(4096)?);
    let mut other_ring = other.ring(4)?;
    other_ring.push(&JobDesc::new(Op::Echo).input(&oi, 0, 64).output(&oo, 0, 64), 1)?;
    other_ring.submit()?;
    ensure!(other.usage()?.jobs_inflight == 1, "another context's job was not accepted");

    ensure!(device.release()? == 8, "the device did not hold 8 jobs");
    let done = ring.wait_timeout(limit, HANG)?;
    ensure!(done.len() == limit, "{} of {limit} jobs completed after the release", done.len());
    ensure!(done.iter().all(|c| c.res == 64), "jobs failed after the release: {:?}", done.iter().find(|c| c.res != 64));
    let theirs = other_ring.wait_timeout(1, HANG)?;
    ensure!(theirs.len() == 1 && theirs[0].res == 64, "the other context's job: {theirs:?}");
    ensure!(dev.run(&job(limit))? == 64, "a job after the others completed");
    let u = dev.usage()?;
    let n = limit as u64 + 1;
    ensure!(
        (u.jobs_submitted, u.jobs_completed, u.jobs_failed, u.jobs_inflight) == (n, n, 0, 0),
        "fdinfo after {n} jobs and two refused: {u:?}"
    );
    drop((ring, other_ring));
    device.stop()
}

pub fn jobs_need_a_model() -> Result<()> {
    module::reload(module::NO_FIRMWARE)?;
    let r = (|| {
        let device = PlayDevice::start("serve", 1, 4)?;
        let dev = Device::open()?;
        let (a, b) = (dev.alloc(4096)?, dev.alloc(4096)?);
        let job = JobDesc::new(Op::Echo).input(&a, 0, 64).output(&b, 0, 64);
        let r = dev.run(&job);
        if let Err(e) = &r {
            expect_message(e, "no foundation model is loaded")?;
        }
        expect_errno("RUN without a model", r, Errno::ENODEV)?;
        match dev.model_meta() {
            Err(e) if e.errno() == Some(Errno::ENODEV) => {}
            other => anyhow::bail!("MODEL_META without a model: {other:?}, want ENODEV"),
        }
        let mut ring = dev.ring(4)?;
        ring.push(&job, 1)?;
        let done = ring.wait_timeout(1, HANG)?;
        ensure!(done.len() == 1 && done[0].res == -libc::ENODEV, "uring RUN without a model: {done:?}");
        device.stop()
    })();
    firmware::reload_good_firmware()?;
    r
}
