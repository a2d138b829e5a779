//! vnpud: the m4npu virtual NPU.
//!
//! Opens the device side of the driver (`/dev/m4npu-hw`), builds the
//! foundation model's sub-models over the firmware region of NPU memory
//! (no copy of the weights), and serves jobs: fetch, run with the engine on
//! the job's buffers in NPU memory, commit. Jobs come and go in batches
//! (FETCH_BATCH / COMMIT_BATCH) and run in rounds of one job per context
//! (`rounds`: apps waiting on each result first, and waited for a little);
//! the generation steps of a round's apps run through the backbone
//! together, and their embeddings and classifications through their
//! sub-model (`execute::*_batch_jobs`).
//! A bad job gets an errno; SIGTERM or SIGINT ends the daemon after the jobs
//! at hand are committed.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use m4npu::Op;
use m4npu_hw::{HwBatchQueue, HwDevice, HwFlags, HwJob};
use nix::errno::Errno;
use vnpud::rounds::Rounds;
use vnpud::{adapter_cache::AdapterCache, execute, foundation};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;

#[derive(Parser)]
#[command(version, about = "The m4npu virtual NPU: serves jobs from /dev/m4npu-hw")]
struct Args {
    /// Device side of the driver.
    #[arg(long, default_value = "/dev/m4npu-hw")]
    device: std::path::PathBuf,
    /// Jobs the device holds at once (the driver hands them over in batches).
    #[arg(long, default_value_t = 8)]
    depth: u16,
    /// Print a line per job.
    #[arg(long, short)]
    verbose: bool,
    /// Return once ready, serving on in the background (as a forking
    /// daemon: the exit status says whether the device came up).
    #[arg(long)]
    background: bool,
    /// Do not ask the driver to keep this device's jobs for a successor
    /// if it dies: they fail with EIO at once.
    #[arg(long)]
    no_recovery: bool,
    /// Print the man page (roff) and exit, for packagers.
    #[arg(long, hide = true)]
    manpage: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.manpage {
        let man = clap_mangen::Man::new(<Args as clap::CommandFactory>::command()).section("8");
        return match man.render(&mut std::io::stdout()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vnpud: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if args.background {
        return background(&args);
    }
    match serve(&args, None) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vnpud: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Forks; the child serves and reports readiness through a pipe, which the
/// parent waits for. The fork comes first: io_uring and the device file
/// belong to the child alone.
fn background(args: &Args) -> ExitCode {
    let (rx, tx) = match nix::unistd::pipe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("vnpud: pipe: {e}");
            return ExitCode::FAILURE;
        }
    };
    // SAFETY: single-threaded so far; the child only continues as vnpud.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop(rx);
            match serve(args, Some(std::fs::File::from(tx))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vnpud: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Ok(nix::unistd::ForkResult::Parent { .. }) => {
            drop(tx);
            let mut line = String::new();
            let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(std::fs::File::from(rx)), &mut line);
            if line.starts_with("ready") {
                ExitCode::SUCCESS
            } else {
                eprintln!("vnpud: the device did not come up");
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vnpud: fork: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: &Args, ready: Option<std::fs::File>) -> Result<(), String> {
    // Signals arrive through a file descriptor, polled with the queue.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().map_err(|e| format!("blocking signals: {e}"))?;
    let signals = SignalFd::new(&mask).map_err(|e| format!("signalfd: {e}"))?;

    let dev = HwDevice::open_path(&args.device).map_err(|e| e.to_string())?;
    if !args.no_recovery {
        dev.set_flags(HwFlags::RECOVERY).map_err(|e| e.to_string())?;
    }
    let subs = foundation::sub_models(dev.memory().model())?;
    let model = foundation::Foundation::build(&subs)?;
    // Batches: one command brings every job waiting, one returns the results.
    let mut queue = dev.batch_queue(0, args.depth).map_err(|e| e.to_string())?;
    let mut adapters = AdapterCache::new();
    let names: Vec<&str> = subs.iter().map(|s| s.name).collect();
    // The line test harnesses wait for: every slot is waiting for a job.
    println!("vnpud: ready: {} bytes of NPU memory, sub-models [{}], {} slots", dev.memory().len(), names.join(", "), args.depth);
    if let Some(mut ready) = ready {
        std::io::Write::write_all(&mut ready, b"ready\n").map_err(|e| format!("reporting readiness: {e}"))?;
    }
    // Under systemd (Type=notify): the service is up.
    sd_notify("READY=1").map_err(|e| format!("reporting readiness to systemd: {e}"))?;

    // Jobs fetched and not yet run, in the order the driver dispatched them.
    let mut held: Vec<HwJob<'_>> = Vec::new();
    let mut rounds = Rounds::default();
    let mut stopping = false;
    loop {
        // Jobs first: some may have come while the queue was made, or with
        // the last flush, and the ring's fd will not wake for those.
        if !stopping {
            fetch(&mut queue, &mut held, &mut rounds)?;
            gather_sessions(&mut queue, &mut held, &mut rounds, args.depth)?;
        }
        let round = rounds.take(&mut held);
        let busy = !round.is_empty();
        if busy {
            let start = Instant::now();
            adapters.sweep(dev.memory());
            // Apps waiting on nothing else get their results first.
            let waiting: Vec<u64> = round.waiting.iter().map(HwJob::context_id).collect();
            run_round(&mut queue, &dev, &model, &mut adapters, &mut rounds, round.waiting, args.verbose)?;
            queue.flush().map_err(|e| e.to_string())?;
            run_round(&mut queue, &dev, &model, &mut adapters, &mut rounds, round.backlogged, args.verbose)?;
            rounds.ran(start.elapsed());
            // Think time counts from here, where a wait would begin: a job
            // that came back during the backlog's part counts as at once.
            rounds.answered(waiting, Instant::now());
        }
        // The round's last results, and the fetch readied again.
        queue.flush().map_err(|e| e.to_string())?;
        if stopping {
            if held.is_empty() {
                println!("vnpud: served {}", rounds.stats);
                return Ok(());
            }
            continue;
        }
        let mut fds = [PollFd::new(ring_fd(&queue), PollFlags::POLLIN), PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        // Work at hand: only a look at the signals before the next round.
        let timeout = if busy || !held.is_empty() { PollTimeout::ZERO } else { PollTimeout::NONE };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        if fds[1].any().unwrap_or(false) {
            println!("vnpud: signal received, stopping");
            // Best effort: systemd stops the service either way.
            let _ = sd_notify("STOPPING=1");
            // A clean stop: the jobs at hand are run, nothing waits for a
            // successor.
            dev.set_flags(HwFlags::empty()).map_err(|e| e.to_string())?;
            stopping = true;
        }
    }
}

/// Tells the service manager `state` (sd_notify(3)'s protocol: a datagram
/// to the socket named by `$NOTIFY_SOCKET`, a path or `@` for an abstract
/// name); nothing to do outside systemd.
fn sd_notify(state: &str) -> std::io::Result<()> {
    sd_notify_to(std::env::var_os("NOTIFY_SOCKET").as_deref(), state)
}

fn sd_notify_to(socket: Option<&std::ffi::OsStr>, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = socket else { return Ok(()) };
    let addr = match path.as_encoded_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(path)?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr)?;
    Ok(())
}

fn ring_fd<'q>(queue: &'q HwBatchQueue<'_>) -> BorrowedFd<'q> {
    // SAFETY: the ring's fd is open while the queue lives, as long as the
    // borrow.
    unsafe { BorrowedFd::borrow_raw(queue.as_raw_fd()) }
}

/// Adds the jobs at hand to `held`, noting when they came.
fn fetch<'m>(queue: &mut HwBatchQueue<'m>, held: &mut Vec<HwJob<'m>>, rounds: &mut Rounds) -> Result<(), String> {
    let jobs = queue.try_fetch().map_err(|e| e.to_string())?;
    rounds.arrived(jobs.iter().map(HwJob::context_id), Instant::now());
    held.extend(jobs);
    Ok(())
}

/// Waits a little for recent synchronous contexts whose next job is not
/// held yet (see `rounds`), unless every slot is taken.
fn gather_sessions<'m>(queue: &mut HwBatchQueue<'m>, held: &mut Vec<HwJob<'m>>, rounds: &mut Rounds, depth: u16) -> Result<(), String> {
    let start = Instant::now();
    let mut waited = false;
    while held.len() < usize::from(depth) {
        let Some(left) = rounds.wait_for_sessions(held, start.elapsed()) else { break };
        waited = true;
        let ms = u16::try_from(left.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(ring_fd(queue), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        fetch(queue, held, rounds)?;
    }
    if waited {
        rounds.waited(start.elapsed());
    }
    Ok(())
}

/// Runs jobs of a round, batched where they can be, and commits them.
fn run_round<'m>(
    queue: &mut HwBatchQueue<'m>,
    dev: &'m HwDevice,
    model: &foundation::Foundation<'_>,
    adapters: &mut AdapterCache<'m>,
    rounds: &mut Rounds,
    jobs: Vec<HwJob<'m>>,
    verbose: bool,
) -> Result<(), String> {
    // Generation steps of different apps run as one batch, and so do
    // the pooled vectors of EMBED and CLASSIFY; the rest one by one.
    let (gen, rest): (Vec<_>, Vec<_>) = jobs.into_iter().partition(|j| j.op() == Some(Op::Generate));
    let (pooled, rest): (Vec<_>, Vec<_>) = rest.into_iter().partition(|j| matches!(j.op(), Some(Op::Embed | Op::Classify)));
    let mut single = rest;
    let mut batches = Vec::new();
    for (kind, group) in [(Batch::Generate, gen), (Batch::Pooled, pooled)] {
        if group.len() > 1 && disjoint(&group) {
            batches.push((kind, group));
        } else {
            single.extend(group);
        }
    }
    for mut job in single {
        let (id, op) = (job.id(), job.op());
        let adapter = match job.raw().adapter {
            r if r.len == 0 => Ok(None),
            r => dev.memory().read(r).map_err(|_| Errno::EIO).and_then(|blob| adapters.get(blob, r.addr, model).map(Some)),
        };
        let result = match (adapter, job.buffers()) {
            (Ok(a), Ok(b)) => execute::run_job(model, id, op, b, a),
            (Err(e), _) => Err(e),
            (_, Err(e)) => {
                eprintln!("vnpud: job {id}: {e}");
                Err(Errno::EIO)
            }
        };
        if verbose {
            println!("vnpud: job {id} ({op:?}) of context {}: {result:?}", job.context_id());
        }
        rounds.stats.ran(op, 1);
        queue.commit(job, result).map_err(|e| e.to_string())?;
    }
    for (kind, mut jobs) in batches {
        let ran = run_batch(kind, dev, model, adapters, &mut jobs, verbose);
        rounds.stats.ran(ran.first().and_then(|(j, _)| j.op()), ran.len());
        for (job, result) in ran {
            queue.commit(job, result).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// Whether no job's buffers overlap another job's writable ones (each
/// job's own were checked when its buffers were taken): only then may
/// their buffers be borrowed together.
fn disjoint(jobs: &[HwJob<'_>]) -> bool {
    let ranges = |j: &HwJob<'_>| {
        let r = j.raw();
        [r.input, r.output, r.state, r.adapter].into_iter().filter(|r| r.len > 0).collect::<Vec<_>>()
    };
    let writable = |j: &HwJob<'_>| [j.raw().output, j.raw().state].into_iter().filter(|r| r.len > 0).collect::<Vec<_>>();
    let overlap = |a: &m4npu::uapi::HwRange, b: &m4npu::uapi::HwRange| a.addr < b.addr + b.len && b.addr < a.addr + a.len;
    jobs.iter().enumerate().all(|(i, a)| {
        jobs.iter().skip(i + 1).all(|b| {
            writable(a).iter().all(|w| ranges(b).iter().all(|r| !overlap(w, r)))
                && writable(b).iter().all(|w| ranges(a).iter().all(|r| !overlap(w, r)))
        })
    })
}

/// What a batch of several apps' jobs runs through.
#[derive(Clone, Copy, Debug)]
enum Batch {
    /// The backbone, one decode step per app (`execute::generate_batch_jobs`).
    Generate,
    /// A pooled vector per job, through the text encoder or the backbone
    /// (`execute::pooled_batch_jobs`).
    Pooled,
}

/// Jobs of many apps run together as `kind`; each job with its result.
fn run_batch<'m>(
    kind: Batch,
    dev: &'m HwDevice,
    model: &foundation::Foundation<'_>,
    adapters: &mut AdapterCache<'m>,
    jobs: &mut Vec<HwJob<'m>>,
    verbose: bool,
) -> Vec<(HwJob<'m>, Result<usize, Errno>)> {
    // Adapters parsed first, so that the batch can borrow them together.
    let loaded: Vec<Result<(), Errno>> = jobs
        .iter()
        .map(|j| match j.raw().adapter {
            r if r.len == 0 => Ok(()),
            r => dev.memory().read(r).map_err(|_| Errno::EIO).and_then(|blob| adapters.load(blob, r.addr, model)),
        })
        .collect();
    let mut results: Vec<Option<Result<usize, Errno>>> = vec![None; jobs.len()];
    {
        let adapters = &*adapters;
        let mut batch = Vec::new();
        let mut index = Vec::new();
        for (i, (job, loaded)) in jobs.iter_mut().zip(&loaded).enumerate() {
            let r = job.raw().adapter;
            let adapter = match (loaded, r.len) {
                (Err(e), _) => {
                    results[i] = Some(Err(*e));
                    continue;
                }
                (Ok(()), 0) => None,
                (Ok(()), _) => dev.memory().read(r).ok().and_then(|blob| adapters.cached(blob, r.addr)),
            };
            let (id, op) = (job.id(), job.op());
            match job.buffers() {
                Ok(b) => {
                    batch.push((op, b, adapter, id));
                    index.push(i);
                }
                Err(e) => {
                    eprintln!("vnpud: job {id}: {e}");
                    results[i] = Some(Err(Errno::EIO));
                }
            }
        }
        let done = match kind {
            Batch::Generate => execute::generate_batch_jobs(model, batch.into_iter().map(|(_, b, a, id)| (b, a, id)).collect()),
            Batch::Pooled => execute::pooled_batch_jobs(model, batch),
        };
        for (i, r) in index.into_iter().zip(done) {
            results[i] = Some(r);
        }
    }
    if verbose {
        let what = match kind {
            Batch::Generate => "generation steps",
            Batch::Pooled => "pooled jobs",
        };
        println!("vnpud: {} {what} in one batch", jobs.len());
    }
    jobs.drain(..).zip(results).map(|(j, r)| (j, r.unwrap_or(Err(Errno::EIO)))).collect()
}

#[cfg(test)]
mod tests {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};

    use super::sd_notify_to;

    fn received(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 64];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sd_notify_reaches_a_path_socket_and_an_abstract_one() {
        let path = std::env::temp_dir().join(format!("vnpud-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        sd_notify_to(Some(path.as_os_str()), "READY=1").unwrap();
        assert_eq!(received(&socket), "READY=1");
        std::fs::remove_file(&path).unwrap();

        let name = format!("vnpud-notify-test-{}", std::process::id());
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        sd_notify_to(Some(std::ffi::OsStr::new(&format!("@{name}"))), "STOPPING=1").unwrap();
        assert_eq!(received(&socket), "STOPPING=1");
    }

    #[test]
    fn sd_notify_outside_systemd_does_nothing() {
        sd_notify_to(None, "READY=1").unwrap();
    }
}
