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
// SAFETY: the pointee is Sync and outlives every worker access (see `run`).
unsafe impl Send for JobPtr {}

struct Shared {
    epoch: AtomicUsize,
    /// The current job; workers take the pointer only under this lock and
    /// only after joining `active`, so `run` (which clears it under the
    /// lock, then waits for `active == 0`) never returns while one holds it.
    job: Mutex<Option<JobPtr>>,
    n_tasks: AtomicUsize,
    next: AtomicUsize,
    /// Tasks finished (the caller's completion condition).
    done: AtomicUsize,
    /// Workers currently holding the job pointer.
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

// Idle workers spin for a while (a decode step issues jobs microseconds
// apart, and a worker that yields its core between them may not get it back
// for a whole time slice when other jobs load the machine), then yield,
// then sleep.
const SPIN_TIME: std::time::Duration = std::time::Duration::from_micros(300);
const YIELD_TIME: std::time::Duration = std::time::Duration::from_millis(3);

impl ThreadPool {
    /// `threads` = total threads including the caller (min 1).
    pub fn new(threads: usize) -> ThreadPool {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: Mutex::new(None),
            n_tasks: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
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
    ///
    /// The caller takes tasks too and never waits for a worker that has not
    /// started: a worker descheduled by other load on the machine just finds
    /// no task left (the job then runs at one thread's speed, not stalled).
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
        // SAFETY: only the lifetime is erased: workers dereference the
        // pointer only while counted in `active`, and we wait for
        // `active == 0` after withdrawing it, so `f` outlives every use.
        let f_static: &'static JobFn =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync + '_), &'static JobFn>(f) };
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next.store(0, Ordering::Relaxed);
        s.done.store(0, Ordering::Relaxed);
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = Some(JobPtr(f_static));
        s.epoch.fetch_add(1, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            let _l = s.lock.lock().unwrap_or_else(|e| e.into_inner());
            s.cv.notify_all();
        }
        let res = catch_unwind(AssertUnwindSafe(|| drain(s, f)));
        if res.is_err() {
            // Our task panicked: retire the unclaimed ones unrun.
            while s.next.fetch_add(1, Ordering::Relaxed) < n_tasks {
                s.done.fetch_add(1, Ordering::Release);
            }
        }
        // Tasks a worker claimed may still be running: wait for them (a
        // worker descheduled mid-task makes a pure spin burn our own time
        // slice, so yield after a while).
        wait_until(|| s.done.load(Ordering::Acquire) >= n_tasks);
        *s.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
        wait_until(|| s.active.load(Ordering::Acquire) == 0);
        let worker_panicked = s.panicked.swap(false, Ordering::SeqCst);
        if res.is_err() || worker_panicked {
            panic!("vnpu thread pool: a task panicked");
        }
    }
}

fn wait_until(cond: impl Fn() -> bool) {
    let mut spins = 0u32;
    while !cond() {
        spins += 1;
        if spins < 1000 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
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
        // Count the task done even if it panics, so the caller's wait ends
        // (the panic itself is reported through `panicked` / the caller).
        struct Done<'a>(&'a AtomicUsize);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Release);
            }
        }
        let _d = Done(&s.done);
        f(i);
    }
}

fn worker(s: Arc<Shared>) {
    let mut seen = 0usize;
    loop {
        let mut spins = 0u32;
        let mut idle_since: Option<std::time::Instant> = None;
        loop {
            let e = s.epoch.load(Ordering::Acquire);
            if e != seen {
                seen = e;
                break;
            }
            if s.shutdown.load(Ordering::Acquire) {
                return;
            }
            spins = spins.wrapping_add(1);
            if spins % 64 != 0 {
                std::hint::spin_loop();
                continue;
            }
            let idle = idle_since
                .get_or_insert_with(std::time::Instant::now)
                .elapsed();
            if idle < SPIN_TIME {
                continue;
            }
            if idle < SPIN_TIME + YIELD_TIME {
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
            idle_since = None;
        }
        let job = {
            let g = s.job.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_some() {
                s.active.fetch_add(1, Ordering::SeqCst);
            }
            *g
        };
        if let Some(JobPtr(f)) = job {
            // SAFETY: we joined `active` under the job lock while the job was
            // set, and `run` waits for `active == 0` before `f` goes away.
            let ok = catch_unwind(AssertUnwindSafe(|| drain(&s, unsafe { &*f }))).is_ok();
            if !ok {
                s.panicked.store(true, Ordering::SeqCst);
            }
            s.active.fetch_sub(1, Ordering::Release);
        }
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
    fn task_panic_is_reported_and_pool_stays_usable() {
        let pool = ThreadPool::new(2);
        for _ in 0..3 {
            let r = catch_unwind(AssertUnwindSafe(|| {
                pool.run(16, &|i| {
                    if i % 5 == 3 {
                        panic!("task {i}");
                    }
                })
            }));
            assert!(r.is_err());
            let c = AtomicUsize::new(0);
            pool.run(16, &|_| {
                c.fetch_add(1, Ordering::Relaxed);
            });
            assert_eq!(c.load(Ordering::Relaxed), 16);
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
