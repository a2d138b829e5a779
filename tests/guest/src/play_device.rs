//! `--play-device MODE QUEUES DEPTH [recover]`: the suite's NPU device,
//! serving jobs behind `/dev/m4npu-hw` until it is killed; with `recover`,
//! its session asks the driver for recovery (`HW_FLAG_RECOVERY`).
//!
//! What it computes ([`transform`]) is trivial, and chosen so that a test
//! can tell from the output that the device read the right input, wrote
//! the right output, read and wrote the state, and saw the adapter.
//!
//! Modes:
//! - `serve`: one thread per queue, every job computed and committed;
//! - `serve-batch`: as `serve`, each queue fetching and committing in
//!   batches (FETCH_BATCH / COMMIT_BATCH), printing `batch N` for every
//!   fetch that brought more than one job;
//! - `stall`: jobs are fetched and held, `held N` printed as their number
//!   changes; the stdin line `release` commits them all (then `released N`)
//!   and from then on jobs are served as they come;
//! - `errno=E`: every job fails with errno `E`;
//! - `overflow`: every job reports one output byte more than its output
//!   range holds (an invalid result);
//! - `garbage`: every job's output filled with noise and a random result
//!   committed: a valid length, an errno, or what no job can return (the
//!   UAPI fuzzer's device).
//!
//! stdout: `ready` once every slot of every queue waits for a job, then the
//! lines above, and `error: ...` for anything unexpected.

use std::os::fd::AsRawFd;

use m4npu::{uapi, Errno, Error, Op};
use m4npu_hw::{HwDevice, HwFlags, HwJob, HwQueue};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Serve,
    ServeBatch,
    Stall,
    Errno(Errno),
    Overflow,
    Garbage,
}

const KEY: u8 = 0xA5;

/// The device's work: ECHO copies the input; every other op writes
/// `input[i] ^ 0xA5 ^ counter` where `counter` is the little-endian u64 at
/// the start of the state range (0 without state), which it increments.
/// A job with an adapter fails with `EBADMSG` unless the adapter range
/// starts with the adapter magic. Returns the bytes written: as many as
/// both input and output hold.
pub fn transform(
    op: u16,
    input: &[u8],
    output: &mut [u8],
    state: Option<&mut [u8]>,
    adapter: Option<&[u8]>,
) -> Result<usize, Errno> {
    if adapter.is_some_and(|a| !a.starts_with(&uapi::ADAPTER_MAGIC)) {
        return Err(Errno::EBADMSG);
    }
    let mut key = KEY;
    if let Some(state) = state {
        let counter = state.get_mut(..8).ok_or(Errno::EINVAL)?;
        let c = u64::from_le_bytes((&*counter).try_into().expect("8 bytes"));
        counter.copy_from_slice(&(c + 1).to_le_bytes());
        key ^= c as u8;
    }
    let n = input.len().min(output.len());
    if op == uapi::JOB_OP_ECHO {
        output[..n].copy_from_slice(&input[..n]);
    } else {
        for (o, i) in output[..n].iter_mut().zip(&input[..n]) {
            *o = i ^ key;
        }
    }
    Ok(n)
}

/// What [`transform`] writes for `input` (into an output at least as long),
/// with the state counter at `counter` before the job.
pub fn expected(op: Op, input: &[u8], counter: Option<u64>) -> Vec<u8> {
    match op {
        Op::Echo => input.to_vec(),
        _ => {
            let key = KEY ^ counter.unwrap_or(0) as u8;
            input.iter().map(|b| b ^ key).collect()
        }
    }
}

fn parse(args: &[String]) -> Option<(Mode, u16, u16, HwFlags)> {
    let mode = match args.first()?.as_str() {
        "serve" => Mode::Serve,
        "serve-batch" => Mode::ServeBatch,
        "stall" => Mode::Stall,
        "overflow" => Mode::Overflow,
        "garbage" => Mode::Garbage,
        m => Mode::Errno(Errno::from_raw(m.strip_prefix("errno=")?.parse().ok()?)),
    };
    let flags = match args.get(3).map(String::as_str) {
        None => HwFlags::empty(),
        Some("recover") => HwFlags::RECOVERY,
        Some(_) => return None,
    };
    Some((mode, args.get(1)?.parse().ok()?, args.get(2)?.parse().ok()?, flags))
}

/// Entry point of the helper mode; returns the exit status (it serves
/// until killed, so only failures return).
pub fn main(args: &[String]) -> i32 {
    let Some((mode, queues, depth, flags)) = parse(args) else {
        eprintln!("usage: --play-device serve|serve-batch|stall|overflow|garbage|errno=E QUEUES DEPTH [recover]");
        return 2;
    };
    let r = HwDevice::open().and_then(|dev| dev.set_flags(flags).map(|()| dev)).and_then(|dev| match mode {
        Mode::Stall => stall(&dev, queues, depth),
        Mode::ServeBatch => serve_batches(&dev, queues, depth),
        _ => serve(&dev, mode, queues, depth),
    });
    if let Err(e) = r {
        println!("error: {e}");
    }
    1
}

/// Computes `job` and commits the result as `mode` says.
fn finish<'m>(queue: &mut HwQueue<'m>, mut job: HwJob<'m>, mode: Mode) -> m4npu::Result<()> {
    let op = job.raw().op;
    let result = match mode {
        Mode::Errno(e) => Err(e),
        Mode::Overflow => {
            let too_many = i32::try_from(job.raw().output.len + 1).unwrap_or(i32::MAX);
            return queue.commit_raw(job, too_many);
        }
        Mode::Garbage => {
            let mut x = job.id().wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            if let Ok(b) = job.buffers() {
                b.output.iter_mut().for_each(|o| *o = next() as u8);
            }
            let len = job.raw().output.len;
            let result = match next() % 6 {
                0 | 1 => (next() % (len + 1)) as i32,
                2 => -((next() % 133) as i32 + 1),
                3 => i32::MIN,
                4 => i32::try_from(len + 1 + next() % 4096).unwrap_or(i32::MAX),
                _ => -((next() % 100_000) as i32) - 134,
            };
            return queue.commit_raw(job, result);
        }
        Mode::Serve | Mode::ServeBatch | Mode::Stall => match job.buffers() {
            Ok(b) => transform(op, b.input, b.output, b.state, b.adapter),
            Err(e) => {
                println!("error: {e}");
                Err(Errno::EFAULT)
            }
        },
    };
    queue.commit(job, result)
}

/// A failed slot command: expected for the invalid results of `overflow`
/// (the driver refuses the commit), reported otherwise. The slot waits again.
fn slot_failed(queue: &mut HwQueue<'_>, e: Error, mode: Mode) -> m4npu::Result<()> {
    let refused_commit = matches!(e, Error::HwCommand { source: Errno::EINVAL, .. });
    if !(matches!(mode, Mode::Overflow | Mode::Garbage) && refused_commit) {
        println!("error: {e}");
    }
    queue.rearm()
}

/// One thread per queue, each creating its queue itself (io_uring hands a
/// slot's job to the task that submitted its FETCH).
fn serve(dev: &HwDevice, mode: Mode, queues: u16, depth: u16) -> m4npu::Result<()> {
    per_queue_thread(queues, |id| dev.queue(id, depth), |queue| {
        match queue.fetch() {
            Ok(jobs) => jobs.into_iter().try_for_each(|job| finish(queue, job, mode)),
            Err(e @ Error::HwCommand { .. }) => slot_failed(queue, e, mode),
            Err(e) => Err(e),
        }
    })
}

/// As [`serve`], with batch queues.
fn serve_batches(dev: &HwDevice, queues: u16, depth: u16) -> m4npu::Result<()> {
    per_queue_thread(queues, |id| dev.batch_queue(id, depth), |queue| {
        let jobs = queue.fetch()?;
        if jobs.len() > 1 {
            println!("batch {}", jobs.len());
        }
        jobs.into_iter().try_for_each(|mut job| {
            let op = job.raw().op;
            let result = match job.buffers() {
                Ok(b) => transform(op, b.input, b.output, b.state, b.adapter),
                Err(_) => Err(Errno::EFAULT),
            };
            queue.commit(job, result)
        })
    })
}

/// Runs `round` forever on a queue `make` creates, in a thread per queue;
/// says `ready` once every queue is made, and exits on the first error.
fn per_queue_thread<Q>(
    queues: u16,
    make: impl Fn(u16) -> m4npu::Result<Q> + Sync,
    round: impl Fn(&mut Q) -> m4npu::Result<()> + Sync,
) -> m4npu::Result<()> {
    let (ready_tx, ready) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        for id in 0..queues {
            let ready_tx = ready_tx.clone();
            let (make, round) = (&make, &round);
            s.spawn(move || {
                let mut queue = match make(id) {
                    Ok(q) => q,
                    Err(e) => return ready_tx.send(Err(e)).expect("main thread waits"),
                };
                ready_tx.send(Ok(())).expect("main thread waits");
                loop {
                    if let Err(e) = round(&mut queue) {
                        println!("error: {e}");
                        std::process::exit(1);
                    }
                }
            });
        }
        drop(ready_tx);
        for _ in 0..queues {
            if let Err(e) = ready.recv().expect("queue threads report") {
                println!("error: {e}");
                std::process::exit(1);
            }
        }
        println!("ready");
    });
    Ok(())
}

/// (Stall mode, released) serves `job` and says whose it was.
fn serve_one<'m>(queue: &mut HwQueue<'m>, job: HwJob<'m>) -> m4npu::Result<()> {
    println!("served {} {}", job.context_id(), job.raw().priority);
    finish(queue, job, Mode::Serve)
}

/// One thread polling every queue and stdin: jobs are held until `release`.
fn stall(dev: &HwDevice, queues: u16, depth: u16) -> m4npu::Result<()> {
    let mut qs = (0..queues).map(|id| dev.queue(id, depth)).collect::<m4npu::Result<Vec<_>>>()?;
    println!("ready");
    let mut held: Vec<HwJob<'_>> = Vec::new();
    let mut released = false;
    let mut stdin_open = true;
    let mut pending = Vec::new();
    loop {
        let mut fds: Vec<libc::pollfd> =
            qs.iter().map(|q| libc::pollfd { fd: q.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        if stdin_open {
            fds.push(libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: a valid array of pollfds.
        if unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) } < 0 {
            continue; // EINTR
        }
        let before = held.len();
        for q in qs.iter_mut() {
            // Failures come first, the jobs that arrived with them after.
            let jobs = loop {
                match q.try_fetch() {
                    Ok(jobs) => break jobs,
                    Err(e @ Error::HwCommand { .. }) => slot_failed(q, e, Mode::Stall)?,
                    Err(e) => return Err(e),
                }
            };
            if released {
                jobs.into_iter().try_for_each(|job| serve_one(q, job))?;
            } else {
                held.extend(jobs);
            }
            // The poll waits for completions only: commits and re-armed
            // FETCHes must reach the driver before it, or no job comes.
            q.flush()?;
        }
        if held.len() != before {
            println!("held {}", held.len());
        }
        if stdin_open && fds.last().is_some_and(|f| f.revents != 0) {
            let mut buf = [0u8; 256];
            // SAFETY: reading into a local buffer.
            let n = unsafe { libc::read(0, buf.as_mut_ptr().cast(), buf.len()) };
            if n <= 0 {
                stdin_open = false;
                continue;
            }
            pending.extend_from_slice(&buf[..n as usize]);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if line.trim_ascii() != b"release" {
                    println!("error: unknown command {:?}", String::from_utf8_lossy(&line));
                    continue;
                }
                let n = held.len();
                for job in held.drain(..) {
                    let q = &mut qs[job.queue() as usize];
                    serve_one(q, job)?;
                }
                for q in qs.iter_mut() {
                    q.flush()?;
                }
                released = true;
                println!("released {n}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_matches_the_device() {
        let input: Vec<u8> = (0..100u8).collect();
        for (op, with_state) in [(Op::Echo, false), (Op::Embed, false), (Op::Generate, true), (Op::Classify, false)] {
            let mut output = vec![0u8; 128];
            let mut state = 41u64.to_le_bytes().to_vec();
            let adapter = (op == Op::Classify).then_some(&uapi::ADAPTER_MAGIC[..]);
            let n = transform(op.raw(), &input, &mut output, with_state.then_some(&mut state[..]), adapter).unwrap();
            assert_eq!(n, 100);
            assert_eq!(output[..n], expected(op, &input, with_state.then_some(41))[..], "{op:?}");
            assert!(output[n..].iter().all(|&b| b == 0), "{op:?} wrote past its result");
        }
    }

    #[test]
    fn state_counts_and_inputs_are_checked() {
        let mut state = [0u8; 8];
        let mut out = [0u8; 4];
        for _ in 0..3 {
            transform(uapi::JOB_OP_GENERATE, b"abcd", &mut out, Some(&mut state), None).unwrap();
        }
        assert_eq!(u64::from_le_bytes(state), 3);
        assert_eq!(transform(uapi::JOB_OP_GENERATE, b"a", &mut out, Some(&mut [0u8; 4]), None), Err(Errno::EINVAL));
        assert_eq!(transform(uapi::JOB_OP_CLASSIFY, b"a", &mut out, None, Some(b"not an adapter")), Err(Errno::EBADMSG));
        assert_eq!(transform(uapi::JOB_OP_ECHO, b"abcdef", &mut out, None, None), Ok(4));
        assert_eq!(&out, b"abcd");
    }

    #[test]
    fn modes_parse() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(parse(&args(&["stall", "16", "64"])), Some((Mode::Stall, 16, 64, HwFlags::empty())));
        assert_eq!(parse(&args(&["errno=71", "1", "4"])), Some((Mode::Errno(Errno::EPROTO), 1, 4, HwFlags::empty())));
        assert_eq!(parse(&args(&["serve", "1", "4", "recover"])), Some((Mode::Serve, 1, 4, HwFlags::RECOVERY)));
        assert_eq!(parse(&args(&["serve", "1", "4", "bogus"])), None);
        assert_eq!(parse(&args(&["serve", "1"])), None);
        assert_eq!(parse(&args(&["bogus", "1", "1"])), None);
    }
}
