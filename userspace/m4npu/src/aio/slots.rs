//! The bookkeeping of [`AsyncRing`](super::AsyncRing): one slot per job in
//! flight, its index the SQE's `user_data`, with no I/O of its own so that
//! it can be tested against a made-up completion feed.
//!
//! A slot is reserved before its SQE is pushed and freed only once its
//! CQE has been seen *and* nobody is left to take the result, so a
//! `user_data` is never reused while the kernel may still complete it.
//! Methods that let a waiting future go on push its waker to `wake`: the
//! caller wakes them once it no longer borrows the slots.

use std::task::{Poll, Waker};

#[derive(Debug)]
enum Slot {
    Free,
    /// Reserved; its future waits for the CQE (with its waker once polled).
    Waiting(Option<Waker>),
    /// The CQE's `res`, for the future to take.
    Done(i32),
    /// Its future was dropped while the job was in flight: held until the CQE.
    Orphaned,
}

#[derive(Debug)]
pub(super) struct Slots {
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Futures waiting for a free slot.
    room: Vec<Waker>,
}

impl Slots {
    pub fn new(capacity: usize) -> Self {
        Self {
            slots: (0..capacity).map(|_| Slot::Free).collect(),
            // Popped from the end: slot 0 first.
            free: (0..capacity).rev().collect(),
            room: Vec::new(),
        }
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// Reserved slots: jobs pushed or about to be, results not yet taken,
    /// and orphans whose CQE has not come.
    pub fn in_use(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    pub fn reserve(&mut self) -> Option<usize> {
        let idx = self.free.pop()?;
        self.slots[idx] = Slot::Waiting(None);
        Some(idx)
    }

    /// `waker` is woken when a slot is freed.
    pub fn wait_for_room(&mut self, waker: &Waker) {
        if !self.room.iter().any(|w| w.will_wake(waker)) {
            self.room.push(waker.clone());
        }
    }

    /// A CQE. Unknown or repeated `user_data` is ignored: a misbehaving
    /// driver must not take down the app's bookkeeping.
    pub fn complete(&mut self, user_data: u64, res: i32, wake: &mut Vec<Waker>) {
        let Some(slot) = usize::try_from(user_data).ok().and_then(|i| self.slots.get_mut(i)) else { return };
        match std::mem::replace(slot, Slot::Done(res)) {
            Slot::Waiting(waker) => wake.extend(waker),
            Slot::Orphaned => self.free(user_data as usize, wake),
            old @ (Slot::Free | Slot::Done(_)) => *slot = old,
        }
    }

    /// The job's result (which frees the slot), or `waker` kept to be woken
    /// by its CQE.
    pub fn poll(&mut self, idx: usize, waker: &Waker, wake: &mut Vec<Waker>) -> Poll<i32> {
        match &mut self.slots[idx] {
            Slot::Done(res) => {
                let res = *res;
                self.free(idx, wake);
                Poll::Ready(res)
            }
            Slot::Waiting(w) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(waker)) {
                    *w = Some(waker.clone());
                }
                Poll::Pending
            }
            s => unreachable!("slot {idx} polled while {s:?}"),
        }
    }

    /// The slot's future is gone. A job the kernel may still complete keeps
    /// the slot until its CQE; one never submitted (`submitted == false`)
    /// or already complete frees it now.
    pub fn abandon(&mut self, idx: usize, submitted: bool, wake: &mut Vec<Waker>) {
        match self.slots[idx] {
            Slot::Waiting(_) if submitted => self.slots[idx] = Slot::Orphaned,
            Slot::Waiting(_) | Slot::Done(_) => self.free(idx, wake),
            Slot::Free | Slot::Orphaned => {}
        }
    }

    /// Some future still waiting (for a result or for room), to take over
    /// watching for completions from one that leaves.
    pub fn any_waiter(&self) -> Option<Waker> {
        self.slots
            .iter()
            .find_map(|s| match s {
                Slot::Waiting(Some(w)) => Some(w),
                _ => None,
            })
            .or(self.room.first())
            .cloned()
    }

    fn free(&mut self, idx: usize, wake: &mut Vec<Waker>) {
        self.slots[idx] = Slot::Free;
        self.free.push(idx);
        wake.append(&mut self.room);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;

    /// A waker counting its wakes.
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn waker() -> (Arc<Count>, Waker) {
        let c = Arc::new(Count(AtomicUsize::new(0)));
        (c.clone(), Waker::from(c))
    }
    fn wake_all(wake: &mut Vec<Waker>) -> usize {
        let n = wake.len();
        wake.drain(..).for_each(Waker::wake);
        n
    }

    #[test]
    fn a_result_reaches_its_waiting_future_and_frees_the_slot() {
        let mut s = Slots::new(2);
        let mut wake = Vec::new();
        let (count, w) = waker();
        let a = s.reserve().unwrap();
        let b = s.reserve().unwrap();
        assert_ne!(a, b);
        assert_eq!(s.reserve(), None, "more slots than the capacity");
        assert_eq!(s.poll(a, &w, &mut wake), Poll::Pending);
        assert_eq!(s.poll(a, &w, &mut wake), Poll::Pending);
        s.complete(a as u64, 64, &mut wake);
        assert_eq!(wake_all(&mut wake), 1, "one wake for one CQE, however often the future was polled");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // The CQE for b arrives before its future is polled: kept until taken.
        s.complete(b as u64, -5, &mut wake);
        assert_eq!(wake_all(&mut wake), 0);
        assert_eq!(s.in_use(), 2);
        assert_eq!(s.poll(b, &w, &mut wake), Poll::Ready(-5));
        assert_eq!(s.poll(a, &w, &mut wake), Poll::Ready(64));
        assert_eq!(s.in_use(), 0);
    }

    #[test]
    fn an_orphan_keeps_its_slot_until_its_completion() {
        let mut s = Slots::new(1);
        let mut wake = Vec::new();
        let (room, w) = waker();
        let a = s.reserve().unwrap();
        s.abandon(a, true, &mut wake);
        assert_eq!(s.reserve(), None, "an orphan's slot was reused before its CQE");
        s.wait_for_room(&w);
        s.wait_for_room(&w);
        assert!(s.any_waiter().is_some());
        // A CQE for another user_data, or garbage, changes nothing.
        s.complete(7, 0, &mut wake);
        s.complete(u64::MAX, 0, &mut wake);
        assert_eq!((s.in_use(), wake.len()), (1, 0));
        s.complete(a as u64, 64, &mut wake);
        assert_eq!(wake_all(&mut wake), 1, "the room waiter, once");
        assert_eq!(room.0.load(Ordering::SeqCst), 1);
        assert_eq!(s.in_use(), 0);
        // A repeated CQE for a freed slot is ignored.
        s.complete(a as u64, 64, &mut wake);
        assert_eq!(s.reserve(), Some(a));
    }

    #[test]
    fn abandoning_frees_what_the_kernel_no_longer_holds() {
        let mut s = Slots::new(3);
        let mut wake = Vec::new();
        let never_pushed = s.reserve().unwrap();
        let done = s.reserve().unwrap();
        let (room, w) = waker();
        s.wait_for_room(&w);
        s.abandon(never_pushed, false, &mut wake);
        assert_eq!(wake_all(&mut wake), 1);
        s.complete(done as u64, 1, &mut wake);
        s.abandon(done, true, &mut wake);
        assert_eq!(s.in_use(), 0);
        assert_eq!(room.0.load(Ordering::SeqCst), 1);
        // A completion after that (a repeated CQE) is ignored.
        s.complete(done as u64, 1, &mut wake);
        assert_eq!(s.in_use(), 0);
    }

    #[test]
    fn a_leaving_future_finds_one_to_take_over() {
        let mut s = Slots::new(2);
        let mut wake = Vec::new();
        assert!(s.any_waiter().is_none());
        let (a_count, a_waker) = waker();
        let a = s.reserve().unwrap();
        let b = s.reserve().unwrap();
        assert!(s.any_waiter().is_none(), "a future never polled has no waker");
        assert_eq!(s.poll(a, &a_waker, &mut wake), Poll::Pending);
        s.any_waiter().unwrap().wake();
        assert_eq!(a_count.0.load(Ordering::SeqCst), 1);
        s.complete(a as u64, 0, &mut wake);
        wake_all(&mut wake);
        assert_eq!(s.poll(a, &a_waker, &mut wake), Poll::Ready(0));
        assert!(s.any_waiter().is_none(), "b was never polled");
        let (b_count, b_waker) = waker();
        assert_eq!(s.poll(b, &b_waker, &mut wake), Poll::Pending);
        s.any_waiter().unwrap().wake();
        assert_eq!(b_count.0.load(Ordering::SeqCst), 1);
    }
}
