//! Helper processes: this binary in a helper mode, talking line by line over
//! its stdin and stdout. Every wait has a deadline, so a hang fails the test
//! that met it (with what the helper said so far) instead of the whole run.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long any single wait may take before the test calls it a hang. Long:
/// the guest runs a KASAN kernel under TCG.
pub const HANG: Duration = Duration::from_secs(90);

pub struct Helper {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Everything the helper printed, for diagnostics and error scans.
    log: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

impl Helper {
    /// Starts `/proc/self/exe ARGS` (stderr goes to the console).
    pub fn spawn(args: &[&str]) -> Result<Self> {
        Self::spawn_program("/proc/self/exe", args)
    }

    /// Starts `program ARGS`, talking to it as to a helper.
    pub fn spawn_program(program: &str, args: &[&str]) -> Result<Self> {
        let name = std::iter::once(program).chain(args.iter().copied()).collect::<Vec<_>>().join(" ");
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting helper {name}"))?;
        let stdout = child.stdout.take().context("helper stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(std::io::Result::ok) {
                sink.lock().expect("log lock").push(line.clone());
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { name, stdin: child.stdin.take(), child, lines, log, status: None })
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Writes one line to the helper's stdin.
    pub fn send(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("helper stdin closed")?;
        writeln!(stdin, "{line}").and_then(|()| stdin.flush()).with_context(|| format!("telling {} {line:?}", self.name))
    }

    /// Reads lines until `pick` accepts one (skipping the others), within [`HANG`].
    pub fn expect<T>(&mut self, what: &str, mut pick: impl FnMut(&str) -> Option<T>) -> Result<T> {
        let deadline = Instant::now() + HANG;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = pick(&line) {
                        return Ok(v);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!("{}: no {what} within {} s; it said: {:?}", self.name, HANG.as_secs(), self.log())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.wait().map(|s| s.to_string()).unwrap_or_else(|e| format!("{e:#}"));
                    bail!("{}: ended ({status}) before {what}; it said: {:?}", self.name, self.log())
                }
            }
        }
    }

    /// Waits for the line `want` exactly.
    pub fn expect_line(&mut self, want: &str) -> Result<()> {
        self.expect(&format!("{want:?}"), |l| (l == want).then_some(()))
    }

    /// Everything printed so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    pub fn signal(&self, sig: i32) -> Result<()> {
        if self.status.is_some() {
            bail!("{} already exited", self.name);
        }
        // SAFETY: kill() on our own child, not yet reaped.
        if unsafe { libc::kill(self.pid(), sig) } != 0 {
            bail!("kill({}, {sig}): {}", self.pid(), std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the helper to exit, within [`HANG`].
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        wait_exit(self.pid(), HANG).with_context(|| format!("helper {}", self.name))?;
        let s = self.child.wait()?;
        self.status = Some(s);
        Ok(s)
    }

    /// SIGKILL, then waits for the exit.
    pub fn kill(&mut self) -> Result<ExitStatus> {
        if self.status.is_none() {
            self.signal(libc::SIGKILL)?;
        }
        self.wait()
    }

    /// Closes the helper's stdin (end of its commands) and waits for a
    /// successful exit.
    pub fn finish(&mut self) -> Result<()> {
        self.stdin = None;
        let s = self.wait()?;
        if !s.success() {
            bail!("helper {} failed ({s}); it said: {:?}", self.name, self.log());
        }
        Ok(())
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        if self.status.is_none() {
            // SAFETY: kill() on our own child, not yet reaped.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Waits until process `pid` (a child of ours) has exited, without reaping it.
pub fn wait_exit(pid: i32, timeout: Duration) -> Result<()> {
    // SAFETY: pidfd_open(pid, 0) has no memory arguments.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        bail!("pidfd_open({pid}): {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let mut p = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now()).as_millis() as i32;
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut p, 1, left) } {
            1 => return Ok(()),
            0 => bail!("process {pid} did not exit within {} s (stuck in the kernel?)", timeout.as_secs()),
            _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) => continue,
            _ => bail!("poll on pidfd: {}", std::io::Error::last_os_error()),
        }
    }
}

/// Waits until `cond` holds, within [`HANG`], re-checking it as fast as the
/// CPU allows. Only for state the kernel changes in its own workers (such as
/// an io_uring torn down after its process died), which offers no event to
/// wait on; `cond` describes what it saw when it fails.
pub fn eventually(what: &str, mut cond: impl FnMut() -> Result<std::result::Result<(), String>>) -> Result<()> {
    let deadline = Instant::now() + HANG;
    loop {
        match cond()? {
            Ok(()) => return Ok(()),
            Err(seen) if Instant::now() > deadline => bail!("{what}: still not the case after {} s: {seen}", HANG.as_secs()),
            Err(_) => std::thread::yield_now(),
        }
    }
}
