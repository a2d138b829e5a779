//! The async ring on the host, without the driver: a memfd stands in for
//! the device (every command completes at once with `EOPNOTSUPP`), and
//! io_uring timeouts for jobs whose completion comes later, from the
//! kernel, as the device's do.

use std::rc::Rc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use super::*;

/// Far longer than any test job takes.
const LONG: Duration = Duration::from_secs(5);

/// `f`'s output, if it comes well before [`LONG`]. The deadline itself
/// would wake the task and poll `f`, and so hide a lost wakeup: that is
/// why what counts is the time taken.
async fn within<F: Future>(what: &str, f: F) -> F::Output {
    let start = Instant::now();
    let out = tokio::time::timeout(2 * LONG, f).await;
    assert!(start.elapsed() < LONG, "{what}: not woken ({:?})", start.elapsed());
    out.unwrap()
}

/// A file without `uring_cmd` (a memfd) in place of `/dev/m4npu`.
fn null_device() -> Device {
    let fd = memfd::MemfdOptions::default().create("not-an-npu").unwrap();
    Device::from_fd_for_tests(fd.into_file().into())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// A job that completes with `EOPNOTSUPP` during submission.
fn null_job(ring: &AsyncRing<'_>) -> Sqe<squeue::Entry128> {
    ring.command(&uapi::Job::default())
}

/// A stand-in for a job the device takes `ms` to finish: a timeout, whose
/// CQE (`-ETIME`) the kernel posts later, between two polls.
fn slow_job(ms: u32) -> Sqe<squeue::Entry128> {
    let ts = types::Timespec::new().sec(u64::from(ms / 1000)).nsec(ms % 1000 * 1_000_000);
    let ts: &'static types::Timespec = Box::leak(Box::new(ts));
    // SAFETY: the timeout names a leaked timespec, which outlives it.
    unsafe { Sqe::from_raw(opcode::Timeout::new(ts).build().into()) }
}

impl AsyncRing<'_> {
    async fn run_entry(&self, sqe: Sqe<squeue::Entry128>) -> Result<usize> {
        self.run_batch([Ok(sqe)]).await.pop().unwrap()
    }
}

fn is_unsupported(r: &Result<usize>) -> bool {
    matches!(r, Err(Error::UnsupportedJobOp))
}

fn timed_out(r: &Result<usize>) -> bool {
    matches!(r, Err(Error::JobFailed(Errno::ETIME)))
}

/// Polls every future until all are done, in one task.
async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futures: Vec<_> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futures.iter_mut().zip(out.iter_mut()).filter(|(_, o)| o.is_none()) {
            match f.as_mut().poll(cx) {
                Poll::Ready(v) => *o = Some(v),
                Poll::Pending => pending = true,
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

#[test]
fn every_job_completes_once_through_a_small_ring() {
    let dev = null_device();
    runtime().block_on(async {
        let ring = dev.async_ring(2).unwrap();
        assert_eq!(ring.capacity(), 4);
        let job = uapi::Job::default();
        let results = join_all((0..300).map(|_| ring.run_raw(&job))).await;
        assert!(results.iter().all(is_unsupported), "{results:?}");
        assert_eq!(ring.in_flight(), 0);

        // A batch: refused jobs keep their place, the rest go 4 at a time.
        let sqes =
            (0..100).map(|i| if i % 7 == 3 { Err(Error::InvalidJob(format!("{i}"))) } else { Ok(null_job(&ring)) });
        let results = ring.run_batch(sqes).await;
        assert_eq!(results.len(), 100);
        for (i, r) in results.iter().enumerate() {
            match r {
                Err(Error::InvalidJob(s)) => assert!(i % 7 == 3 && *s == i.to_string(), "job {i}: {r:?}"),
                r => assert!(i % 7 != 3 && is_unsupported(r), "job {i}: {r:?}"),
            }
        }
        assert_eq!(ring.in_flight(), 0);
    });
}

#[test]
fn library_refusals_are_not_submitted() {
    let dev = null_device();
    runtime().block_on(async {
        let ring = dev.async_ring(2).unwrap();
        // No ranges: refused by the library's own checks.
        let jobs = vec![JobDesc::new(crate::Op::Echo); 10];
        for r in ring.run_all(&jobs).await {
            assert!(matches!(&r, Err(Error::InvalidJob(s)) if s.contains("input range")), "{r:?}");
        }
        assert!(matches!(ring.run(&jobs[0]).await, Err(Error::InvalidJob(_))));
        assert_eq!(ring.in_flight(), 0);
    });
}

#[test]
fn completions_after_submission_wake_the_waiting_task() {
    let dev = null_device();
    runtime().block_on(async {
        let ring = dev.async_ring(4).unwrap();
        let start = Instant::now();
        let all =
            join_all((0..20u32).map(|i| ring.run_entry(if i % 2 == 0 { slow_job(20 + i) } else { null_job(&ring) })));
        let results = within("20 jobs", all).await;
        assert!(start.elapsed() >= Duration::from_millis(38));
        for (i, r) in results.iter().enumerate() {
            assert!(if i % 2 == 0 { timed_out(r) } else { is_unsupported(r) }, "job {i}: {r:?}");
        }
        assert_eq!(ring.in_flight(), 0);
    });
}

/// Tasks polled in turn, the last one (which the reactor wakes) with the
/// shortest job: once it is done, another must take over, or the others
/// are never woken.
#[test]
fn every_task_is_woken_when_the_watching_one_leaves() {
    let dev: &'static Device = Box::leak(Box::new(null_device()));
    let local = tokio::task::LocalSet::new();
    runtime().block_on(local.run_until(async {
        let ring = Rc::new(dev.async_ring(8).unwrap());
        let tasks: Vec<_> = [40, 30, 20, 10]
            .into_iter()
            .map(|ms| {
                let ring = ring.clone();
                tokio::task::spawn_local(async move { ring.run_entry(slow_job(ms)).await })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let r = within(&format!("task {i}"), t).await;
            assert!(timed_out(&r.unwrap()));
        }
        assert_eq!(ring.in_flight(), 0);
    }));
}

#[test]
fn a_dropped_job_keeps_its_slot_until_its_completion() {
    let dev = null_device();
    runtime().block_on(async {
        let ring = dev.async_ring(2).unwrap();
        let start = Instant::now();
        for _ in 0..4 {
            let r = tokio::time::timeout(Duration::from_millis(1), ring.run_entry(slow_job(200))).await;
            assert!(r.is_err(), "the slow job finished early: {r:?}");
        }
        let last_orphan = Instant::now();
        assert_eq!(ring.in_flight(), 4, "a dropped job's slot was freed while the kernel held it");
        // Every slot is an orphan's: a new job waits for their completions,
        // with nobody else to reap them.
        let r = within("a job waiting for room", ring.run_entry(null_job(&ring))).await;
        assert!(is_unsupported(&r), "{r:?}");
        assert!(start.elapsed() >= Duration::from_millis(200), "a slot was reused before its job completed");
        // The other orphans' CQEs are reaped by whoever polls next.
        tokio::time::sleep_until((last_orphan + Duration::from_millis(250)).into()).await;
        assert!(is_unsupported(&ring.run_entry(null_job(&ring)).await));
        assert_eq!(ring.in_flight(), 0);
    });
}

/// An orphan's completion wakes the only waiting future, which has to
/// watch on after taking it: no other future is there to do it.
#[test]
fn a_completion_for_nobody_does_not_swallow_the_next_wakeup() {
    let dev = null_device();
    runtime().block_on(async {
        let ring = dev.async_ring(4).unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(1), ring.run_entry(slow_job(100))).await.is_err());
        let r = within("the job after an orphan", ring.run_entry(slow_job(250))).await;
        assert!(timed_out(&r), "{r:?}");
        assert_eq!(ring.in_flight(), 0);
    });
}

/// A task waiting for room, the last to poll the eventfd, gives up: the
/// task whose jobs hold the slots must still be woken.
#[test]
fn a_dropped_wait_for_room_passes_the_watch_on() {
    let dev: &'static Device = Box::leak(Box::new(null_device()));
    let local = tokio::task::LocalSet::new();
    runtime().block_on(local.run_until(async {
        let ring = Rc::new(dev.async_ring(1).unwrap());
        assert_eq!(ring.capacity(), 2);
        let r = ring.clone();
        let busy = tokio::task::spawn_local(async move {
            join_all([r.run_entry(slow_job(200)), r.run_entry(slow_job(200))]).await
        });
        let r = ring.clone();
        let gives_up = tokio::task::spawn_local(async move {
            tokio::time::timeout(Duration::from_millis(5), r.run_entry(null_job(&r))).await.is_err()
        });
        assert!(gives_up.await.unwrap(), "the third job found room");
        let busy = within("the busy task", busy).await.unwrap();
        assert!(busy.iter().all(timed_out), "{busy:?}");
        assert_eq!(ring.in_flight(), 0);
    }));
}

#[test]
fn runs_inside_tokio_uring() {
    let dev = null_device();
    tokio_uring::start(async {
        let ring = dev.async_ring(4).unwrap();
        let job = uapi::Job::default();
        let all = async {
            tokio::join!(ring.run_entry(slow_job(10)), ring.run_raw(&job), async {
                tokio_uring::fs::File::open("/proc/self/stat").await.map(drop)
            })
        };
        let (a, b, c) = within("jobs beside a tokio-uring op", all).await;
        assert!(timed_out(&a) && is_unsupported(&b), "{a:?} {b:?}");
        c.unwrap();
    });
}

#[test]
fn outside_a_runtime_it_is_an_error() {
    let dev = null_device();
    let e = dev.async_ring(4).err().expect("an AsyncRing without a runtime");
    assert!(e.to_string().contains("tokio runtime"), "{e}");
}
