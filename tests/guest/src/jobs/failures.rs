//! One side dies with jobs in flight: nothing hangs, nothing leaks, and the
//! other side hears of it.

use std::sync::mpsc::Receiver;

use anyhow::{bail, ensure, Context, Result};
use m4npu::{Device, Errno, JobDesc, Op};

use super::support::{debugfs_context, expect_errno, expect_message, pool_used, PlayDevice};
use crate::children::{eventually, Helper, HANG};

/// One ECHO job of 64 bytes on a fresh context.
fn echo_once() -> m4npu::Result<usize> {
    let dev = Device::open()?;
    let (a, b) = (dev.alloc(4096)?, dev.alloc(4096)?);
    dev.run(&JobDesc::new(Op::Echo).input(&a, 0, 64).output(&b, 0, 64))
}

/// `echo_once` in a thread of its own: the result arrives on the channel.
fn echo_in_thread() -> Receiver<m4npu::Result<usize>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(echo_once());
    });
    rx
}

pub fn killed_submitter_leaves_nothing_behind() -> Result<()> {
    let base = pool_used()?;
    let mut device = PlayDevice::start("stall", 1, 8)?;
    let mut sub = Helper::spawn(&["--submit-then-hang", "10"])?;
    let ctx: u64 = sub.expect("its context id", |l| l.strip_prefix("context ")?.parse().ok())?;
    sub.send("sync")?;
    device.wait_held(1)?;
    sub.send("uring")?;
    sub.expect_line("submitted")?;
    // The sync job and 7 uring jobs at the device, 3 waiting in the driver.
    device.wait_held(8)?;
    ensure!(debugfs_context(ctx)?.is_some(), "the submitter's context {ctx} is not in debugfs");
    ensure!(pool_used()? > base, "the submitter's buffers use no NPU memory");

    sub.kill().context("the submitter killed with jobs in flight")?;
    // Its io_uring is torn down by a kernel worker after the process is
    // gone; the context goes when that has cancelled the ring's jobs.
    eventually("the killed submitter's context goes away", || {
        Ok(match debugfs_context(ctx)? {
            None => Ok(()),
            Some(line) => Err(line),
        })
    })?;

    // The device still holds 8 jobs of a context that is gone: their
    // commits must go through (or fail cleanly), and the device serve on.
    ensure!(device.release()? == 8, "the device did not hold 8 jobs");
    ensure!(echo_once()? == 64, "a job through the device after the commits");
    ensure!(device.errors().is_empty(), "the device reported: {:?}", device.errors());
    // No job holds the dead context's buffers any more.
    let used = pool_used()?;
    ensure!(used == base, "NPU memory in use: {used} bytes, {base} before the submitter");
    device.stop()
}

pub fn killed_device_fails_every_job_with_eio() -> Result<()> {
    let mut device = PlayDevice::start("stall", 1, 4)?;
    let sync = echo_in_thread();
    device.wait_held(1)?;
    let dev = Device::open()?;
    let (input, output) = (dev.alloc(4096)?, dev.alloc(4096)?);
    let job = |i: usize| JobDesc::new(Op::Embed).input(&input, i * 64, 64).output(&output, i * 64, 64);
    let mut ring = dev.ring(16)?;
    for i in 0..10 {
        ring.push(&job(i), i as u64)?;
    }
    ring.submit()?;
    // The sync job and 3 uring jobs at the device, 7 waiting in the driver.
    device.wait_held(4)?;
    ensure!(dev.usage()?.jobs_inflight == 10, "fdinfo: {:?}", dev.usage()?);

    device.kill()?;
    let done = ring.wait_timeout(10, HANG)?;
    ensure!(done.len() == 10, "{} of 10 jobs completed after the device died", done.len());
    ensure!(done.iter().all(|c| c.res == -libc::EIO), "jobs of a dead device: {done:?}, want -EIO");
    match sync.recv_timeout(HANG) {
        Ok(r) => {
            if let Err(e) = &r {
                expect_message(e, "went away")?;
            }
            expect_errno("the sync job of a dead device", r, Errno::EIO)?;
        }
        Err(_) => bail!("the sync job did not return within {} s of the device's death", HANG.as_secs()),
    }
    let u = dev.usage()?;
    ensure!((u.jobs_failed, u.jobs_inflight) == (10, 0), "fdinfo after the device died: {u:?}");

    // A new device attaches, and jobs work again.
    let device = PlayDevice::start("serve", 2, 4)?;
    ensure!(dev.run(&job(0))? == 64, "a sync job on the new device");
    for i in 0..4 {
        ring.push(&job(i), i as u64)?;
    }
    let done = ring.wait_timeout(4, HANG)?;
    ensure!(done.len() == 4 && done.iter().all(|c| c.res == 64), "uring jobs on the new device: {done:?}");
    drop(ring);
    device.stop()
}

/// `--submit-then-hang COUNT [SETUP]`: prints `context ID`, then on the
/// stdin line `sync` starts a synchronous job in a thread, on `uring`
/// submits COUNT jobs over io_uring set up as SETUP (`setups::SETUPS`,
/// plain by default; then prints `submitted`), and waits to be killed.
pub fn submit_then_hang(args: &[String]) -> Result<()> {
    let count: usize = args.first().context("COUNT")?.parse()?;
    let setup = super::setups::setup_named(args.get(1).map_or("plain", String::as_str))?;
    let dev = Device::open()?;
    let input = dev.alloc((count + 1) * 64)?;
    let output = dev.alloc((count + 1) * 64)?;
    let job = |i: usize| JobDesc::new(Op::Echo).input(&input, i * 64, 64).output(&output, i * 64, 64);
    let mut ring = m4npu::uring::Ring::with_setup(&dev, 64, setup)?;
    println!("context {}", dev.info()?.context_id);
    std::thread::scope(|s| {
        for line in std::io::stdin().lines() {
            match line?.as_str() {
                "sync" => {
                    let job = job(count);
                    let dev = &dev;
                    s.spawn(move || println!("sync returned {:?}", dev.run(&job)));
                }
                "uring" => {
                    for i in 0..count {
                        ring.push(&job(i), i as u64)?;
                    }
                    ring.submit()?;
                    println!("submitted");
                }
                other => bail!("unknown command {other:?}"),
            }
        }
        Ok(())
    })
}
