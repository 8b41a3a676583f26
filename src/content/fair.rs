//! A pool of units (KiB of a memory budget) given out fairly among client addresses: when room
//! comes back, the waiter whose address holds the least goes first (then the earliest), so
//! addresses that hold much — and queue more as fast as they give back — cannot take every
//! release ahead of one that holds nothing. (A FIFO semaphore hands each release to whoever
//! queued first, which a few addresses can arrange to always be.)

use std::collections::HashMap;
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
    /// In arrival order.
    waiters: Vec<Waiter>,
    next: u64,
}

struct Waiter {
    seq: u64,
    who: Who,
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
}

impl Drop for Grant {
    fn drop(&mut self) {
        if self.armed {
            let mut s = self.pool.lock();
            s.give_back(self.who, self.units);
            s.dispatch(&self.pool);
        }
    }
}

impl Grant {
    /// Takes `units` more if they are free now and nobody waits (the waiters come first).
    pub(super) fn try_grow(&mut self, units: usize) -> bool {
        let mut s = self.pool.lock();
        if !s.waiters.is_empty() || s.free < units {
            return false;
        }
        s.free -= units;
        *s.held.entry(self.who).or_insert(0) += units;
        self.units += units;
        true
    }

    /// Whether it should go back to the waiters rather than be kept by its holder: some waiter's
    /// address holds less than its own would without it, or as much and `ties` (its holder is
    /// slow to use it).
    pub(super) fn owed_to_waiters(&self, ties: bool) -> bool {
        let s = self.pool.lock();
        let mine = s
            .held
            .get(&self.who)
            .copied()
            .unwrap_or(0)
            .saturating_sub(self.units);
        s.waiters.iter().any(|w| {
            let theirs = s.held.get(&w.who).copied().unwrap_or(0);
            w.who != self.who && (theirs < mine || (ties && theirs == mine))
        })
    }

    /// Gives `units` of it back now (at most what it holds).
    pub(super) fn give_back(&mut self, units: usize) {
        let units = units.min(self.units);
        self.units -= units;
        let mut s = self.pool.lock();
        s.give_back(self.who, units);
        s.dispatch(&self.pool);
    }
}

impl State {
    fn give_back(&mut self, who: Who, units: usize) {
        self.free += units;
        if let Some(n) = self.held.get_mut(&who) {
            *n = n.saturating_sub(units);
            if *n == 0 {
                self.held.remove(&who);
            }
        }
    }

    /// Grants waiters, the one whose address holds the least first, while the first fits.
    fn dispatch(&mut self, pool: &Arc<Fair>) {
        loop {
            let Some(i) = (0..self.waiters.len()).min_by_key(|&i| {
                let w = &self.waiters[i];
                (self.held.get(&w.who).copied().unwrap_or(0), w.seq)
            }) else {
                return;
            };
            if self.waiters[i].units > self.free {
                return;
            }
            let w = self.waiters.remove(i);
            self.free -= w.units;
            *self.held.entry(w.who).or_insert(0) += w.units;
            let grant = Grant {
                pool: Arc::clone(pool),
                who: w.who,
                units: w.units,
                armed: true,
            };
            // A waiter gone meanwhile: the units come straight back.
            if let Err(mut g) = w.tx.send(grant) {
                g.armed = false;
                self.give_back(g.who, g.units);
            }
        }
    }
}

impl Fair {
    pub(super) fn new(units: usize) -> Arc<Fair> {
        Arc::new(Fair {
            state: Mutex::new(State {
                free: units,
                held: HashMap::new(),
                waiters: Vec::new(),
                next: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Units not given out now.
    pub(super) fn free(&self) -> usize {
        self.lock().free
    }

    /// Adds `more` units, or takes `less` away (from what is free; before serving).
    pub(super) fn resize(self: &Arc<Self>, more: usize, less: usize) {
        let mut s = self.lock();
        s.free = (s.free + more).saturating_sub(less);
        s.dispatch(self);
    }

    /// `units` for `who`, waiting in the pool's order until `deadline`; `None` after it.
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
            s.waiters.push(Waiter {
                seq,
                who,
                units,
                tx,
            });
            s.dispatch(self);
            seq
        };
        // Dropped while waiting (the request went away): out of the queue.
        let mut queued = Queued {
            pool: self,
            seq: Some(seq),
        };
        let got = tokio::time::timeout_at(deadline, &mut rx).await;
        queued.leave();
        match got {
            Ok(Ok(grant)) => Some(grant),
            // Granted just as the time ran out, or not at all.
            _ => rx.try_recv().ok(),
        }
    }
}

/// A waiter's place in the queue, given up when it stops waiting.
struct Queued<'a> {
    pool: &'a Arc<Fair>,
    seq: Option<u64>,
}

impl Queued<'_> {
    fn leave(&mut self) {
        if let Some(seq) = self.seq.take() {
            let mut s = self.pool.lock();
            s.waiters.retain(|w| w.seq != seq);
            // A large waiter that left may have stood before smaller ones that fit.
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
        assert!(pool.lock().waiters.is_empty() && pool.lock().held.is_empty());
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
}
