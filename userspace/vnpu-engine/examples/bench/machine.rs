//! What the machine is and how busy it is: load average, CPU model, thread
//! CPU time, and its sustained memory read bandwidth (the ceiling of a
//! memory-bound decode step).

use std::time::Instant;

/// The 1/5/15-minute load averages.
pub fn loadavg() -> Option<[f64; 3]> {
    let s = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut it = s.split_whitespace().map(|v| v.parse::<f64>().ok());
    Some([it.next()??, it.next()??, it.next()??])
}

pub fn loadavg_text(l: Option<[f64; 3]>) -> String {
    l.map_or("?".into(), |l| {
        format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
    })
}

pub fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

pub fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// A buffer far larger than any cache, read end to end by `threads`
/// threads (each its own contiguous part).
pub struct ReadProbe {
    buf: Vec<u64>,
    threads: usize,
}

impl ReadProbe {
    pub fn new(threads: usize) -> ReadProbe {
        // 512 MiB, written once so every page is backed.
        let buf: Vec<u64> = (0..64u64 << 20).collect();
        ReadProbe { buf, threads }
    }

    /// One pass; bytes per second.
    pub fn sample(&self) -> f64 {
        let part = self.buf.len().div_ceil(self.threads);
        let t = Instant::now();
        let sum: u64 = std::thread::scope(|s| {
            let hs: Vec<_> = self
                .buf
                .chunks(part)
                .map(|c| s.spawn(move || read_sum(c)))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        std::hint::black_box(sum);
        (self.buf.len() * 8) as f64 / t.elapsed().as_secs_f64()
    }
}

/// Sum with 8 independent lanes, so loads, not the add chain, bound it.
fn read_sum(c: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for ch in c.chunks_exact(8) {
        for (a, v) in acc.iter_mut().zip(ch) {
            *a = a.wrapping_add(*v);
        }
    }
    acc.iter().fold(0, |a, b| a.wrapping_add(*b))
}
