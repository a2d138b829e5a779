//! `--bench-handoff`: the driver's own cost per job. An ECHO job's round
//! trip over io_uring (app → driver → play device → driver → app) against
//! an `IORING_OP_NOP`'s round trip on the same ring, as a ratio (under QEMU
//! TCG only ratios mean anything): one job at a time, and 64 at a time; the
//! device taking jobs one slot at a time, and in batches.
//! A benchmark, not a test: it prints and asserts nothing.

use std::time::Instant;

use anyhow::Result;
use m4npu::{Device, JobDesc, Op};

use crate::jobs::support::PlayDevice;

const ROUNDS: usize = 1000;
const BATCH: usize = 64;

/// Seconds per operation of `ops` done by `f`.
fn per_op(ops: usize, f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64() / ops as f64)
}

pub fn main(_args: &[String]) -> Result<()> {
    println!("{:<24} {:>12} {:>12} {:>8}", "hand-off", "echo us/job", "nop us/op", "ratio");
    for (mode, label) in [("serve", "per-slot FETCH"), ("serve-batch", "FETCH_BATCH")] {
        let device = PlayDevice::start(mode, 1, BATCH as u16)?;
        let dev = Device::open()?;
        let (input, output) = (dev.alloc(BATCH * 64)?, dev.alloc(BATCH * 64)?);
        let job = |i: usize| JobDesc::new(Op::Echo).input(&input, i * 64, 64).output(&output, i * 64, 64);
        let mut ring = dev.ring(2 * BATCH as u32)?;
        for (width, rounds) in [(1, ROUNDS), (BATCH, ROUNDS / 16)] {
            let run = |ring: &mut m4npu::uring::Ring<'_>, nop: bool| -> Result<()> {
                for _ in 0..rounds {
                    for i in 0..width {
                        if nop { ring.push_nop(i as u64)? } else { ring.push(&job(i), i as u64)? }
                    }
                    let mut left = width;
                    while left > 0 {
                        left -= ring.wait(left)?.len();
                    }
                }
                Ok(())
            };
            // Warm up both paths, then measure them back to back.
            run(&mut ring, false)?;
            run(&mut ring, true)?;
            let echo = per_op(rounds * width, || run(&mut ring, false))?;
            let nop = per_op(rounds * width, || run(&mut ring, true))?;
            let what = format!("{label}, {width} at a time");
            println!("{what:<24} {:>12.1} {:>12.1} {:>8.1}", echo * 1e6, nop * 1e6, echo / nop);
        }
        drop(ring);
        device.stop()?;
    }
    Ok(())
}
