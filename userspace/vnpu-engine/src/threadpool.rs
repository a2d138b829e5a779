//! Small persistent thread pool for fork-join over matmul row chunks.
//!
//! Why not rayon: a decode step issues ~250 parallel regions of a few
//! microseconds each; a pool whose workers spin briefly on an epoch counter
//! before sleeping hands work out in well under a microsecond and never
//! allocates per job, which matters at 2 cores. The caller thread takes part
//! in every job, so `threads == 1` runs inline with no workers at all.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

type JobFn = dyn Fn(usize) + Sync;

#[derive(Clone, Copy)]
struct JobPtr(*const JobFn);
// Safety: the pointee is Sync and outlives every worker access (see `run`).
unsafe impl Send for JobPtr {}

struct Shared {
    epoch: AtomicUsize,
    job: Mutex<Option<JobPtr>>,
    n_tasks: AtomicUsize,
    next: AtomicUsize,
    active: AtomicUsize,
    sleepers: AtomicUsize,
    panicked: AtomicBool,
    shutdown: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    // Serializes jobs from different caller threads.
    run_lock: Mutex<()>,
}

// Idle workers spin briefly (a decode step issues jobs microseconds apart),
// then yield (cheap when cores are shared with other load), then sleep.
const SPIN_ITERS: usize = 2_000;
const YIELD_ITERS: usize = 2_000;

impl ThreadPool {
    /// `threads` = total threads including the caller (min 1).
    pub fn new(threads: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: Mutex::new(None),
            n_tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            active: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            lock: Mutex::new(()),
            cv: Condvar::new(),
        });
        let workers = (1..threads.max(1))
            .filter_map(|i| {
                let s = shared.clone();
                std::thread::Builder::new()
                    .name(format!("vnpu-{i}"))
                    .spawn(move || worker(s))
                    .ok()
            })
            .collect();
        ThreadPool {
            shared,
            workers,
            run_lock: Mutex::new(()),
        }
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f(i)` for every `i < n_tasks` across the pool; returns when all are done.
    pub fn run(&self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        if n_tasks == 0 {
            return;
        }
        if self.workers.is_empty() || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        let _g = self.run_lock.lock().unwrap_or_else(|e| e.into_inner());
        let s = &*self.shared;
        // Erase the lifetime: workers only dereference it between the epoch
        // bump below and their `active` decrement, and we wait for all of
        // those before returning, so `f` outlives every use.
        let f_static: &'static JobFn =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static JobFn>(f) };
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobPtr(f_static));
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.active.store(self.workers.len(), Ordering::Relaxed);
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
        let res = catch_unwind(AssertUnwindSafe(|| drain(s, f)));
        // A worker descheduled mid-task (other load on the machine) would
        // make a pure spin burn our own time slice: yield after a while.
        let mut spins = 0u32;
        while s.active.load(Ordering::Acquire) != 0 {
            spins += 1;
            if spins < 1000 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if res.is_err() || s.panicked.swap(false, Ordering::SeqCst) {
            panic!("vnpu thread pool: a task panicked");
        }
    }
}

fn drain(s: &Shared, f: &(dyn Fn(usize) + Sync + '_)) {
    let n = s.n_tasks.load(Ordering::Relaxed);
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    }
}

fn worker(s: Arc<Shared>) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            spins += 1;
            if spins < SPIN_ITERS {
                std::hint::spin_loop();
                continue;
            }
            if spins < SPIN_ITERS + YIELD_ITERS {
                std::thread::yield_now();
                continue;
            }
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            let g = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            if s.epoch.load(Ordering::SeqCst) == seen && !s.shutdown.load(Ordering::SeqCst) {
                drop(s.cv.wait(g).unwrap_or_else(|e| e.into_inner()));
            } else {
                drop(g);
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
            spins = 0;
        }
        let job = *s.job.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(JobPtr(f)) = job {
            let ok = catch_unwind(AssertUnwindSafe(|| drain(&s, unsafe { &*f }))).is_ok();
            if !ok {
                s.panicked.store(true, Ordering::SeqCst);
            }
        }
        s.active.fetch_sub(1, Ordering::Release);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        {
            let _l = self.shared.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.cv.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_every_task_once() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool::new(threads);
            for n in [0usize, 1, 5, 100] {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn survives_sleep_and_wake() {
        let pool = ThreadPool::new(2);
        let c = AtomicUsize::new(0);
        for _ in 0..3 {
            std::thread::sleep(std::time::Duration::from_millis(30));
            pool.run(4, &|_| {
                c.fetch_add(1, Ordering::Relaxed);
            });
        }
        assert_eq!(c.load(Ordering::Relaxed), 12);
    }
}
