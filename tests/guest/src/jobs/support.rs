//! What the job tests share: the play device as a child process, debugfs,
//! input patterns and errno checks.

use anyhow::{bail, ensure, Context, Result};
use m4npu::{Errno, Error};

use crate::children::Helper;

pub const DEBUGFS_STATE: &str = "/sys/kernel/debug/m4npu/state";

pub fn debugfs_state() -> Result<String> {
    std::fs::read_to_string(DEBUGFS_STATE).context("reading debugfs state")
}

/// The `context ID:` line of debugfs, if the context is listed.
pub fn debugfs_context(id: u64) -> Result<Option<String>> {
    let prefix = format!("context {id}:");
    Ok(debugfs_state()?.lines().find(|l| l.starts_with(&prefix)).map(str::to_string))
}

/// Open contexts, as debugfs lists them (a `context ID:` line each).
pub fn open_contexts() -> Result<usize> {
    Ok(debugfs_state()?.lines().filter(|l| l.starts_with("context ")).count())
}

/// The device as debugfs shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceState {
    Attached,
    /// Gone, and its jobs wait for the next device.
    Recovering,
    None,
}

pub fn device_state() -> Result<DeviceState> {
    let state = debugfs_state()?;
    match state.lines().find_map(|l| l.strip_prefix("device:\t")) {
        Some("attached") => Ok(DeviceState::Attached),
        Some("none") => Ok(DeviceState::None),
        Some(l) if l.starts_with("recovering (") => Ok(DeviceState::Recovering),
        other => bail!("debugfs device line is {other:?}:\n{state}"),
    }
}

pub fn device_attached() -> Result<bool> {
    Ok(device_state()? == DeviceState::Attached)
}

pub fn pool_used() -> Result<u64> {
    Ok(m4npu::Device::open()?.info()?.pool_used)
}

/// The play device (see `play_device.rs`) in a child process.
pub struct PlayDevice {
    helper: Helper,
    /// Killed and detached already.
    stopped: bool,
}

impl PlayDevice {
    /// Starts a device with `queues` queues of `depth` slots; returns once
    /// every slot waits for a job.
    pub fn start(mode: &str, queues: u16, depth: u16) -> Result<Self> {
        Self::start_with(mode, queues, depth, &[])
    }

    /// As [`PlayDevice::start`], with the play device's further arguments
    /// (`recover`).
    pub fn start_with(mode: &str, queues: u16, depth: u16, more: &[&str]) -> Result<Self> {
        let (q, d) = (queues.to_string(), depth.to_string());
        let mut args = vec!["--play-device", mode, &q, &d];
        args.extend_from_slice(more);
        let mut helper = Helper::spawn(&args)?;
        helper.expect("ready", |l| match l {
            "ready" => Some(Ok(())),
            l if l.starts_with("error:") => Some(Err(anyhow::anyhow!("play device {mode}: {l}"))),
            _ => None,
        })??;
        Ok(Self { helper, stopped: false })
    }

    /// (Stall mode) waits until the device holds at least `n` jobs.
    pub fn wait_held(&mut self, n: usize) -> Result<()> {
        self.helper.expect(&format!("held {n}"), |l| {
            l.strip_prefix("held ").and_then(|v| v.parse::<usize>().ok()).filter(|&h| h >= n).map(drop)
        })
    }

    /// (Stall mode) commits every held job; returns how many there were.
    pub fn release(&mut self) -> Result<usize> {
        self.helper.send("release")?;
        self.helper.expect("released", |l| l.strip_prefix("released ").and_then(|v| v.parse().ok()))
    }

    /// (Stall mode, released) the next job served: its context and priority.
    pub fn next_served(&mut self) -> Result<(u64, u8)> {
        self.helper.expect("a served job", |l| {
            let mut w = l.strip_prefix("served ")?.split(' ');
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
    }

    /// What the device reported as unexpected.
    pub fn errors(&self) -> Vec<String> {
        self.helper.log().into_iter().filter(|l| l.starts_with("error:")).collect()
    }

    /// Kills the device (SIGKILL, as a crash would) and waits for its exit.
    /// The driver lets it go as its file table is closed, before the exit
    /// completes, although its io_uring holds the file until a kernel
    /// worker tears the ring down later.
    pub fn kill(mut self) -> Result<()> {
        self.stopped = true;
        self.helper.kill()?;
        ensure!(!device_attached()?, "the killed device is still attached once its process is gone");
        Ok(())
    }

    /// Kills the device without looking at the node after it: for tests in
    /// which other processes may attach there at any moment.
    pub fn crash(mut self) -> Result<()> {
        self.stopped = true;
        self.helper.kill().map(drop)
    }

    /// As [`PlayDevice::kill`], failing if the device reported errors.
    pub fn stop(self) -> Result<()> {
        let errors = self.errors();
        self.kill()?;
        ensure!(errors.is_empty(), "the play device reported: {errors:?}");
        Ok(())
    }
}

impl Drop for PlayDevice {
    fn drop(&mut self) {
        // A failed test still leaves the next one a free device node.
        if !self.stopped {
            let _ = self.helper.kill();
        }
    }
}

/// Deterministic bytes, distinct for every `(seed, i)`: the first eight
/// bytes name the pair, the rest is xorshift noise seeded by it.
pub fn pattern(seed: u32, i: u32, out: &mut [u8]) {
    let mut x = (seed as u64) << 32 | i as u64 | 1;
    for (k, b) in out.iter_mut().enumerate() {
        *b = match k {
            0..4 => seed.to_le_bytes()[k],
            4..8 => i.to_le_bytes()[k - 4],
            _ => {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            }
        };
    }
}

/// `got` must be the library error for errno `want`.
pub fn expect_errno(what: &str, got: m4npu::Result<usize>, want: Errno) -> Result<()> {
    match got {
        Err(e) if e.errno() == Some(want) => Ok(()),
        Err(e) => bail!("{what}: got {e} ({:?}), want {want}", e.errno()),
        Ok(n) => bail!("{what}: succeeded with {n} bytes, want {want}"),
    }
}

/// The library's words for a job error, checked where they matter.
pub fn expect_message(e: &Error, words: &str) -> Result<()> {
    ensure!(e.to_string().contains(words), "message {:?} lacks {words:?}", e.to_string());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn patterns_differ_per_job() {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..4 {
            for i in 0..250 {
                let mut b = [0u8; 64];
                pattern(seed, i, &mut b);
                assert!(seen.insert(b), "pattern ({seed}, {i}) repeats");
            }
        }
    }
}
