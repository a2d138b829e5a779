//! vnpud: the m4npu virtual NPU.
//!
//! Opens the device side of the driver (`/dev/m4npu-hw`), builds the
//! foundation model's sub-models over the firmware region of NPU memory
//! (no copy of the weights), and serves jobs: fetch, run with the engine on
//! the job's buffers in NPU memory, commit. A bad job gets an errno; SIGTERM
//! or SIGINT ends the daemon after the jobs at hand are committed.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::process::ExitCode;

use clap::Parser;
use m4npu::hw::{HwDevice, HwFlags};
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
    /// Slots of the device queue: jobs the driver may hand over at once.
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
}

fn main() -> ExitCode {
    let args = Args::parse();
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
    let mut queue = dev.queue(0, args.depth).map_err(|e| e.to_string())?;
    let mut adapters = AdapterCache::new();
    let names: Vec<&str> = subs.iter().map(|s| s.name).collect();
    // The line test harnesses wait for: every slot is waiting for a job.
    println!("vnpud: ready: {} bytes of NPU memory, sub-models [{}], {} slots", dev.memory().len(), names.join(", "), args.depth);
    if let Some(mut ready) = ready {
        std::io::Write::write_all(&mut ready, b"ready\n").map_err(|e| format!("reporting readiness: {e}"))?;
    }

    loop {
        // Jobs first: some may have come while the queue was made, or with
        // the last flush, and the ring's fd will not wake for those.
        let jobs = queue.try_fetch().map_err(|e| e.to_string())?;
        let busy = !jobs.is_empty();
        if busy {
            adapters.sweep(dev.memory());
        }
        for mut job in jobs {
            let (id, op) = (job.id(), job.op());
            let adapter = match job.raw().adapter {
                r if r.len == 0 => Ok(None),
                r => dev.memory().read(r).map_err(|_| nix::errno::Errno::EIO).and_then(|blob| adapters.get(blob, r.addr, &model).map(Some)),
            };
            let result = match (adapter, job.buffers()) {
                (Ok(a), Ok(b)) => execute::run_with(&model, op, b, a),
                (Err(e), _) => Err(e),
                (_, Err(e)) => {
                    eprintln!("vnpud: job {id}: {e}");
                    Err(nix::errno::Errno::EIO)
                }
            };
            if args.verbose {
                println!("vnpud: job {id} ({op:?}) of context {}: {result:?}", job.context_id());
            }
            queue.commit(job, result).map_err(|e| e.to_string())?;
        }
        queue.flush().map_err(|e| e.to_string())?;
        // SAFETY: the ring's fd stays open across the poll (the queue lives on).
        let ring = unsafe { BorrowedFd::borrow_raw(queue.as_raw_fd()) };
        let mut fds = [PollFd::new(ring, PollFlags::POLLIN), PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        // Busy: only a look at the signals before the next round.
        let timeout = if busy { PollTimeout::ZERO } else { PollTimeout::NONE };
        match poll(&mut fds, timeout) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(format!("poll: {e}")),
        }
        if fds[1].any().unwrap_or(false) {
            println!("vnpud: signal received, stopping");
            // A clean stop: nothing waits for a successor.
            dev.set_flags(HwFlags::empty()).map_err(|e| e.to_string())?;
            return Ok(());
        }
    }
}
