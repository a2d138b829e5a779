//! The device side in batches (FETCH_BATCH / COMMIT_BATCH): many jobs per
//! command, each result to its own job, and bad batches refused whole.

use std::os::fd::AsRawFd;

use anyhow::{ensure, Result};
use io_uring::{opcode, types, IoUring};
use m4npu::{uapi, Device, JobDesc, Op};
use m4npu_hw::HwDevice;

use super::device_node::reap;
use super::support::pattern;
use crate::children::HANG;

fn batch_cmd(ring: &mut IoUring, hw: &HwDevice, cmd_op: u32, cmd: uapi::HwBatchCmd, user_data: u64) -> Result<()> {
    // SAFETY: `HwBatchCmd` is 16 bytes of integers without padding.
    let bytes = unsafe { std::mem::transmute::<uapi::HwBatchCmd, [u8; 16]>(cmd) };
    let sqe = opcode::UringCmd16::new(types::Fd(hw.as_raw_fd()), cmd_op).cmd(bytes).build().user_data(user_data);
    // SAFETY: the payload's `addr` points at memory that outlives the ring
    // (leaked by the caller) or is bad on purpose.
    unsafe { ring.submission().push(&sqe) }.map_err(|_| anyhow::anyhow!("submission queue full"))?;
    Ok(())
}

/// Results as COMMIT_BATCH reads them, leaked: the driver reads them while
/// it takes the command.
fn results(entries: &[(u16, i32)]) -> u64 {
    raw_results(entries.iter().map(|&(tag, result)| uapi::HwBatchResult { tag, pad: 0, result }).collect())
}

fn raw_results(entries: Vec<uapi::HwBatchResult>) -> u64 {
    entries.leak().as_ptr() as u64
}

pub fn jobs_hand_off_in_batches() -> Result<()> {
    // This process is the device: nothing fetches until the batch queue
    // exists, so all ten jobs wait in the driver for one FETCH_BATCH.
    let hw = HwDevice::open()?;
    let app = Device::open()?;
    let (mut input, output) = (app.alloc(12 * 64)?, app.alloc(12 * 64)?);
    for i in 0..12 {
        pattern(7, i as u32, &mut input.as_mut_slice()[i * 64..][..64]);
    }
    let job = |i: usize| JobDesc::new(Op::Echo).input(&input, i * 64, 64).output(&output, i * 64, 64);
    let mut ring = app.ring(16)?;
    for i in 0..10 {
        ring.push(&job(i), i as u64)?;
    }
    ring.submit()?;
    ensure!(app.usage()?.jobs_queued == 10, "fdinfo: {:?}", app.usage()?);
    let mut queue = hw.batch_queue(0, 16)?;
    let jobs = queue.fetch()?;
    ensure!(jobs.len() == 10, "one FETCH_BATCH brought {} of the 10 waiting jobs", jobs.len());
    let mut tags: Vec<u16> = jobs.iter().map(|j| j.tag()).collect();
    tags.sort();
    tags.dedup();
    ensure!(tags.len() == 10, "the batch's jobs share slots: {:?}", jobs.iter().map(|j| j.tag()).collect::<Vec<_>>());
    for mut j in jobs {
        let b = j.buffers()?;
        let n = b.input.len();
        b.output[..n].copy_from_slice(b.input);
        queue.commit(j, Ok(n))?;
    }
    queue.flush()?;
    let done = ring.wait_timeout(10, HANG)?;
    ensure!(done.len() == 10 && done.iter().all(|c| c.res == 64), "after one COMMIT_BATCH: {done:?}");
    ensure!(output.as_slice()[..10 * 64] == input.as_slice()[..10 * 64], "outputs of the batch");

    // Bad batches, on a raw ring of the same session. The driver writes
    // entries while a FETCH_BATCH waits: their memory is never freed.
    let entries: &'static mut [uapi::HwBatchJob] = Vec::leak(vec![uapi::HwBatchJob::default(); 64]);
    let addr = entries.as_mut_ptr() as u64;
    let cmd = |queue, count, pad| uapi::HwBatchCmd { queue, count, pad, addr };
    let (fetch, commit) = (uapi::URING_CMD_HW_FETCH_BATCH, uapi::URING_CMD_HW_COMMIT_BATCH);
    let mut raw = IoUring::new(16)?;
    let refused: [(&str, u32, uapi::HwBatchCmd, i32); 9] = [
        ("FETCH_BATCH on queue 16", fetch, cmd(16, 4, 0), libc::EINVAL),
        ("FETCH_BATCH of 0 jobs", fetch, cmd(1, 0, 0), libc::EINVAL),
        ("FETCH_BATCH of 65 jobs", fetch, cmd(1, 65, 0), libc::EINVAL),
        ("FETCH_BATCH with pad", fetch, cmd(1, 4, 1), libc::EINVAL),
        ("a second FETCH_BATCH on a queue", fetch, cmd(0, 4, 0), libc::EBUSY),
        ("COMMIT_BATCH of a slot without a job", commit, uapi::HwBatchCmd { addr: results(&[(3, 0)]), ..cmd(0, 1, 0) }, libc::EINVAL),
        ("COMMIT_BATCH from a bad address", commit, uapi::HwBatchCmd { addr: 8, ..cmd(0, 2, 0) }, libc::EFAULT),
        ("COMMIT_BATCH of tag 64", commit, uapi::HwBatchCmd { addr: results(&[(64, 0)]), ..cmd(0, 1, 0) }, libc::EINVAL),
        (
            "COMMIT_BATCH with an entry's pad",
            commit,
            uapi::HwBatchCmd { addr: raw_results(vec![uapi::HwBatchResult { tag: 3, pad: 1, result: 0 }]), ..cmd(0, 1, 0) },
            libc::EINVAL,
        ),
    ];
    for (i, (_, op, c, _)) in refused.iter().enumerate() {
        batch_cmd(&mut raw, &hw, *op, *c, i as u64)?;
    }
    let mut wrong = Vec::new();
    for (user_data, res) in reap(&mut raw, refused.len())? {
        let (what, _, _, want) = refused[user_data as usize];
        if res != -want {
            wrong.push(format!("{what}: {res}, want -{want}"));
        }
    }
    ensure!(wrong.is_empty(), "batch commands: {}", wrong.join("; "));

    // Two held jobs: a batch naming one of them twice commits neither; one
    // result too large for its job fails that job alone, with EIO.
    ring.push(&job(10), 10)?;
    ring.push(&job(11), 11)?;
    ring.submit()?;
    let jobs = queue.fetch()?;
    ensure!(jobs.len() == 2, "fetched {} of 2", jobs.len());
    let (t0, t1) = (jobs[0].tag(), jobs[1].tag());
    batch_cmd(&mut raw, &hw, commit, uapi::HwBatchCmd { addr: results(&[(t0, 64), (t0, 64)]), ..cmd(0, 2, 0) }, 100)?;
    let r = reap(&mut raw, 1)?;
    ensure!(r == [(100, -libc::EINVAL)], "a batch naming a slot twice: {r:?}");
    ensure!(app.usage()?.jobs_inflight == 2, "the refused batch committed something: {:?}", app.usage()?);
    let ids: Vec<u64> = jobs.iter().map(|j| j.raw().id).collect();
    batch_cmd(&mut raw, &hw, commit, uapi::HwBatchCmd { addr: results(&[(t0, 0), (t1, 65)]), ..cmd(0, 2, 0) }, 101)?;
    let r = reap(&mut raw, 1)?;
    ensure!(r == [(101, 2)], "a batch of two: {r:?}");
    let done = ring.wait_timeout(2, HANG)?;
    let res_of = |user_data: u64| done.iter().find(|c| c.user_data == user_data).map(|c| c.res);
    // Job 10 or 11 was at tag t0, whichever the driver took first.
    let (first, second) = if ids[0] < ids[1] { (10, 11) } else { (11, 10) };
    ensure!(
        res_of(first) == Some(0) && res_of(second) == Some(-libc::EIO),
        "results of a batch with one invalid result: {done:?}"
    );

    // A FETCH_BATCH whose entries cannot be written: EFAULT for the device,
    // EIO for the job it took (the batch queue's own fetch is not out).
    batch_cmd(&mut raw, &hw, fetch, uapi::HwBatchCmd { addr: 8, ..cmd(2, 1, 0) }, 102)?;
    ring.push(&job(0), 0)?;
    ring.submit()?;
    let r = reap(&mut raw, 1)?;
    ensure!(r == [(102, -libc::EFAULT)], "a FETCH_BATCH into a bad address: {r:?}");
    let done = ring.wait_timeout(1, HANG)?;
    ensure!(done.len() == 1 && done[0].res == -libc::EIO, "the job it took: {done:?}");

    // The queue's slots were committed behind its back: forget them.
    drop(jobs);
    drop(raw);
    drop(queue);
    Ok(())
}

/// A FETCH_BATCH's last place goes only to an app with nothing on the
/// device: a flooding app cannot take every place, and another app's job
/// finds one at once instead of waiting for one of the flood's.
pub fn batches_keep_a_place_for_another_app() -> Result<()> {
    let hw = HwDevice::open()?;
    let (flood, other) = (Device::open()?, Device::open()?);
    let (fin, fout) = (flood.alloc(4 * 64)?, flood.alloc(4 * 64)?);
    let (oin, oout) = (other.alloc(64)?, other.alloc(64)?);
    let job = |i: usize| JobDesc::new(Op::Echo).input(&fin, i * 64, 64).output(&fout, i * 64, 64);
    let mut flood_ring = flood.ring(8)?;
    for i in 0..4 {
        flood_ring.push(&job(i), i as u64)?;
    }
    flood_ring.submit()?;
    // Two places: the first takes a flood job, the last keeps.
    let mut queue = hw.batch_queue(0, 2)?;
    let first = queue.fetch()?;
    ensure!(first.len() == 1, "a FETCH_BATCH of 2 with only a flood waiting brought {} jobs", first.len());
    let flood_ctx = first[0].context_id();
    let mut other_ring = other.ring(2)?;
    other_ring.push(&JobDesc::new(Op::Echo).input(&oin, 0, 64).output(&oout, 0, 64), 9)?;
    other_ring.submit()?;
    let second = queue.fetch()?;
    ensure!(
        second.len() == 1 && second[0].context_id() != flood_ctx,
        "the kept place went to {:?}, not to the other app",
        second.iter().map(|j| j.context_id()).collect::<Vec<_>>()
    );
    // Everything completes, the flood one place at a time.
    let mut held = first;
    held.extend(second);
    let mut done = 0;
    while done < 5 {
        for j in held.drain(..) {
            queue.commit(j, Ok(0))?;
            done += 1;
        }
        if done < 5 {
            held = queue.fetch()?;
        }
    }
    queue.flush()?;
    let flooded = flood_ring.wait_timeout(4, HANG)?;
    let others = other_ring.wait_timeout(1, HANG)?;
    ensure!(flooded.len() == 4 && others.len() == 1, "completions: {flooded:?} {others:?}");
    Ok(())
}
