//! Allocation failures on demand: module load, context open, buffer
//! create, adapter load and jobs, each run with the n-th allocation of the
//! calling thread failing (`/proc/thread-self/fail-nth` over failslab and
//! fail_page_alloc), for n = 1, 2, ... until the operation meets no
//! injected failure any more: every allocation on its path, the module's
//! and the kernel's, fails once. Each failure must come back as an errno
//! with nothing half-made left behind; no splat and no leak (the suite's
//! log scan and kmemleak judge those), and the driver works afterwards.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;

use anyhow::{bail, ensure, Context, Result};
use m4npu::{Device, Errno, JobDesc, Op};

use crate::adapters;
use crate::children::HANG;
use crate::jobs::support::{debugfs_state, open_contexts, pool_used, PlayDevice};
use crate::module;

const FAILSLAB: &str = "/sys/kernel/debug/failslab";
const FAIL_PAGE_ALLOC: &str = "/sys/kernel/debug/fail_page_alloc";

/// More injection points than any operation here meets: a sweep that
/// reaches it is a loop that never ends.
const LIMIT: u32 = 20_000;

fn set(dir: &str, attr: &str, value: &str) -> Result<()> {
    std::fs::write(format!("{dir}/{attr}"), value).with_context(|| format!("writing {value} to {dir}/{attr}"))
}

/// Failure injection for this thread, armed while it lives.
struct Injector {
    fail_nth: File,
}

impl Injector {
    fn arm() -> Result<Self> {
        // Fail sleeping (GFP_KERNEL) and order-0 allocations too, which the
        // defaults spare, and silently: the log scan must only see what the
        // kernel says about how the failures were handled.
        for dir in [FAILSLAB, FAIL_PAGE_ALLOC] {
            set(dir, "ignore-gfp-wait", "N")?;
            set(dir, "verbose", "0")?;
        }
        set(FAIL_PAGE_ALLOC, "ignore-gfp-highmem", "N")?;
        set(FAIL_PAGE_ALLOC, "min-order", "0")?;
        let fail_nth =
            OpenOptions::new().read(true).write(true).open("/proc/thread-self/fail-nth").context("opening fail-nth")?;
        Ok(Self { fail_nth })
    }

    /// Runs `op` with the `n`-th allocation of this thread failing;
    /// whether that failure happened (the operation reached it).
    fn nth<T>(&self, n: u32, op: impl FnOnce() -> T) -> Result<(T, bool)> {
        // The file is open already: arming and reading it allocate nothing.
        self.fail_nth.write_at(n.to_string().as_bytes(), 0).context("arming fail-nth")?;
        let r = op();
        let mut buf = [0u8; 16];
        let len = self.fail_nth.read_at(&mut buf, 0).context("reading fail-nth")?;
        self.fail_nth.write_at(b"0", 0).context("disarming fail-nth")?;
        let left: u32 = std::str::from_utf8(&buf[..len])?.trim().parse().context("fail-nth")?;
        Ok((r, left == 0))
    }

    /// Runs `op` with its 1st, 2nd, ... allocation failing until it
    /// succeeds without meeting one. A failure must be one of `errnos`
    /// (and there must have been an injected one); `after_failure` checks
    /// that nothing was left behind; a success that met an injected
    /// failure (a fallback took over) is handed to `undo`. Returns the
    /// injection points met and the errnos seen.
    fn sweep<T>(
        &self,
        what: &str,
        errnos: &[Errno],
        mut op: impl FnMut() -> Result<T, Errno>,
        mut after_failure: impl FnMut() -> Result<()>,
        mut undo: impl FnMut(T) -> Result<()>,
    ) -> Result<(u32, BTreeSet<String>)> {
        let mut seen = BTreeSet::new();
        for n in 1..=LIMIT {
            match self.nth(n, &mut op)? {
                (Ok(_), false) => return Ok((n - 1, seen)),
                (Ok(t), true) => undo(t).with_context(|| format!("{what}, allocation {n} failing, then undone"))?,
                (Err(e), injected) => {
                    ensure!(injected, "{what} failed with {e} though allocation {n} was not reached");
                    ensure!(errnos.contains(&e), "{what} with allocation {n} failing: {e}, want one of {errnos:?}");
                    seen.insert(format!("{e}"));
                    after_failure().with_context(|| format!("{what}, after allocation {n} failed"))?;
                }
            }
        }
        bail!("{what}: still meets injected failures after {LIMIT} allocations")
    }
}

impl Drop for Injector {
    fn drop(&mut self) {
        let _ = self.fail_nth.write_at(b"0", 0);
        for dir in [FAILSLAB, FAIL_PAGE_ALLOC] {
            let _ = set(dir, "ignore-gfp-wait", "Y");
        }
        let _ = set(FAIL_PAGE_ALLOC, "ignore-gfp-highmem", "Y");
        let _ = set(FAIL_PAGE_ALLOC, "min-order", "1");
    }
}

fn errno_of(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

fn lib_errno(e: m4npu::Error) -> Errno {
    e.errno().unwrap_or(Errno::UnknownErrno)
}

pub fn allocation_failures_are_clean() -> Result<()> {
    let inj = Injector::arm()?;
    // Each sweep's count as it ends, so a failure shows how far it got.
    let report = |line: String| println!("    {line}");

    // Module load, with a firmware loaded at init: a small one and a small
    // pool, as each load zeroes the pool and hashes the model. (The suite
    // ends with the module loaded like this.)
    module::unload_when_free()?;
    let params = format!("firmware={} pool_mb=8", crate::firmware::install_small("faults.m4fw")?);
    let (n, errs) = inj.sweep(
        "module load",
        &[Errno::ENOMEM],
        || module::load_with(&params).map_err(errno_of),
        || {
            ensure!(!module::is_loaded(), "a failed load left the module loaded");
            Ok(())
        },
        |()| module::unload_when_free(),
    )?;
    report(format!("module load: {n} allocations, {errs:?}"));
    let dev = Device::open()?;
    ensure!(dev.info()?.model.is_some(), "the module loaded without its firmware");

    // Context open.
    let before = open_contexts()?;
    let (n, errs) = inj.sweep(
        "context open",
        &[Errno::ENOMEM],
        || Device::open().map_err(lib_errno),
        || {
            ensure!(open_contexts()? == before, "a failed open left a context behind");
            Ok(())
        },
        |d| {
            drop(d);
            Ok(())
        },
    )?;
    report(format!("context open: {n} allocations, {errs:?}"));

    // Buffer create (and the library's mapping of it).
    let used = pool_used()?;
    let (n, errs) = inj.sweep(
        "buffer create",
        &[Errno::ENOMEM],
        || dev.alloc(64 * 1024).map(drop).map_err(lib_errno),
        || {
            ensure!(dev.usage()?.buffers == 0, "a failed create left a buffer");
            Ok(())
        },
        Ok,
    )?;
    ensure!(pool_used()? == used, "NPU memory in use went from {used} to {}", pool_used()?);
    report(format!("buffer create: {n} allocations, {errs:?}"));

    // Adapter load, from a sealed memfd made beforehand.
    let hash = dev.info()?.model.context("no model")?.hash;
    let blob = adapters::synthetic("faults", hash);
    let fd = adapters::memfd(&blob, adapters::SEALS)?;
    let (n, errs) = inj.sweep(
        "adapter load",
        &[Errno::ENOMEM],
        || {
            use std::os::fd::AsFd;
            dev.load_adapter_fd(fd.as_fd(), 0, blob.len() as u64).map(drop).map_err(lib_errno)
        },
        || {
            ensure!(dev.usage()?.adapters == 0, "a failed load left an adapter");
            Ok(())
        },
        Ok,
    )?;
    report(format!("adapter load: {n} allocations, {errs:?}"));

    // Jobs, served by the play device in another process (not injected).
    let device = PlayDevice::start("serve", 1, 8)?;
    let (input, output) = (dev.alloc(4096)?, dev.alloc(4096)?);
    let job = JobDesc::new(Op::Echo).input(&input, 0, 256).output(&output, 0, 256);
    let (n, errs) = inj.sweep("sync job", &[Errno::ENOMEM], || dev.run(&job).map_err(lib_errno), || Ok(()), |_| Ok(()))?;
    report(format!("sync job: {n} allocations, {errs:?}"));
    // A ring of its own each time: a submission refused for want of
    // memory stays in the ring's queue.
    let (n, errs) = inj.sweep(
        "io_uring job",
        &[Errno::ENOMEM, Errno::EAGAIN],
        || {
            let mut ring = dev.ring(4).map_err(lib_errno)?;
            ring.push(&job, 7).map_err(lib_errno)?;
            ring.submit().map_err(lib_errno)?;
            let done = ring.wait_timeout(1, HANG).map_err(lib_errno)?;
            match done.first().map(|c| c.res) {
                Some(r) if r >= 0 => Ok(()),
                Some(r) => Err(Errno::from_raw(-r)),
                None => Err(Errno::ETIMEDOUT),
            }
        },
        || Ok(()),
        Ok,
    )?;
    report(format!("io_uring job: {n} allocations, {errs:?}"));
    drop(inj);

    // Everything failed cleanly: the counts add up and the driver works.
    // (A ring closed with its job in flight cancels it in the background.)
    crate::children::eventually("every job completed once", || {
        let u = dev.usage()?;
        Ok(if u.jobs_inflight == 0 && u.jobs_queued == 0 && u.jobs_submitted == u.jobs_completed + u.jobs_failed {
            Ok(())
        } else {
            Err(format!("{u:?}"))
        })
    })
    .with_context(|| format!("debugfs:\n{}\nplay device: {:?}", debugfs_state().unwrap_or_default(), device.errors()))?;
    ensure!(dev.run(&job)? == 256, "an ECHO job after the injections");
    device.stop()?;
    Ok(())
}
