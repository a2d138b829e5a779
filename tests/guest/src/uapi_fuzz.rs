//! The UAPI fuzzer: worker processes of a few threads each drive
//! `/dev/m4npu` and `/dev/m4npu-hw` with random and structured arguments
//! (ioctls, io_uring commands, mmap/munmap/mremap/madvise/fork on BOs, BOs
//! destroyed while mapped and in flight, fds and rings closed with jobs in
//! flight), while a device commits garbage and is killed and replaced.
//! Every io_uring job must complete exactly once, every call must return
//! (no hang), and once everything is closed the NPU memory is back at its
//! baseline. The kernel log scan catches the rest.
//!
//! `cargo xtask test` runs a bounded number of calls; `cargo xtask fuzz
//! --calls N` runs N (`M4NPU_FUZZ_CALLS` in the guest).

use std::collections::HashSet;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use m4npu::{uapi, Device};

use crate::adapters;
use crate::children::{eventually, Helper, HANG};
use crate::jobs::support::{open_contexts, pool_used, PlayDevice};
use crate::raw::ioctl;

const WORKERS: usize = 3;
const THREADS: usize = 2;
/// Calls of a CI run, over all workers.
const CI_CALLS: u64 = 20_000;

/// xorshift64*: a seeded, reproducible stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    /// A size: small, page-sized, odd, huge or zero.
    fn size(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => 1 + self.below(64),
            2 => 4096,
            3 => 4096 * (1 + self.below(16)),
            4 => self.below(1 << 20),
            5 => u64::MAX - self.below(4096),
            6 => 1 << (20 + self.below(20)),
            _ => self.next(),
        }
    }
    fn pick<'a, T>(&mut self, v: &'a [T]) -> Option<&'a T> {
        (!v.is_empty()).then(|| &v[self.below(v.len() as u64) as usize])
    }
}

/// A mapping the thread made: start, length, and whether a fork's child
/// gets it (not after `MADV_DONTFORK`).
struct Map(usize, usize, bool);

/// One context of a worker thread and what it made.
struct Ctx {
    dev: Device,
    bos: Vec<(u32, u64, u64)>,
    adapters: Vec<u32>,
    maps: Vec<Map>,
}

impl Ctx {
    fn open() -> Option<Self> {
        Device::open().ok().map(|dev| Ctx { dev, bos: Vec::new(), adapters: Vec::new(), maps: Vec::new() })
    }

    fn handle(&self, rng: &mut Rng) -> u32 {
        match rng.pick(&self.bos) {
            Some(b) if rng.chance(90) => b.0,
            _ => rng.next() as u32 % 8,
        }
    }

    fn range(&self, rng: &mut Rng) -> uapi::BoRange {
        let (handle, size) = match rng.pick(&self.bos) {
            Some(b) if rng.chance(90) => (b.0, b.1),
            _ => (rng.next() as u32 % 8, 4096),
        };
        let (offset, length) = if rng.chance(80) {
            let off = rng.below(size);
            (off, 1 + rng.below(size - off))
        } else {
            (rng.size(), rng.size())
        };
        uapi::BoRange { handle, pad: if rng.chance(3) { 1 } else { 0 }, offset, length }
    }

    fn job(&self, rng: &mut Rng) -> uapi::Job {
        uapi::Job {
            adapter: match rng.pick(&self.adapters) {
                Some(&a) if rng.chance(50) => a,
                _ => if rng.chance(80) { 0 } else { rng.next() as u32 },
            },
            op: if rng.chance(90) { 1 + rng.below(4) as u16 } else { rng.next() as u16 },
            priority: if rng.chance(90) { rng.below(3) as u8 } else { rng.next() as u8 },
            flags: if rng.chance(95) { 0 } else { rng.next() as u8 },
            input: self.range(rng),
            output: self.range(rng),
            state: if rng.chance(50) { uapi::BoRange::default() } else { self.range(rng) },
        }
    }

    /// Unmaps what this context mapped (a closing context's mappings
    /// would otherwise keep its BOs alive past the end of the run).
    fn unmap_all(&mut self) {
        for Map(at, len, _) in self.maps.drain(..) {
            // SAFETY: our own mapping, unmapped once.
            unsafe { libc::munmap(at as *mut libc::c_void, len) };
        }
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.unmap_all();
    }
}

/// A sealed memfd holding an adapter: the right one for the model, or a
/// mutated copy.
fn adapter_fd(rng: &mut Rng, good: &[u8]) -> Option<(OwnedFd, u64)> {
    let mut blob = good.to_vec();
    if rng.chance(60) {
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(blob.len() as u64) as usize;
            blob[at] = rng.next() as u8;
        }
    }
    adapters::memfd(&blob, adapters::SEALS).ok().map(|fd| (fd, blob.len() as u64))
}

/// What a worker thread counts.
#[derive(Default)]
struct Tally {
    calls: u64,
    jobs: u64,
}

/// One worker thread: `calls` random calls. An `Err` is a broken
/// invariant, not a refused call.
fn worker_thread(seed: u64, calls: u64, good_adapter: &[u8]) -> Result<Tally> {
    let mut rng = Rng(seed | 1);
    let mut ctxs: Vec<Ctx> = Vec::new();
    let mut tally = Tally::default();
    // The ring lives on its own context; user_data in flight on it.
    let ring_dev = Device::open().context("opening the ring's context")?;
    let mut ring = Some(ring_dev.ring(64)?);
    let mut in_flight: HashSet<u64> = HashSet::new();
    let mut next_id = 1u64;
    let reap = |ring: &mut m4npu::uring::Ring<'_>, in_flight: &mut HashSet<u64>, min: usize| -> Result<()> {
        for c in ring.wait_timeout(min, HANG)? {
            ensure!(in_flight.remove(&c.user_data), "a completion for job {} that is not in flight (twice?)", c.user_data);
        }
        Ok(())
    };
    for _ in 0..calls {
        tally.calls += 1;
        if ctxs.is_empty() || (ctxs.len() < 4 && rng.chance(3)) {
            if let Some(c) = Ctx::open() {
                ctxs.push(c);
            }
            continue;
        }
        let i = rng.below(ctxs.len() as u64) as usize;
        let c = &mut ctxs[i];
        match rng.below(20) {
            0 => {
                // Close a context, mappings and all, jobs maybe in flight.
                if rng.chance(30) {
                    ctxs.swap_remove(i);
                }
            }
            1..=3 => {
                let mut req = uapi::BoCreate { size: rng.size(), flags: if rng.chance(95) { 0 } else { rng.next() as u32 }, ..Default::default() };
                if ioctl(&c.dev, uapi::IOC_BO_CREATE, &mut req as *mut _ as usize).is_ok() {
                    c.bos.push((req.handle, req.size.next_multiple_of(4096), req.mmap_offset));
                }
            }
            4 => {
                let handle = c.handle(&mut rng);
                let req = uapi::BoDestroy { handle, pad: if rng.chance(5) { 1 } else { 0 } };
                if ioctl(&c.dev, uapi::IOC_BO_DESTROY, &req as *const _ as usize).is_ok() {
                    c.bos.retain(|b| b.0 != handle);
                }
            }
            5 | 6 => {
                // Map a BO (or a stray offset), whole or in part.
                let (offset, size) = match rng.pick(&c.bos) {
                    Some(b) if rng.chance(90) => (b.2 + 4096 * rng.below(b.1 / 4096), b.1),
                    _ => (rng.next() & !4095, 4096),
                };
                let len = if rng.chance(80) { 4096 * (1 + rng.below(size / 4096)) } else { rng.size() };
                let flags = if rng.chance(90) { libc::MAP_SHARED } else { libc::MAP_PRIVATE };
                let prot = libc::PROT_READ | if rng.chance(90) { libc::PROT_WRITE } else { 0 };
                // SAFETY: a new mapping at an address the kernel picks.
                let p = unsafe { libc::mmap(std::ptr::null_mut(), len as usize, prot, flags, c.dev.as_raw_fd(), offset as i64) };
                if p != libc::MAP_FAILED {
                    // SAFETY: a byte of the mapping just made, readable.
                    let _ = unsafe { std::ptr::read_volatile(p.cast::<u8>()) };
                    if prot & libc::PROT_WRITE != 0 {
                        // SAFETY: as above, and writable.
                        unsafe { std::ptr::write_volatile(p.cast::<u8>(), rng.next() as u8) };
                    }
                    c.maps.push(Map(p as usize, len as usize, true));
                }
            }
            7 => {
                if !c.maps.is_empty() {
                    let Map(at, len, _) = c.maps.swap_remove(rng.below(c.maps.len() as u64) as usize);
                    // SAFETY: our own mapping, unmapped once.
                    unsafe { libc::munmap(at as *mut libc::c_void, len) };
                }
            }
            8 => {
                // Shrink or move a mapping (growing one is refused).
                if let Some(k) = (!c.maps.is_empty()).then(|| rng.below(c.maps.len() as u64) as usize) {
                    let Map(at, len, inherited) = c.maps[k];
                    let new = if rng.chance(50) { len } else { 4096 * (1 + rng.below(len as u64 / 4096 + 1)) as usize };
                    // SAFETY: remapping our own mapping; on success the old range is gone.
                    let p = unsafe { libc::mremap(at as *mut libc::c_void, len, new, libc::MREMAP_MAYMOVE) };
                    if p != libc::MAP_FAILED {
                        c.maps[k] = Map(p as usize, new, inherited);
                        // SAFETY: inside the live mapping, within its old length.
                        let _ = unsafe { std::ptr::read_volatile(p.cast::<u8>()) };
                    }
                }
            }
            9 => {
                if !c.maps.is_empty() {
                    let k = rng.below(c.maps.len() as u64) as usize;
                    let Map(at, len, _) = c.maps[k];
                    let advice = [libc::MADV_DONTNEED, libc::MADV_DONTFORK, libc::MADV_DOFORK, libc::MADV_WILLNEED, libc::MADV_COLD, libc::MADV_PAGEOUT, libc::MADV_POPULATE_READ, libc::MADV_FREE];
                    let a = *rng.pick(&advice).expect("advice");
                    // SAFETY: advice on our own mapping.
                    if unsafe { libc::madvise(at as *mut libc::c_void, len, a) } == 0 && matches!(a, libc::MADV_DONTFORK | libc::MADV_DOFORK) {
                        c.maps[k].2 = a == libc::MADV_DOFORK;
                    }
                }
            }
            10 => {
                // fork: the child reads the mappings it inherited and exits.
                let at = c.maps.iter().filter(|m| m.2).map(|m| m.0).collect::<Vec<_>>();
                // SAFETY: the child only reads memory and exits.
                let pid = unsafe { libc::fork() };
                if pid == 0 {
                    for a in at {
                        // SAFETY: the child's copy of a live mapping.
                        let _ = unsafe { std::ptr::read_volatile(a as *const u8) };
                    }
                    // SAFETY: leave the child at once.
                    unsafe { libc::_exit(0) };
                }
                if pid > 0 {
                    let mut status = 0;
                    // SAFETY: waiting for our own child.
                    unsafe { libc::waitpid(pid, &mut status, 0) };
                    ensure!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "a forked child reading its BO mappings died (status {status:#x})");
                }
            }
            11 | 12 => {
                let Some((fd, len)) = adapter_fd(&mut rng, good_adapter) else { continue };
                let fd_raw = match rng.below(10) {
                    0 => -1,
                    1 => c.dev.as_raw_fd(),
                    _ => fd.as_raw_fd(),
                };
                let (offset, length) = if rng.chance(85) { (0, len) } else { (rng.size(), rng.size()) };
                let mut req = uapi::AdapterLoad { fd: fd_raw, offset, length, flags: if rng.chance(95) { 0 } else { 1 }, ..Default::default() };
                if ioctl(&c.dev, uapi::IOC_ADAPTER_LOAD, &mut req as *mut _ as usize).is_ok() {
                    c.adapters.push(req.handle);
                }
            }
            13 => {
                let handle = match rng.pick(&c.adapters) {
                    Some(&a) if rng.chance(80) => a,
                    _ => rng.next() as u32 % 4,
                };
                let req = uapi::AdapterUnload { handle, pad: 0 };
                if ioctl(&c.dev, uapi::IOC_ADAPTER_UNLOAD, &req as *const _ as usize).is_ok() {
                    c.adapters.retain(|&a| a != handle);
                }
            }
            14 => {
                // A synchronous job: it must return (the device commits garbage).
                let job = c.job(&mut rng);
                let _ = c.dev.run_raw(&job);
                tally.jobs += 1;
            }
            15 | 16 => {
                // io_uring jobs on this context's descriptors, through the ring
                // of another context: its handles mean nothing there, or
                // something else (what a confused app would send).
                let Some(r) = ring.as_mut() else { continue };
                let job = c.job(&mut rng);
                let id = next_id;
                next_id += 1;
                if rng.chance(10) {
                    let mut payload = [0u8; 80];
                    payload.iter_mut().for_each(|b| *b = rng.next() as u8);
                    let op = if rng.chance(50) { uapi::URING_CMD_RUN } else { rng.next() as u32 };
                    r.push_cmd(op, payload, id)?;
                } else {
                    r.push_raw(&job, id)?;
                }
                in_flight.insert(id);
                tally.jobs += 1;
                r.submit()?;
                reap(r, &mut in_flight, 0)?;
            }
            17 => {
                // Close the ring with its jobs in flight: cancelled, not lost.
                if rng.chance(20) {
                    drop(ring.take());
                    in_flight.clear();
                    ring = Some(ring_dev.ring(64)?);
                }
            }
            18 => {
                // Random ioctls of the driver's type, with a real buffer or a bad pointer.
                let nr = rng.below(0x30) as u8;
                let size = *rng.pick(&[0usize, 8, 16, 24, 40, 48, 72, 80, 96, 128, 256]).expect("size");
                let cmd = uapi::ioc(rng.below(4) as u32, uapi::IOCTL_MAGIC, nr, size);
                let mut buf = [0u8; 512];
                buf.iter_mut().for_each(|b| *b = if rng.chance(70) { 0 } else { rng.next() as u8 });
                let arg = if rng.chance(90) { buf.as_mut_ptr() as usize } else { rng.next() as usize };
                let _ = ioctl(&c.dev, cmd, arg);
            }
            _ => {
                // The device node: busy while a device serves, else ours for
                // a moment, with a few random commands.
                if let Ok(hw) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/m4npu-hw") {
                    for _ in 0..rng.below(3) {
                        let nr = 0x20 + rng.below(6) as u8;
                        let mut buf = [0u8; 64];
                        buf.iter_mut().for_each(|b| *b = if rng.chance(80) { 0 } else { rng.next() as u8 });
                        let cmd = uapi::ioc(rng.below(4) as u32, uapi::IOCTL_MAGIC, nr, 8 * rng.below(9) as usize);
                        let _ = ioctl(&hw, cmd, buf.as_mut_ptr() as usize);
                    }
                }
            }
        }
    }
    // Every job still in flight on the ring completes, once.
    if let Some(r) = ring.as_mut() {
        let start = Instant::now();
        while !in_flight.is_empty() {
            ensure!(start.elapsed() < HANG, "{} io_uring jobs never completed: {:?}", in_flight.len(), in_flight.iter().take(8).collect::<Vec<_>>());
            let n = in_flight.len();
            reap(r, &mut in_flight, n)?;
        }
    }
    Ok(tally)
}

/// `--uapi-fuzz-worker SEED CALLS`: `THREADS` threads share the calls.
/// Prints `progress N` every few hundred calls (the parent kills the
/// device on those) and `done CALLS JOBS` at the end.
pub fn worker(args: &[String]) -> Result<()> {
    let seed: u64 = args.first().context("seed")?.parse()?;
    let calls: u64 = args.get(1).context("calls")?.parse()?;
    let hash = Device::open()?.info()?.model.context("no model loaded")?.hash;
    let good = adapters::synthetic("fuzz", hash);
    let results: Vec<Result<Tally>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS as u64)
            .map(|t| {
                let good = &good;
                s.spawn(move || {
                    let mut total = Tally::default();
                    let per = calls.div_ceil(THREADS as u64);
                    let chunk = 200;
                    for k in 0..per.div_ceil(chunk) {
                        let n = chunk.min(per - k * chunk);
                        let t = worker_thread(seed.wrapping_mul(31).wrapping_add(t * 1000 + k), n, good)?;
                        total.calls += t.calls;
                        total.jobs += t.jobs;
                        println!("progress {}", total.calls);
                    }
                    Ok(total)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")))).collect()
    });
    let (mut calls, mut jobs) = (0, 0);
    for r in results {
        let t = r?;
        calls += t.calls;
        jobs += t.jobs;
    }
    println!("done {calls} {jobs}");
    Ok(())
}

pub fn uapi_fuzzer_finds_nothing() -> Result<()> {
    let calls: u64 = std::env::var("M4NPU_FUZZ_CALLS").ok().and_then(|v| v.parse().ok()).unwrap_or(CI_CALLS);
    let base_pool = pool_used()?;
    let base_contexts = open_contexts()?;
    let mut device = Some(PlayDevice::start("garbage", 2, 16)?);
    let start = Instant::now();
    let per_worker = calls.div_ceil(WORKERS as u64);
    let mut workers = (0..WORKERS)
        .map(|w| Helper::spawn(&["--uapi-fuzz-worker", &(0x5eed + w as u64).to_string(), &per_worker.to_string()]))
        .collect::<Result<Vec<_>>>()?;
    // Worker 0's progress paces the device's deaths: killed (with jobs
    // held) and replaced at every report, garbage in between.
    let mut kills = 0;
    let mut dones = vec![None; WORKERS];
    loop {
        let line = workers[0].expect("progress or done", |l| (l.starts_with("progress") || l.starts_with("done")).then(|| l.to_string()))?;
        if let Some(done) = line.strip_prefix("done ") {
            dones[0] = Some(done.to_string());
            break;
        }
        if let Some(d) = device.take() {
            d.crash()?;
            kills += 1;
        }
        // The node may be a worker's for a moment (it probes it): retry.
        eventually("a new device attaches", || {
            Ok(match PlayDevice::start("garbage", 2, 16) {
                Ok(d) => {
                    device = Some(d);
                    Ok(())
                }
                Err(e) => Err(format!("{e:#}")),
            })
        })?;
    }
    let mut total = (0u64, 0u64);
    for (w, h) in workers.iter_mut().enumerate() {
        let done = match dones[w].take() {
            Some(d) => d,
            None => h.expect("done", |l| l.strip_prefix("done ").map(str::to_string))?,
        };
        let mut parts = done.split_whitespace().map(|n| n.parse::<u64>().unwrap_or(0));
        total.0 += parts.next().unwrap_or(0);
        total.1 += parts.next().unwrap_or(0);
        h.finish().with_context(|| format!("worker {w}: {:?}", h.log().iter().rev().take(5).collect::<Vec<_>>()))?;
    }
    let secs = start.elapsed().as_secs_f64();
    if let Some(d) = device.take() {
        d.stop()?;
    }
    // Everything is closed: the NPU memory and the contexts are back.
    eventually("the pool back at its baseline", || {
        Ok(match (pool_used()?, open_contexts()?) {
            (p, c) if p == base_pool && c == base_contexts => Ok(()),
            (p, c) => Err(format!("{p} bytes used (baseline {base_pool}), {c} contexts (baseline {base_contexts})")),
        })
    })?;
    if total.0 < calls {
        bail!("only {} of {calls} calls were made", total.0);
    }
    println!("    {} calls ({} jobs) in {secs:.1} s: {:.0} calls/s; the device killed {kills} times", total.0, total.1, total.0 as f64 / secs);
    Ok(())
}
