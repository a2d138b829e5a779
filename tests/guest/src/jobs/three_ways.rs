//! One set of jobs three ways: `Device::run`, `uring::Ring`, and
//! `aio::AsyncRing` inside `tokio_uring::start`, with the same output
//! bytes, byte counts and errors. Async jobs are in flight together from
//! one task, and one dropped in flight still runs, keeping its slot until
//! its completion.

use std::future::Future;
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use m4npu::aio::AsyncRing;
use m4npu::uapi::{self, BoRange};
use m4npu::uring::Ring;
use m4npu::{Buffer, Device, Errno, JobDesc, Op};

use super::support::{device_attached, pattern, PlayDevice};
use crate::children::HANG;
use crate::play_device::expected;

const JOBS: usize = 64;
const SLICE: usize = 1024;

/// A job's result as the three ways are compared: bytes, or errno and words.
type Outcome = std::result::Result<usize, (Option<Errno>, String)>;

fn outcome(r: m4npu::Result<usize>) -> Outcome {
    r.map_err(|e| (e.errno(), e.to_string()))
}

/// A job the library checks, or a raw descriptor only the driver checks.
enum AnyJob<'a> {
    Checked(JobDesc<'a>),
    Raw(uapi::Job),
}

impl AnyJob<'_> {
    fn run(&self, dev: &Device) -> m4npu::Result<usize> {
        match self {
            AnyJob::Checked(j) => dev.run(j),
            AnyJob::Raw(j) => dev.run_raw(j),
        }
    }

    fn push(&self, ring: &mut Ring<'_>, tag: u64) -> m4npu::Result<()> {
        match self {
            AnyJob::Checked(j) => ring.push(j, tag),
            AnyJob::Raw(j) => ring.push_raw(j, tag),
        }
    }

    async fn run_async(&self, ring: &AsyncRing<'_>) -> m4npu::Result<usize> {
        match self {
            AnyJob::Checked(j) => ring.run(j).await,
            AnyJob::Raw(j) => ring.run_raw(j).await,
        }
    }
}

/// Every job pushed on one ring (`Ring::push` refusals included), results
/// by job.
fn over_ring(dev: &Device, jobs: &[AnyJob<'_>]) -> Result<Vec<Outcome>> {
    // 64 jobs through a completion queue of 32: pushes wait for room.
    let mut ring = dev.ring(16)?;
    let mut got: Vec<Option<Outcome>> = vec![None; jobs.len()];
    let mut pushed = 0;
    for (i, job) in jobs.iter().enumerate() {
        match job.push(&mut ring, i as u64) {
            Ok(()) => pushed += 1,
            Err(e) => got[i] = Some(outcome(Err(e))),
        }
    }
    let done = ring.wait_timeout(pushed, HANG)?;
    ensure!(done.len() == pushed, "uring: {} of {pushed} jobs completed", done.len());
    for c in done {
        let slot = got.get_mut(c.user_data as usize).context("a completion for no job")?;
        ensure!(slot.is_none(), "uring: two results for job {}", c.user_data);
        *slot = Some(outcome(c.result()));
    }
    Ok(got.into_iter().map(|o| o.expect("every job has a result")).collect())
}

/// Runs `f` in tokio-uring's runtime. A lost wakeup would show as a hang
/// (the timeout's own wakeup could hide it by polling `f`, hence the clock).
fn in_tokio_uring<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    let start = Instant::now();
    let r = tokio_uring::start(async { tokio::time::timeout(HANG, f).await.context("async jobs hung")? });
    ensure!(start.elapsed() < HANG / 2, "async jobs took {:?}: a lost wakeup?", start.elapsed());
    r
}

/// The three ways' results, job by job, must be the same and `want`.
fn agree(what: &str, three: [&[Outcome]; 3], want: &[std::result::Result<usize, Errno>]) -> Result<()> {
    let mut wrong = Vec::new();
    for (i, want) in want.iter().enumerate() {
        let [sync, ring, aio] = three.map(|o| &o[i]);
        if sync != ring || sync != aio {
            wrong.push(format!("job {i}: sync {sync:?}, uring {ring:?}, async {aio:?}"));
        }
        let got = sync.as_ref().map(|&n| n).map_err(|(e, _)| *e);
        if got != want.as_ref().map(|&n| n).map_err(|&e| Some(e)) {
            wrong.push(format!("job {i}: {sync:?}, want {want:?}"));
        }
    }
    ensure!(wrong.is_empty(), "{what}:\n    {}", wrong.join("\n    "));
    Ok(())
}

/// Job `i` of the agreement test: an ECHO or an EMBED of its own input
/// slice, of its own length, into an output range that is for every
/// fourth job shorter than the input (the device fills it).
fn job<'a>(i: usize, input: &'a Buffer<'_>, output: &'a Buffer<'_>) -> (JobDesc<'a>, usize) {
    let len = SLICE - 5 * i;
    let out_len = if i % 4 == 3 { len / 2 } else { SLICE };
    (JobDesc::new(op(i)).input(input, i * SLICE, len).output(output, i * SLICE, out_len), len.min(out_len))
}

fn op(i: usize) -> Op {
    if i.is_multiple_of(2) {
        Op::Echo
    } else {
        Op::Embed
    }
}

pub fn jobs_agree_sync_uring_and_async() -> Result<()> {
    let device = PlayDevice::start("serve", 2, 8)?;
    let dev = Device::open()?;
    let mut input = dev.alloc(JOBS * SLICE)?;
    for (i, slice) in input.as_mut_slice().chunks_mut(SLICE).enumerate() {
        pattern(3, i as u32, slice);
    }
    let outputs = [dev.alloc(JOBS * SLICE)?, dev.alloc(JOBS * SLICE)?, dev.alloc(JOBS * SLICE)?];
    let jobs = |out: usize| (0..JOBS).map(|i| job(i, &input, &outputs[out]).0).collect::<Vec<_>>();

    let sync: Vec<Outcome> = jobs(0).iter().map(|j| outcome(dev.run(j))).collect();
    let ring = over_ring(&dev, &jobs(1).into_iter().map(AnyJob::Checked).collect::<Vec<_>>())?;
    let async_jobs = jobs(2);
    let aio = in_tokio_uring(async {
        // At most 16 in flight: the rest wait for room. Two batches at once
        // from this one task.
        let ring = dev.async_ring(8)?;
        let half = JOBS / 2;
        let (a, b) = tokio::join!(ring.run_all(&async_jobs[..half]), ring.run_all(&async_jobs[half..]));
        ensure!(ring.in_flight() == 0, "{} slots still held after every job returned", ring.in_flight());
        Ok(a.into_iter().chain(b).map(outcome).collect::<Vec<_>>())
    })?;

    let want: Vec<_> = (0..JOBS).map(|i| Ok(job(i, &input, &outputs[0]).1)).collect();
    agree("the three ways' results", [&sync, &ring, &aio], &want)?;
    // What the device wrote, checked for one way, is the same for all.
    let inp = input.as_slice();
    for i in 0..JOBS {
        let n = job(i, &input, &outputs[0]).1;
        let out = &outputs[0].as_slice()[i * SLICE..(i + 1) * SLICE];
        ensure!(
            out[..n] == expected(op(i), &inp[i * SLICE..i * SLICE + n], None),
            "job {i} ({:?}): output wrong",
            op(i)
        );
        ensure!(out[n..].iter().all(|&b| b == 0), "job {i} wrote past its {n} bytes");
    }
    for (name, out) in [("uring", &outputs[1]), ("async", &outputs[2])] {
        if let Some(at) = out.as_slice().iter().zip(outputs[0].as_slice()).position(|(a, b)| a != b) {
            bail!("{name} output differs from the sync one at byte {at} (job {})", at / SLICE);
        }
    }
    drop(outputs);
    device.stop()
}

/// Polls `f` once, in the calling task.
async fn poll_once<F: Future>(mut f: Pin<&mut F>) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(f.as_mut().poll(cx))).await
}

pub fn async_jobs_in_flight_together_and_cancelled() -> Result<()> {
    let mut device = PlayDevice::start("stall", 1, 8)?;
    let dev = Device::open()?;
    let mut input = dev.alloc((JOBS + 1) * SLICE)?;
    for (i, slice) in input.as_mut_slice().chunks_mut(SLICE).enumerate() {
        pattern(4, i as u32, slice);
    }
    let output = dev.alloc((JOBS + 1) * SLICE)?;
    let job = |i: usize| JobDesc::new(Op::Echo).input(&input, i * SLICE, SLICE).output(&output, i * SLICE, SLICE);
    let jobs: Vec<_> = (0..JOBS).map(job).collect();
    let dropped = job(JOBS);
    in_tokio_uring(async {
        let ring = dev.async_ring(JOBS as u32)?;
        let mut all = pin!(ring.run_all(&jobs));
        // One poll submits all of them; the stalled device completes none.
        ensure!(poll_once(all.as_mut()).await.is_pending(), "run_all finished with the device stalled");
        {
            let mut one = pin!(ring.run(&dropped));
            ensure!(poll_once(one.as_mut()).await.is_pending(), "a job finished with the device stalled");
        }
        // Dropped in flight: the kernel still has it, so its slot stays.
        ensure!(ring.in_flight() == JOBS + 1, "{} slots held, want {}", ring.in_flight(), JOBS + 1);
        device.wait_held(8)?;
        let u = dev.usage()?;
        ensure!(u.jobs_inflight == JOBS as u64 + 1, "{} jobs from one task, fdinfo: {u:?}", JOBS + 1);
        ensure!(device.release()? == 8, "the device did not hold 8 jobs");

        for (i, r) in all.await.into_iter().enumerate() {
            ensure!(matches!(r, Ok(SLICE)), "job {i}: {r:?}");
        }
        // The dropped job's slot is freed once a later poll reaps its completion.
        let deadline = Instant::now() + HANG;
        while ring.in_flight() > 0 {
            ensure!(Instant::now() < deadline, "the dropped job still holds its slot");
            tokio::time::sleep(Duration::from_millis(10)).await;
            ensure!(ring.run(&jobs[0]).await? == SLICE, "a probe job");
        }
        Ok(())
    })?;
    if let Some(at) = output.as_slice().iter().zip(input.as_slice()).position(|(a, b)| a != b) {
        bail!("output differs from input at byte {at} (job {}; job {JOBS} was dropped in flight)", at / SLICE);
    }
    let u = dev.usage()?;
    ensure!(u.jobs_inflight == 0 && u.jobs_failed == 0, "fdinfo after the jobs: {u:?}");
    device.stop()
}

/// The three ways, one job after another, for the error cases.
fn three_ways(dev: &Device, jobs: &[AnyJob<'_>]) -> Result<[Vec<Outcome>; 3]> {
    let sync = jobs.iter().map(|j| outcome(j.run(dev))).collect();
    let ring = over_ring(dev, jobs)?;
    let aio = in_tokio_uring(async {
        let ring = dev.async_ring(4)?;
        let mut out = Vec::new();
        for j in jobs {
            out.push(outcome(j.run_async(&ring).await));
        }
        Ok(out)
    })?;
    Ok([sync, ring, aio])
}

fn check(dev: &Device, what: &str, jobs: &[AnyJob<'_>], want: &[std::result::Result<usize, Errno>]) -> Result<()> {
    let [s, r, a] = three_ways(dev, jobs)?;
    agree(what, [&s, &r, &a], want)
}

pub fn job_errors_agree_sync_uring_and_async() -> Result<()> {
    use Errno::{EINVAL, EIO, ENOENT, ENXIO, EOPNOTSUPP, EPROTO};
    let dev = Device::open()?;
    let (a, b) = (dev.alloc(8192)?, dev.alloc(8192)?);
    let echo = || AnyJob::Checked(JobDesc::new(Op::Echo).input(&a, 0, 64).output(&b, 0, 64));
    let base = uapi::Job {
        op: uapi::JOB_OP_ECHO,
        input: BoRange { handle: a.handle(), pad: 0, offset: 0, length: 64 },
        output: BoRange { handle: b.handle(), pad: 0, offset: 0, length: 64 },
        ..Default::default()
    };
    let raw = |f: &dyn Fn(&mut uapi::Job)| {
        let mut j = base;
        f(&mut j);
        AnyJob::Raw(j)
    };

    ensure!(!device_attached()?, "a device is attached");
    check(&dev, "no device", &[echo(), echo()], &[Err(ENXIO), Err(ENXIO)])?;
    // The device's errno as is; an invalid result (one byte too many) is EIO.
    for (mode, want) in [("errno=71", EPROTO), ("overflow", EIO)] {
        let device = PlayDevice::start(mode, 1, 4)?;
        check(&dev, &format!("device mode {mode}"), &[echo(), echo(), echo()], &[Err(want); 3])?;
        device.stop()?;
    }
    let device = PlayDevice::start("serve", 1, 4)?;
    let jobs = [
        echo(),
        // Refused by the library, in its own words.
        AnyJob::Checked(JobDesc::new(Op::Echo).input(&a, 8000, 400).output(&b, 0, 64)),
        // Refused by the driver.
        raw(&|j| j.output.length = 8193),
        raw(&|j| j.input.handle = 999),
        raw(&|j| j.op = 0),
        AnyJob::Raw(base),
    ];
    check(&dev, "refusals", &jobs, &[Ok(64), Err(EINVAL), Err(EINVAL), Err(ENOENT), Err(EOPNOTSUPP), Ok(64)])?;
    device.stop()
}
