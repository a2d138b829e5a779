//! Many apps, one device: contexts take turns, high priority is a
//! privilege, and a device that dies with recovery on hands its jobs to the
//! next one instead of failing them.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use m4npu::{uapi, Device, Errno, Error, JobDesc, Op, Priority};

use super::support::{device_state, expect_errno, pattern, DeviceState, PlayDevice};
use crate::children::{Helper, HANG};

/// ECHO job `i` of a context: 64 bytes of its own pattern in, out.
fn echo<'a>(input: &'a m4npu::Buffer<'a>, output: &'a m4npu::Buffer<'a>, i: usize) -> JobDesc<'a> {
    JobDesc::new(Op::Echo).input(input, i * 64, 64).output(output, i * 64, 64)
}

/// An app: its own context, and the seed of its inputs.
struct App {
    dev: Device,
    seed: u32,
}

impl App {
    fn open(seed: u32) -> Result<Self> {
        Ok(Self { dev: Device::open()?, seed })
    }

    fn context(&self) -> Result<u64> {
        Ok(self.dev.info()?.context_id)
    }

    /// Input and output of `n` ECHO jobs, the input of job `i` filled with
    /// `pattern(seed, i)`.
    fn buffers(&self, n: usize) -> Result<(m4npu::Buffer<'_>, m4npu::Buffer<'_>)> {
        let (mut input, output) = (self.dev.alloc(n * 64)?, self.dev.alloc(n * 64)?);
        for i in 0..n {
            pattern(self.seed, i as u32, &mut input.as_mut_slice()[i * 64..][..64]);
        }
        Ok((input, output))
    }
}

/// Submits `n` jobs on `ring`: the first until the (stalling, one-slot)
/// device holds it, the others then, so that they wait in the driver.
fn queue_behind_held<'a>(device: &mut PlayDevice, ring: &mut m4npu::uring::Ring<'_>, job: impl Fn(usize) -> JobDesc<'a>, n: usize) -> Result<()> {
    ring.push(&job(0), 0)?;
    ring.submit()?;
    device.wait_held(1)?;
    for i in 1..n {
        ring.push(&job(i), i as u64)?;
    }
    ring.submit()?;
    Ok(())
}

/// Checks that job `i`'s output echoes its input.
fn echoed(output: &m4npu::Buffer<'_>, seed: u32, i: usize) -> Result<()> {
    let mut want = [0u8; 64];
    pattern(seed, i as u32, &mut want);
    ensure!(output.as_slice()[i * 64..][..64] == want, "job {i} of app {seed}: wrong output");
    Ok(())
}

/// A flooding context does not starve another: with one device slot, A
/// queues 100 jobs, then B queues 3; B's are dispatched between A's, one
/// each, not after all of A's (start-time fair queuing: A1 held, then B1,
/// A2, B2, A3, B3).
pub fn contexts_take_turns() -> Result<()> {
    let mut device = PlayDevice::start("stall", 1, 1)?;
    let (a, b) = (App::open(1)?, App::open(2)?);
    let (ctx_a, ctx_b) = (a.context()?, b.context()?);
    let ((in_a, out_a), (in_b, out_b)) = (a.buffers(100)?, b.buffers(3)?);
    let mut ring_a = a.dev.ring(128)?;
    queue_behind_held(&mut device, &mut ring_a, |i| echo(&in_a, &out_a, i), 100)?;
    let mut ring_b = b.dev.ring(8)?;
    for i in 0..3 {
        ring_b.push(&echo(&in_b, &out_b, i), i as u64)?;
    }
    ring_b.submit()?;
    let (ua, ub) = (a.dev.usage()?, b.dev.usage()?);
    ensure!((ua.jobs_queued, ub.jobs_queued) == (99, 3), "fdinfo queued: A {}, B {}", ua.jobs_queued, ub.jobs_queued);

    ensure!(device.release()? == 1, "the device did not hold A's first job");
    // `release` read the held job's line: 102 more.
    let order: Vec<u64> = (0..102).map(|_| device.next_served().map(|(ctx, _)| ctx)).collect::<Result<_>>()?;
    let b_at: Vec<usize> = order.iter().enumerate().filter(|(_, &c)| c == ctx_b).map(|(i, _)| i + 1).collect();
    // B starts at the virtual time of A's held job, before A's next one.
    ensure!(b_at == [1, 3, 5], "B's jobs were dispatched {b_at:?} among A's ({ctx_a}), want 1st, 3rd and 5th after A's held one");

    let done_a = ring_a.wait_timeout(100, HANG)?;
    let done_b = ring_b.wait_timeout(3, HANG)?;
    ensure!(done_a.len() == 100 && done_a.iter().all(|c| c.res == 64), "A's jobs: {done_a:?}");
    ensure!(done_b.len() == 3 && done_b.iter().all(|c| c.res == 64), "B's jobs: {done_b:?}");
    (0..100).try_for_each(|i| echoed(&out_a, a.seed, i))?;
    (0..3).try_for_each(|i| echoed(&out_b, b.seed, i))?;
    // Both waited, and fdinfo says so; A's backlog waited longer in all.
    let (ua, ub) = (a.dev.usage()?, b.dev.usage()?);
    ensure!((ua.jobs_queued, ub.jobs_queued) == (0, 0), "still queued: {ua:?} {ub:?}");
    ensure!(ua.queue_delay_ns > ub.queue_delay_ns && ub.queue_delay_ns > 0, "queue delay A {} B {}", ua.queue_delay_ns, ub.queue_delay_ns);
    device.stop()
}

/// HIGH priority needs CAP_SYS_NICE: a process without it gets EPERM (the
/// library's `PriorityNotPermitted`); with it, a high job overtakes every
/// normal one already waiting.
pub fn high_priority_needs_cap_sys_nice() -> Result<()> {
    let device = PlayDevice::start("serve", 1, 2)?;
    let mut unprivileged = Helper::spawn(&["--submit-high-unprivileged"])?;
    unprivileged.expect_line("ok")?;
    unprivileged.finish()?;
    device.stop()?;

    let mut device = PlayDevice::start("stall", 1, 1)?;
    let (a, b) = (App::open(3)?, App::open(4)?);
    let ctx_b = b.context()?;
    let ((in_a, out_a), (in_b, out_b)) = (a.buffers(11)?, b.buffers(1)?);
    let mut ring_a = a.dev.ring(16)?;
    queue_behind_held(&mut device, &mut ring_a, |i| echo(&in_a, &out_a, i), 11)?;
    let job = echo(&in_b, &out_b, 0).priority(Priority::High);
    let high = std::thread::scope(|s| {
        let h = s.spawn(|| b.dev.run(&job));
        // The sync job is queued once B's fdinfo counts it.
        crate::children::eventually("B's high job is queued", || {
            Ok(if b.dev.usage()?.jobs_queued == 1 { Ok(()) } else { Err("not yet".into()) })
        })?;
        ensure!(device.release()? == 1, "the device did not hold A's first job");
        let next = device.next_served()?;
        ensure!(next == (ctx_b, m4npu::uapi::JOB_PRIO_HIGH), "after the held job came {next:?}, want B's high job");
        h.join().map_err(|_| anyhow::anyhow!("high job thread panicked"))?.map_err(anyhow::Error::from)
    })?;
    ensure!(high == 64, "the high job returned {high}");
    echoed(&out_b, b.seed, 0)?;
    ensure!(ring_a.wait_timeout(11, HANG)?.iter().all(|c| c.res == 64), "A's jobs");
    device.stop()
}

/// `--submit-high-unprivileged`: drops to an unprivileged user (and so every
/// capability), then a HIGH job is EPERM with the library's words and a
/// NORMAL one is accepted. Prints `ok`.
pub fn submit_high_unprivileged(_args: &[String]) -> Result<()> {
    // SAFETY: plain syscalls; the process is single-threaded here.
    if unsafe { libc::setresgid(65534, 65534, 65534) } != 0 || unsafe { libc::setresuid(65534, 65534, 65534) } != 0 {
        bail!("dropping privileges: {}", std::io::Error::last_os_error());
    }
    let app = App::open(9)?;
    let dev = &app.dev;
    let (input, output) = app.buffers(1)?;
    let job = echo(&input, &output, 0);
    match dev.run(&job.clone().priority(Priority::High)) {
        Err(e @ Error::PriorityNotPermitted) => ensure!(e.to_string().contains("CAP_SYS_NICE"), "message: {e}"),
        other => bail!("a high job without CAP_SYS_NICE: {other:?}, want PriorityNotPermitted"),
    }
    let mut ring = dev.ring(4)?;
    ring.push(&job.clone().priority(Priority::High), 1)?;
    let done = ring.wait_timeout(1, HANG)?;
    ensure!(done.len() == 1 && done[0].res == -libc::EPERM, "a high uring job without CAP_SYS_NICE: {done:?}");
    // Normal and low are free.
    ensure!(dev.run(&job.clone())? == 64, "a normal job without CAP_SYS_NICE");
    ensure!(dev.run(&job.priority(Priority::Low))? == 64, "a low job without CAP_SYS_NICE");
    println!("ok");
    Ok(())
}

/// A device that dies with recovery on: the jobs it held and those still
/// queued wait, a new device receives them again, each completes once with
/// the right output; the restarted device attaches at once (no EBUSY).
pub fn recovery_hands_jobs_to_the_next_device() -> Result<()> {
    let mut device = PlayDevice::start_with("stall", 1, 4, &["recover"])?;
    let app = App::open(5)?;
    let (input, output) = app.buffers(8)?;
    let mut ring = app.dev.ring(16)?;
    for i in 0..6 {
        ring.push(&echo(&input, &output, i), i as u64)?;
    }
    ring.submit()?;
    device.wait_held(4)?;
    std::thread::scope(|s| -> Result<()> {
        let sync = s.spawn(|| app.dev.run(&echo(&input, &output, 6)));
        crate::children::eventually("the sync job is queued", || {
            Ok(if app.dev.usage()?.jobs_inflight == 7 { Ok(()) } else { Err("not yet".into()) })
        })?;
        device.kill()?;
        ensure!(device_state()? == DeviceState::Recovering, "debugfs after the death of a recovering device");
        let u = app.dev.usage()?;
        ensure!((u.jobs_inflight, u.jobs_failed, u.jobs_queued) == (7, 0, 7), "fdinfo while recovering: {u:?}");
        // Jobs keep queueing while the device is away.
        ring.push(&echo(&input, &output, 7), 7)?;
        ring.submit()?;

        let next = PlayDevice::start("serve", 2, 4)?;
        let done = ring.wait_timeout(7, HANG)?;
        let mut seen: Vec<u64> = done.iter().map(|c| c.user_data).collect();
        seen.sort();
        ensure!(seen == (0..8).filter(|&i| i != 6).collect::<Vec<_>>(), "completions {done:?}");
        ensure!(done.iter().all(|c| c.res == 64), "results {done:?}");
        let sync = sync.join().map_err(|_| anyhow::anyhow!("sync job thread panicked"))?;
        ensure!(sync.as_ref().ok() == Some(&64), "the sync job across the recovery: {sync:?}");
        (0..8).try_for_each(|i| echoed(&output, app.seed, i))?;
        let u = app.dev.usage()?;
        ensure!((u.jobs_submitted, u.jobs_completed, u.jobs_failed, u.jobs_inflight) == (8, 8, 0, 0), "fdinfo: {u:?}");
        next.stop()
    })
}

/// With recovery on and no device coming back, waiting jobs fail with EIO
/// once the window (`recovery_ms`, 5 s by default) is over, not before.
pub fn recovery_window_ends_in_eio() -> Result<()> {
    let mut device = PlayDevice::start_with("stall", 1, 2, &["recover"])?;
    let app = App::open(6)?;
    let (input, output) = app.buffers(4)?;
    let mut ring = app.dev.ring(8)?;
    for i in 0..3 {
        ring.push(&echo(&input, &output, i), i as u64)?;
    }
    ring.submit()?;
    device.wait_held(2)?;
    device.kill()?;
    let died = Instant::now();
    ensure!(device_state()? == DeviceState::Recovering, "debugfs after the death of a recovering device");
    let done = ring.wait_timeout(3, HANG)?;
    let waited = died.elapsed();
    ensure!(done.len() == 3 && done.iter().all(|c| c.res == -libc::EIO), "after the window: {done:?}");
    ensure!(waited >= Duration::from_millis(4500), "jobs failed {waited:?} after the death, inside the 5 s window");
    ensure!(device_state()? == DeviceState::None, "debugfs after the window");
    // Now a job is refused at once, as with no device at all.
    expect_errno("a job with no device and no recovery", app.dev.run(&echo(&input, &output, 3)), Errno::ENXIO)
}

/// A device killed without recovery is let go as its process exits, not
/// when io_uring's exit work tears its ring down later: the next device
/// opens the node at once (no EBUSY window).
pub fn killed_device_is_replaced_at_once() -> Result<()> {
    for _ in 0..3 {
        let device = PlayDevice::start("serve", 1, 2)?;
        device.kill()?;
        // No waiting for io_uring's teardown: the node is free already.
        let next = m4npu_hw::HwDevice::open().context("opening the device node right after the device died")?;
        drop(next);
        ensure!(device_state()? == DeviceState::None, "debugfs after the replacement closed");
    }
    // The session is its opener's: closing the file ends it even while a
    // duplicate of the descriptor lives on, whose commands then get ENXIO.
    let hw = m4npu_hw::HwDevice::open()?;
    let copy = std::os::fd::AsFd::as_fd(&hw).try_clone_to_owned()?;
    drop(hw);
    ensure!(device_state()? == DeviceState::None, "debugfs after the opener closed the device file");
    let req = uapi::HwSetFlags { flags: 0 };
    match crate::raw::ioctl(&copy, uapi::IOC_HW_SET_FLAGS, &req as *const _ as usize) {
        Err(e) if e == libc::ENXIO => {}
        other => bail!("HW_SET_FLAGS on an ended session: {other:?}, want ENXIO"),
    }
    drop(copy);
    // An unknown flag is EINVAL.
    let hw = m4npu_hw::HwDevice::open()?;
    match hw.set_flags(m4npu_hw::HwFlags::from_bits_retain(1 << 7)) {
        Err(e) if e.errno() == Some(Errno::EINVAL) => Ok(()),
        other => bail!("HW_SET_FLAGS with an unknown flag: {other:?}, want EINVAL"),
    }
}
