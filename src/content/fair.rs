//! A pool of units (KiB of a memory budget) given out fairly among client addresses: when room
//! comes back, the waiter whose address holds the least goes first (then the earliest), so
//! addresses that hold much — and queue more as fast as they give back — cannot take every
//! release ahead of one that holds nothing. (A FIFO semaphore hands each release to whoever
//! queued first, which a few addresses can arrange to always be.)
//!
//! Waiters queue per address, and the addresses with waiters are kept ordered by what they hold
//! (then their first waiter's arrival), so a release, a grant or a question of who is owed room
//! costs a logarithm of the waiting addresses, not a scan of every waiter.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

use crate::types::ClientAddress;

/// Who a grant is counted against: an address, or nobody in particular (no peer known).
type Who = Option<ClientAddress>;

pub(super) struct Fair {
    state: Mutex<State>,
}

struct State {
    free: usize,
    held: HashMap<Who, usize>,
    /// Of what each address holds, what is held by grants not yet begun (`Grant::unstarted`).
    unstarted: HashMap<Who, usize>,
    /// Each address's waiters, in arrival order.
    queues: HashMap<Who, VecDeque<Waiter>>,
    /// The addresses with waiters, by (what they hold, their first waiter's arrival).
    order: BTreeSet<(usize, u64, Who)>,
    next: u64,
}

struct Waiter {
    seq: u64,
    units: usize,
    tx: oneshot::Sender<Grant>,
}

/// Units taken from the pool, given back when dropped.
pub(super) struct Grant {
    pool: Arc<Fair>,
    who: Who,
    units: usize,
    /// Off while the grant is in the pool's own hands (a waiter that went away meanwhile).
    armed: bool,
    /// Held for something not yet begun (`unstarted`, until `start`).
    unstarted: bool,
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.armed {
            let mut s = self.pool.lock();
            if self.unstarted {
                s.add_unstarted(self.who, 0, self.units);
            }
            s.give_back(self.who, self.units);
            s.dispatch(&self.pool);
        }
    }
}

impl Grant {
    /// Takes `units` more if they are free now and nobody waits (the waiters come first).
    pub(super) fn try_grow(&mut self, units: usize) -> bool {
        let mut s = self.pool.lock();
        if !s.order.is_empty() || s.free < units {
            return false;
        }
        s.free -= units;
        s.rekey(self.who, |s| *s.held.entry(self.who).or_insert(0) += units);
        if self.unstarted {
            s.add_unstarted(self.who, units, 0);
        }
        self.units += units;
        true
    }

    /// Counts it as held for something not yet begun (an answer that has written nothing: an
    /// HTTP/2 stream queued behind others, or one whose window never opens), until `start`.
    pub(super) fn unstarted(&mut self) {
        if !self.unstarted {
            self.unstarted = true;
            self.pool.lock().add_unstarted(self.who, self.units, 0);
        }
    }

    /// What it holds for is under way (its first chunk written).
    pub(super) fn start(&mut self) {
        if self.unstarted {
            self.unstarted = false;
            self.pool.lock().add_unstarted(self.who, 0, self.units);
        }
    }

    /// Whether it should go back to the waiters rather than be kept by its holder: some waiter's
    /// address holds less than its own would without it, or as much and `ties` (its holder is
    /// slow to use it). What its own address holds for things not yet begun does not count:
    /// a client reading one stream while the next waits its turn keeps its memory against
    /// waiters that hold nothing.
    pub(super) fn owed_to_waiters(&self, ties: bool) -> bool {
        let s = self.pool.lock();
        let mine = s
            .held_by(self.who)
            .saturating_sub(s.unstarted.get(&self.who).copied().unwrap_or(0))
            .saturating_sub(if self.unstarted { 0 } else { self.units });
        s.order
            .iter()
            .find(|(_, _, who)| *who != self.who)
            .is_some_and(|&(theirs, _, _)| theirs < mine || (ties && theirs == mine))
    }

    /// Gives `units` of it back now (at most what it holds).
    pub(super) fn give_back(&mut self, units: usize) {
        let units = units.min(self.units);
        self.units -= units;
        let mut s = self.pool.lock();
        if self.unstarted {
            s.add_unstarted(self.who, 0, units);
        }
        s.give_back(self.who, units);
        s.dispatch(&self.pool);
    }
}

impl State {
    fn held_by(&self, who: Who) -> usize {
        self.held.get(&who).copied().unwrap_or(0)
    }

    /// Adds `more` to what `who` holds for grants not yet begun and takes `less` from it.
    fn add_unstarted(&mut self, who: Who, more: usize, less: usize) {
        let n = self.unstarted.entry(who).or_insert(0);
        *n = (*n + more).saturating_sub(less);
        if *n == 0 {
            self.unstarted.remove(&who);
        }
    }

    /// `who`'s place among the waiting addresses, if it has waiters.
    fn key(&self, who: Who) -> Option<(usize, u64, Who)> {
        let first = self.queues.get(&who)?.front()?;
        Some((self.held_by(who), first.seq, who))
    }

    /// Runs `f`, which changes what `who` holds or its waiters, keeping its place in `order`.
    fn rekey<T>(&mut self, who: Who, f: impl FnOnce(&mut State) -> T) -> T {
        if let Some(k) = self.key(who) {
            self.order.remove(&k);
        }
        let out = f(self);
        match self.key(who) {
            Some(k) => {
                self.order.insert(k);
            }
            None => {
                self.queues.remove(&who);
            }
        }
        out
    }

    fn give_back(&mut self, who: Who, units: usize) {
        self.free += units;
        self.rekey(who, |s| {
            if let Some(n) = s.held.get_mut(&who) {
                *n = n.saturating_sub(units);
                if *n == 0 {
                    s.held.remove(&who);
                }
            }
        });
    }

    /// Grants waiters, the one whose address holds the least first, while the first fits.
    fn dispatch(&mut self, pool: &Arc<Fair>) {
        while let Some(&(_, _, who)) = self.order.first() {
            let fits = self
                .queues
                .get(&who)
                .and_then(VecDeque::front)
                .is_some_and(|w| w.units <= self.free);
            if !fits {
                return;
            }
            let Some(w) = self.rekey(who, |s| {
                let w = s.queues.get_mut(&who).and_then(VecDeque::pop_front)?;
                *s.held.entry(who).or_insert(0) += w.units;
                Some(w)
            }) else {
                return;
            };
            self.free -= w.units;
            let grant = Grant {
                pool: Arc::clone(pool),
                who,
                units: w.units,
                armed: true,
                unstarted: false,
            };
            if let Err(mut g) = w.tx.send(grant) {
                g.armed = false;
                self.give_back(g.who, g.units);
            }
        }
    }

    /// Takes waiter `seq` of `who` out of the queue, if it is still there.
    fn leave(&mut self, who: Who, seq: u64) {
        self.rekey(who, |s| {
            if let Some(q) = s.queues.get_mut(&who) {
                q.retain(|w| w.seq != seq);
            }
        });
    }
}

impl Fair {
    pub(super) fn new(units: usize) -> Arc<Fair> {
        Arc::new(Fair {
            state: Mutex::new(State {
                free: units,
                held: HashMap::new(),
                unstarted: HashMap::new(),
                queues: HashMap::new(),
                order: BTreeSet::new(),
                next: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Units not given out.
    pub(super) fn free(&self) -> usize {
        self.lock().free
    }

    /// Adds `more` units and takes `less` away (what is given out stays; `free` floors at 0).
    pub(super) fn resize(self: &Arc<Self>, more: usize, less: usize) {
        let mut s = self.lock();
        s.free = (s.free + more).saturating_sub(less);
        s.dispatch(self);
    }

    /// `units` for `who`, once the waiters before it are served and they fit; `None` once
    /// `deadline` passed (having taken nothing).
    pub(super) async fn acquire(
        self: &Arc<Self>,
        units: usize,
        who: Who,
        deadline: tokio::time::Instant,
    ) -> Option<Grant> {
        let (tx, mut rx) = oneshot::channel();
        let seq = {
            let mut s = self.lock();
            let seq = s.next;
            s.next += 1;
            s.rekey(who, |s| {
                s.queues
                    .entry(who)
                    .or_default()
                    .push_back(Waiter { seq, units, tx })
            });
            s.dispatch(self);
            seq
        };
        let mut queued = Queued {
            pool: self,
            who,
            seq: Some(seq),
        };
        let got = tokio::time::timeout_at(deadline, &mut rx).await;
        queued.leave();
        match got {
            Ok(Ok(grant)) => Some(grant),
            // Granted as the deadline passed: keep it rather than lose it.
            _ => rx.try_recv().ok(),
        }
    }
}

/// A waiter's place in the queue, left when its wait ends (granted, timed out or dropped).
struct Queued<'a> {
    pool: &'a Arc<Fair>,
    who: Who,
    seq: Option<u64>,
}

impl Queued<'_> {
    fn leave(&mut self) {
        if let Some(seq) = self.seq.take() {
            let mut s = self.pool.lock();
            s.leave(self.who, seq);
            // Its leaving may let a smaller waiter behind it through.
            s.dispatch(self.pool);
        }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(n: u32) -> Who {
        Some(ClientAddress::V4(n))
    }

    fn soon() -> tokio::time::Instant {
        tokio::time::Instant::now() + std::time::Duration::from_secs(5)
    }

    #[tokio::test(start_paused = true)]
    async fn a_release_goes_to_the_waiter_whose_address_holds_the_least() {
        let pool = Fair::new(4);
        let mut heavy = Vec::new();
        for _ in 0..4 {
            heavy.push(pool.acquire(1, who(1), soon()).await.unwrap());
        }
        assert_eq!(pool.free(), 0);
        // The heavy address queues first, the light one after.
        let again = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.acquire(1, who(1), soon()).await.is_some() }
        });
        tokio::task::yield_now().await;
        let light = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.acquire(1, who(2), soon()).await }
        });
        tokio::task::yield_now().await;
        drop(heavy.pop());
        let light = light.await.unwrap().expect("the light address waited on");
        assert_eq!(light.units, 1);
        tokio::task::yield_now().await;
        assert!(!again.is_finished());
        drop(heavy.pop());
        assert!(again.await.unwrap());
        drop(light);
        assert_eq!(pool.free(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_that_gives_up_leaves_nothing_taken() {
        let pool = Fair::new(2);
        let held = pool.acquire(2, who(1), soon()).await.unwrap();
        let late = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
        assert!(pool.acquire(1, who(2), late).await.is_none());
        // One dropped while it waits.
        let gone = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.acquire(2, who(3), soon()).await.is_some() }
        });
        tokio::task::yield_now().await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        assert_eq!(pool.free(), 2);
        assert!(
            pool.lock().order.is_empty()
                && pool.lock().queues.is_empty()
                && pool.lock().held.is_empty()
                && pool.lock().unstarted.is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_owes_its_room_to_a_waiter_holding_less_or_as_much_if_it_is_slow() {
        let pool = Fair::new(3);
        let a1 = pool.acquire(1, who(1), soon()).await.unwrap();
        let _a2 = pool.acquire(1, who(1), soon()).await.unwrap();
        let b = pool.acquire(1, who(2), soon()).await.unwrap();
        // Nobody waits: nobody is owed anything.
        assert!(!a1.owed_to_waiters(true));
        let waiting = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.acquire(1, who(3), soon()).await.is_some() }
        });
        tokio::task::yield_now().await;
        // Address 1 would still hold one without it: the waiter holds less.
        assert!(a1.owed_to_waiters(false));
        // Address 2 would hold none, as the waiter: only if it is slow.
        assert!(!b.owed_to_waiters(false));
        assert!(b.owed_to_waiters(true));
        drop(a1);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn what_an_address_holds_for_things_not_begun_does_not_make_it_owe() {
        let pool = Fair::new(3);
        // Address 1 reads one stream while the next, granted, has not begun.
        let reading = pool.acquire(1, who(1), soon()).await.unwrap();
        let mut queued = pool.acquire(1, who(1), soon()).await.unwrap();
        queued.unstarted();
        let _other = pool.acquire(1, who(2), soon()).await.unwrap();
        let waiting = tokio::spawn({
            let pool = Arc::clone(&pool);
            async move { pool.acquire(1, who(3), soon()).await.is_some() }
        });
        tokio::task::yield_now().await;
        // Without what is not begun, address 1 would hold none, as the waiter: it keeps its
        // room unless it is slow.
        assert!(!reading.owed_to_waiters(false));
        assert!(reading.owed_to_waiters(true));
        // Once the queued stream has begun, it counts.
        queued.start();
        assert!(reading.owed_to_waiters(false));
        queued.unstarted();
        drop(queued);
        assert!(waiting.await.unwrap());
        assert!(pool.lock().unstarted.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_by_what_their_address_holds_then_by_arrival() {
        let pool = Fair::new(8);
        let _one = pool.acquire(1, who(1), soon()).await.unwrap();
        let _two = pool.acquire(2, who(2), soon()).await.unwrap();
        let mut neutral = Vec::new();
        for _ in 0..5 {
            neutral.push(pool.acquire(1, who(5), soon()).await.unwrap());
        }
        // Queued in this order: address 2 (holds 2), 1 (holds 1), 3 (holds 0), 1 again, 3
        // again; and one of address 4 that gives up.
        let (tx, mut served) = tokio::sync::mpsc::unbounded_channel();
        let mut waiting = Vec::new();
        for (n, name) in [
            (2, "2a"),
            (1, "1a"),
            (3, "3a"),
            (1, "1b"),
            (3, "3b"),
            (4, "4a"),
        ] {
            let (pool, tx) = (Arc::clone(&pool), tx.clone());
            waiting.push(tokio::spawn(async move {
                let grant = pool.acquire(1, who(n), soon()).await.unwrap();
                tx.send(name).unwrap();
                // Kept: its address holds one more.
                std::future::pending::<()>().await;
                drop(grant);
            }));
            tokio::task::yield_now().await;
        }
        waiting.pop().unwrap().abort();
        tokio::task::yield_now().await;
        // Each unit an address without waiters gives back serves one waiter: the one whose
        // address holds the least, then the earliest.
        let mut order = Vec::new();
        for g in neutral {
            drop(g);
            order.push(served.recv().await.unwrap());
        }
        assert_eq!(order, ["3a", "1a", "3b", "2a", "1b"]);
        for w in waiting {
            w.abort();
        }
    }
}
