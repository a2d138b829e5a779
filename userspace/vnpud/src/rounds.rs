//! How vnpud forms its rounds from the jobs it holds.
//!
//! - A round takes one job per context, in the order the driver dispatched
//!   them, so that one app's backlog cannot fill every batch (the driver's
//!   fair share, kept on the device).
//! - Within a round, the jobs of contexts with nothing else held (an app
//!   waiting on each result: synchronous) run and are committed before the
//!   jobs of contexts with a backlog: a light app next to a flooding one
//!   never waits for a batch shared with the flood.
//! - A synchronous app comes back with its next job soon after its result.
//!   When one of the last rounds' synchronous contexts has no job held yet,
//!   the round waits for it a little, at most a quarter of the last round's
//!   run time: always when there is a batch to make (two or more of them:
//!   a generation step started without one session leaves it a whole step
//!   behind and splits the batch for the rest of the generation, so
//!   Triton's dynamic batcher likewise waits up to `max_queue_delay` for a
//!   fuller batch); and when another app's job would run meanwhile, if the
//!   context has come back within that time before (anticipation, with the
//!   think time the anticipatory I/O scheduler keeps per process: a light
//!   app next to a flood then never waits for one of the flood's jobs,
//!   and an app that thinks longer costs the flood nothing).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use m4npu::Op;
use m4npu_hw::HwJob;

/// What rounds are formed of: jobs of contexts.
pub trait ContextJob {
    fn context(&self) -> u64;
}

impl ContextJob for HwJob<'_> {
    fn context(&self) -> u64 {
        self.context_id()
    }
}

/// A round: the jobs to run and commit first, then the rest.
pub struct Round<J> {
    /// Jobs of contexts with nothing else held.
    pub waiting: Vec<J>,
    /// Jobs of contexts with more held behind them.
    pub backlogged: Vec<J>,
}

impl<J> Round<J> {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty() && self.backlogged.is_empty()
    }
}

/// What the daemon has served, printed when it stops.
#[derive(Default, Debug)]
pub struct Stats {
    pub rounds: u64,
    pub jobs: u64,
    /// GENERATE steps, and how many engine calls ran them.
    pub steps: u64,
    pub step_runs: u64,
    /// EMBED and CLASSIFY jobs, and how many engine calls ran them.
    pub pooled: u64,
    pub pooled_runs: u64,
    /// Rounds that waited for a synchronous context, and for how long.
    pub waits: u64,
    pub waited: Duration,
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let per = |n: u64, runs: u64| if runs == 0 { 0.0 } else { n as f64 / runs as f64 };
        write!(
            f,
            "{} jobs in {} rounds ({} waited, {:.0} ms in all); {} generation steps in {} runs ({:.2} per run); {} pooled jobs in {} runs ({:.2} per run)",
            self.jobs,
            self.rounds,
            self.waits,
            self.waited.as_secs_f64() * 1e3,
            self.steps,
            self.step_runs,
            per(self.steps, self.step_runs),
            self.pooled,
            self.pooled_runs,
            per(self.pooled, self.pooled_runs)
        )
    }
}

impl Stats {
    /// Counts one engine run of `n` jobs of `op`.
    pub fn ran(&mut self, op: Option<Op>, n: usize) {
        let n = n as u64;
        self.jobs += n;
        match op {
            Some(Op::Generate) => {
                self.steps += n;
                self.step_runs += 1;
            }
            Some(Op::Embed | Op::Classify) => {
                self.pooled += n;
                self.pooled_runs += 1;
            }
            _ => {}
        }
    }
}

/// The round-former's memory of recent rounds.
#[derive(Default)]
pub struct Rounds {
    /// Synchronous contexts of this round and of the one before: two, so
    /// that a context that missed one round (its app was still being
    /// scheduled) is waited for in the next.
    sessions: [Vec<u64>; 2],
    /// How long the last round took to run.
    took: Duration,
    /// When each recent synchronous context got its last result.
    answered: HashMap<u64, Instant>,
    /// How long each recent synchronous context took to come back with its
    /// next job, lately (a moving average).
    think: HashMap<u64, Duration>,
    pub stats: Stats,
}

impl Rounds {
    /// How long the next round may still wait for recent synchronous
    /// contexts (see the module's doc), `None` when there is none to wait
    /// for. `since` is the time waited already.
    pub fn wait_for_sessions(&self, held: &[impl ContextJob], since: Duration) -> Option<Duration> {
        let recent = self.recent();
        let window = self.took / 4;
        let left = window.saturating_sub(since);
        let missing = |c: &u64| !held.iter().any(|j| j.context() == *c);
        let worth = if recent.len() >= 2 {
            recent.iter().any(missing)
        } else {
            let others = held.iter().any(|j| !recent.contains(&j.context()));
            // Unknown think time: one chance to show it.
            others && recent.iter().filter(|c| missing(c)).any(|c| self.think.get(c).is_none_or(|t| *t <= window))
        };
        (worth && !left.is_zero()).then_some(left)
    }

    /// Takes the next round out of `held`.
    pub fn take<J: ContextJob>(&mut self, held: &mut Vec<J>) -> Round<J> {
        let mut seen = HashSet::new();
        let (round, rest): (Vec<_>, Vec<_>) = held.drain(..).partition(|j| seen.insert(j.context()));
        let backlog: HashSet<u64> = rest.iter().map(|j| j.context()).collect();
        *held = rest;
        let (backlogged, waiting): (Vec<_>, Vec<_>) = round.into_iter().partition(|j| backlog.contains(&j.context()));
        if !waiting.is_empty() || !backlogged.is_empty() {
            self.stats.rounds += 1;
            self.sessions.rotate_right(1);
            self.sessions[0] = waiting.iter().map(|j| j.context()).collect();
            let recent = self.recent();
            self.answered.retain(|c, _| recent.contains(c));
            self.think.retain(|c, _| recent.contains(c));
        }
        Round { waiting, backlogged }
    }

    /// The synchronous contexts of this round and the one before.
    fn recent(&self) -> HashSet<u64> {
        self.sessions.iter().flatten().copied().collect()
    }

    /// Records jobs of `contexts` arriving at `at`: how long their apps
    /// thought since their last results.
    pub fn arrived(&mut self, contexts: impl IntoIterator<Item = u64>, at: Instant) {
        for c in contexts {
            if let Some(t) = self.answered.remove(&c) {
                let now = at.saturating_duration_since(t);
                let avg = self.think.get(&c).map_or(now, |a| (*a * 3 + now) / 4);
                self.think.insert(c, avg);
            }
        }
    }

    /// Records results of synchronous contexts' jobs sent at `at`.
    pub fn answered(&mut self, contexts: impl IntoIterator<Item = u64>, at: Instant) {
        for c in contexts {
            self.answered.insert(c, at);
        }
    }

    /// Records that the round just taken ran in `took`.
    pub fn ran(&mut self, took: Duration) {
        self.took = took;
    }

    /// Records a wait for synchronous contexts.
    pub fn waited(&mut self, how_long: Duration) {
        self.stats.waits += 1;
        self.stats.waited += how_long;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job of context `.0`, numbered `.1`.
    #[derive(Debug, PartialEq, Clone, Copy)]
    struct J(u64, u32);

    impl ContextJob for J {
        fn context(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn a_round_is_one_job_per_context_waiting_apps_first() {
        let mut r = Rounds::default();
        // Context 1 floods; 2 and 3 have one job each.
        let mut held = vec![J(1, 0), J(2, 0), J(1, 1), J(1, 2), J(3, 0)];
        let round = r.take(&mut held);
        assert_eq!(round.waiting, [J(2, 0), J(3, 0)]);
        assert_eq!(round.backlogged, [J(1, 0)]);
        assert_eq!(held, [J(1, 1), J(1, 2)]);
        // The flood's last job held: nothing behind it now.
        held.truncate(1);
        let round = r.take(&mut held);
        assert_eq!((round.waiting, round.backlogged), (vec![J(1, 1)], vec![]));
        assert!(r.take(&mut held).is_empty());
        assert_eq!(r.stats.rounds, 2);
    }

    #[test]
    fn synchronous_contexts_are_waited_for_a_quarter_of_a_round() {
        let step = Duration::from_millis(400);
        let mut r = Rounds::default();
        let none: [J; 0] = [];
        // One app alone: nothing to batch it with, nothing it waits behind.
        r.take(&mut vec![J(1, 0)]);
        r.ran(step);
        assert_eq!(r.wait_for_sessions(&none, Duration::ZERO), None);
        // ... but next to another app's job, it is waited for.
        assert_eq!(r.wait_for_sessions(&[J(9, 0)], Duration::ZERO), Some(step / 4));
        assert_eq!(r.wait_for_sessions(&[J(9, 0)], step / 8), Some(step / 8));
        assert_eq!(r.wait_for_sessions(&[J(9, 0)], step / 4), None);
        assert_eq!(r.wait_for_sessions(&[J(9, 0), J(1, 1)], Duration::ZERO), None);
        // Two sessions that fell out of step: each is waited for.
        r.take(&mut vec![J(2, 0)]);
        r.ran(step);
        assert_eq!(r.wait_for_sessions(&[J(2, 1)], Duration::ZERO), Some(step / 4));
        assert_eq!(r.wait_for_sessions(&[J(2, 1), J(1, 1)], Duration::ZERO), None);
        // A flooding context is not waited for.
        let mut held = vec![J(1, 1), J(2, 1), J(3, 0), J(3, 1)];
        r.take(&mut held);
        assert_eq!(held, [J(3, 1)]);
        assert_eq!(r.wait_for_sessions(&[J(1, 2), J(2, 2)], Duration::ZERO), None);
        // A session that stopped is waited for in two rounds only.
        r.take(&mut vec![J(1, 2)]);
        assert!(r.wait_for_sessions(&[J(1, 3)], Duration::ZERO).is_some());
        r.take(&mut vec![J(1, 3)]);
        assert_eq!(r.wait_for_sessions(&[J(1, 4)], Duration::ZERO), None);
    }

    #[test]
    fn an_app_that_thinks_longer_than_the_window_is_not_anticipated() {
        let step = Duration::from_millis(400);
        let t0 = Instant::now();
        let mut r = Rounds::default();
        // App 1 next to a flood (context 9), coming back 50 ms after each
        // result: waited for.
        r.take(&mut vec![J(1, 0), J(9, 0), J(9, 1)]);
        r.ran(step);
        r.answered([1], t0);
        r.arrived([1], t0 + Duration::from_millis(50));
        assert_eq!(r.wait_for_sessions(&[J(9, 1)], Duration::ZERO), Some(step / 4));
        // Coming back after 300 ms, a few times: no longer.
        for i in 1..=4 {
            r.take(&mut vec![J(1, i), J(9, 1), J(9, 2)]);
            let t = t0 + step * i;
            r.answered([1], t);
            r.arrived([1], t + Duration::from_millis(300));
        }
        assert_eq!(r.wait_for_sessions(&[J(9, 2)], Duration::ZERO), None);
        // Batches are still waited for, whatever the apps' think times.
        r.take(&mut vec![J(1, 5), J(2, 0)]);
        assert_eq!(r.wait_for_sessions(&[J(2, 1)], Duration::ZERO), Some(step / 4));
    }
}
