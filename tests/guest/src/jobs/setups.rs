//! Jobs on every io_uring set-up apps use: plain SQE128, COOP_TASKRUN,
//! SINGLE_ISSUER, SINGLE_ISSUER | DEFER_TASKRUN (liburing's recommended
//! set-up) and SQPOLL. On each: jobs run, closing the ring with jobs queued
//! and held cancels them, and a killed submitter leaves nothing behind.

use anyhow::{bail, ensure, Context, Result};
use m4npu::uring::{Ring, RingSetup};
use m4npu::{Device, JobDesc, Op};

use super::support::{debugfs_context, pattern, pool_used, PlayDevice};
use crate::children::{eventually, Helper, HANG};

pub const SETUPS: [(&str, RingSetup); 5] = [
    ("plain", RingSetup::empty()),
    ("coop", RingSetup::COOP_TASKRUN),
    ("single", RingSetup::SINGLE_ISSUER),
    ("defer", RingSetup::SINGLE_ISSUER.union(RingSetup::DEFER_TASKRUN)),
    ("sqpoll", RingSetup::SQPOLL),
];

pub fn setup_named(name: &str) -> Result<RingSetup> {
    SETUPS.iter().find(|(n, _)| *n == name).map(|(_, s)| *s).with_context(|| format!("no ring set-up {name:?}"))
}

pub fn jobs_on_every_ring_setup() -> Result<()> {
    for (name, setup) in SETUPS {
        run_on(name, setup).with_context(|| format!("ring set-up {name}"))?;
    }
    Ok(())
}

fn run_on(name: &str, setup: RingSetup) -> Result<()> {
    let base = pool_used()?;
    // Jobs run: 64 ECHOs, each its own output.
    let device = PlayDevice::start("serve", 2, 8)?;
    let dev = Device::open()?;
    let (mut input, output) = (dev.alloc(64 * 64)?, dev.alloc(64 * 64)?);
    for i in 0..64 {
        pattern(3, i as u32, &mut input.as_mut_slice()[i * 64..][..64]);
    }
    let job = |i: usize| JobDesc::new(Op::Echo).input(&input, i * 64, 64).output(&output, i * 64, 64);
    let mut ring = Ring::with_setup(&dev, 64, setup)?;
    for i in 0..64 {
        ring.push(&job(i), i as u64)?;
    }
    let done = ring.wait_timeout(64, HANG)?;
    ensure!(done.len() == 64 && done.iter().all(|c| c.res == 64), "{done:?}");
    ensure!(output.as_slice() == input.as_slice(), "outputs");
    drop(ring);
    device.stop()?;

    // The ring closed with jobs held by the device and queued behind them.
    // Not for DEFER_TASKRUN: when such a ring is closed while its task
    // lives, 6.12's io_ring_exit_work flushes the cancelled commands' CQEs
    // from a kworker, which trips io_uring's own lockdep check that only
    // the submitter posts CQEs (io_lockdep_assert_cq_locked). Any
    // cancelable uring_cmd does this, ublk's too (its cancel function also
    // completes with the flags io_uring passes); the killed submitter below
    // covers DEFER_TASKRUN, as an exiting task may be completed for.
    if !setup.contains(RingSetup::DEFER_TASKRUN) {
        close_with_jobs(&dev, setup, &job)?;
    }

    // A submitter killed with jobs held and queued.
    let mut device = PlayDevice::start("stall", 1, 4)?;
    let mut sub = Helper::spawn(&["--submit-then-hang", "10", name])?;
    let ctx: u64 = sub.expect("its context id", |l| l.strip_prefix("context ")?.parse().ok())?;
    sub.send("uring")?;
    sub.expect_line("submitted")?;
    device.wait_held(4)?;
    sub.kill()?;
    eventually("the killed submitter's context goes away", || {
        Ok(match debugfs_context(ctx)? {
            None => Ok(()),
            Some(line) => Err(line),
        })
    })?;
    device.release()?;
    ensure!(device.errors().is_empty(), "the device reported: {:?}", device.errors());
    device.stop()?;
    drop((input, output));
    drop(dev);
    let used = pool_used()?;
    if used != base {
        bail!("NPU memory in use: {used} bytes, {base} before");
    }
    Ok(())
}

/// Closes a ring of `setup` with ten jobs: four held by the device, six
/// queued behind them.
fn close_with_jobs<'a>(dev: &Device, setup: RingSetup, job: &dyn Fn(usize) -> JobDesc<'a>) -> Result<()> {
    let mut device = PlayDevice::start("stall", 1, 4)?;
    let mut ring = Ring::with_setup(dev, 64, setup)?;
    for i in 0..10 {
        ring.push(&job(i), i as u64)?;
    }
    ring.submit()?;
    device.wait_held(4)?;
    let failed = dev.usage()?.jobs_failed;
    drop(ring);
    // As the ring is torn down (a kernel worker), the queued jobs are
    // cancelled and the held ones detached from the app: all ten end for it.
    eventually("the ring's jobs end with it", || {
        let u = dev.usage()?;
        Ok(if (u.jobs_inflight, u.jobs_failed) == (0, failed + 10) { Ok(()) } else { Err(format!("{u:?}")) })
    })?;
    // The device still holds four; their commits go through quietly.
    ensure!(device.release()? == 4, "the device did not hold 4 jobs");
    ensure!(dev.run(&job(0))? == 64, "a job after the cancelled ones");
    device.stop()
}
