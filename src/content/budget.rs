//! A node's memory budget for bytes in flight (uploads' bodies, pulls' chunks): reservations
//! wait for room, first from the client address's share (a quarter), then from the whole, so
//! one address — or a few — cannot take what everyone needs. An upload body reserves as its
//! bytes arrive (`Metered`).

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::Stream;

use super::error::{Error, Result as ContentResult};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::fair::{Fair, Grant};

use crate::types::{ClientAddress, Hangup};

type Shares = Arc<Mutex<HashMap<ClientAddress, Arc<Semaphore>>>>;

/// Reservations whose holders can be closed (`Hangup`), by id.
type Holders = Arc<Mutex<HashMap<u64, Holder>>>;

/// Bytes in flight, counted in KiB.
pub(super) struct Budget {
    /// The whole, given out fairly among addresses (`fair`).
    whole: Arc<Fair>,
    capacity_kib: AtomicUsize,
    /// Each address's share while it has a reservation or a waiter (then dropped).
    shares: Shares,
    holders: Holders,
    next_holder: AtomicU64,
    /// When a holder was last closed to take its memory back (`clock`), and how many were.
    reclaimed_at: AtomicU64,
    reclaimed: AtomicU64,
}

/// A holder whose answer has written nothing (no piece of a chunk, `content::PIECE`) for this
/// long is *stale*: its client has not read 16 KiB in that time, however long ago the
/// reservation was made...
const STALE: Duration = Duration::from_secs(5);
/// ... and so is one whose answer has written nothing at all this long after it began: a
/// stream opened again and again, never read, is stale within this of each opening.
const FIRST_WRITE: Duration = Duration::from_secs(2);
/// ... and so is one whose chunk it has held this long, however it trickles: its client drains
/// under a chunk in this time (chunks are sized to about `DRAIN_AHEAD` of an answer's drain, so
/// a client reading steadily never comes near it), so readers that take a piece every few
/// seconds cannot hold large chunks for minutes.
const HOLD_LIMIT: Duration = Duration::from_secs(10);
/// A reservation that waits closes the holder of a stale one each this often (`reclaim`), and
/// the budget closes one at most each `RECLAIM_GAP` whoever waits.
const RECLAIM_EVERY: Duration = Duration::from_secs(1);
const RECLAIM_GAP: Duration = Duration::from_millis(100);

/// A reservation's holder, as `reclaim` chooses among them.
struct Holder {
    address: Option<ClientAddress>,
    /// Its connection (`Hangup::connection`).
    conn: usize,
    kib: usize,
    hangup: Hangup,
    progress: Arc<Progress>,
    /// When it was reserved (`clock_ms`).
    since: u64,
}

impl Holder {
    /// Stale (`Progress::stale`), or its answer has written no whole chunk for `HOLD_LIMIT`
    /// since it was reserved: a chunk carried on to the answer's next read counts from when
    /// the one before was written.
    fn stale(&self, now: u64) -> bool {
        let chunk_since = self.progress.chunk_at().max(self.since);
        self.progress.stale(now) || now.saturating_sub(chunk_since) >= ms(HOLD_LIMIT)
    }
}

/// When an answer last wrote a piece, or began; what it has written; how fast it drained its
/// last chunk.
pub(super) struct Progress {
    at: AtomicU64,
    /// Bytes written so far.
    bytes: AtomicU64,
    /// When its last chunk was wholly written (`clock_ms`), and that chunk's rate (bytes/s;
    /// `u64::MAX` before the first).
    chunk_at: AtomicU64,
    rate: AtomicU64,
}

/// A chunk of an answer holds about this much of its drain (`Progress::drain_size`).
const DRAIN_AHEAD: Duration = Duration::from_secs(2);

impl Progress {
    pub(super) fn new() -> Arc<Progress> {
        Arc::new(Progress {
            at: AtomicU64::new(clock_ms()),
            bytes: AtomicU64::new(0),
            chunk_at: AtomicU64::new(0),
            rate: AtomicU64::new(u64::MAX),
        })
    }

    /// A chunk of `len` bytes, made at `made` (`clock_ms`), wholly written now: its rate, over
    /// the time since it was made or since the chunk before it was written, whichever is later
    /// (a chunk read ahead waits for the one before).
    pub(super) fn chunk_written(&self, len: u64, made: u64) -> u64 {
        let now = clock_ms();
        let from = self.chunk_at.swap(now, Ordering::Relaxed).max(made);
        let rate = len.saturating_mul(1000) / now.saturating_sub(from).max(1);
        self.rate.store(rate, Ordering::Relaxed);
        rate
    }

    /// When its last chunk was wholly written (`clock_ms`; 0 before the first).
    fn chunk_at(&self) -> u64 {
        self.chunk_at.load(Ordering::Relaxed)
    }

    /// The most the answer's next chunk should hold: `DRAIN_AHEAD` of the rate its last chunk
    /// drained at, at least `least`; `None` before its first chunk is written.
    pub(super) fn drain_size(&self, least: u64) -> Option<u64> {
        let rate = self.rate.load(Ordering::Relaxed);
        (rate != u64::MAX).then(|| (rate.saturating_mul(ms(DRAIN_AHEAD)) / 1000).max(least))
    }

    /// `n` bytes written now.
    pub(super) fn touch(&self, n: u64) {
        self.at.store(clock_ms(), Ordering::Relaxed);
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn quiet_for(&self, now: u64) -> u64 {
        now.saturating_sub(self.at.load(Ordering::Relaxed))
    }

    /// Written nothing for `STALE`, or nothing at all for `FIRST_WRITE` since it began.
    fn stale(&self, now: u64) -> bool {
        let quiet = self.quiet_for(now);
        quiet >= ms(STALE) || (self.bytes() == 0 && quiet >= ms(FIRST_WRITE))
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds since the first use of the budget's clock.
pub(super) fn clock_ms() -> u64 {
    let epoch = *EPOCH.get_or_init(tokio::time::Instant::now);
    u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Whose stale holders a waiting reservation may close.
#[derive(Clone, Copy)]
enum Scope {
    /// Waiting for its address's share: only its own address's.
    Own(Option<ClientAddress>),
    /// Waiting for the whole: those of addresses holding more than the waiter's.
    Heavier(Option<ClientAddress>),
}

/// A reservation's entry among the holders, removed when it is given back.
struct Held {
    id: u64,
    holders: Holders,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.holders
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

/// Room reserved in a budget, given back when dropped.
pub(super) struct Reservation {
    kib: usize,
    _held: Option<Held>,
    _whole: Grant,
    _share: Option<Share>,
}

impl Reservation {
    /// What it holds, in bytes.
    pub(super) fn bytes(&self) -> u64 {
        (self.kib as u64) << 10
    }

    /// Gives `kib` of it back now, to the whole and to the address's share.
    fn give_back(&mut self, kib: usize) {
        let kib = kib.min(self.kib);
        self.kib -= kib;
        if let Some(share) = &mut self._share
            && let Some(permit) = &mut share.permit
        {
            drop(permit.split(kib));
        }
        self._whole.give_back(kib);
        self.note_size();
    }

    /// Whether, its chunk written, it should go back to those waiting for room rather than to
    /// its answer's next read: a waiter's address holds less than its own would without it (and
    /// without what it holds for answers that have written nothing), or as much and the chunk
    /// was written slowly (`slow`). So an answer that drains keeps its memory, and readers that
    /// trickle cannot keep it from those who wait.
    pub(super) fn owed_to_waiters(&self, slow: bool) -> bool {
        self._whole.owed_to_waiters(slow)
    }

    /// Takes `kib` more if free now, in its address's share and in the whole, with nobody
    /// waiting for either.
    fn try_grow(&mut self, kib: usize) -> bool {
        let n = u32::try_from(kib).unwrap_or(u32::MAX);
        let more = match &self._share {
            Some(share) => {
                let own = share
                    .shares
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(&share.address)
                    .cloned();
                match own.map(|own| own.try_acquire_many_owned(n)) {
                    Some(Ok(permit)) => Some(permit),
                    _ => return false,
                }
            }
            None => None,
        };
        if !self._whole.try_grow(kib) {
            return false;
        }
        if let (Some(more), Some(share)) = (more, &mut self._share)
            && let Some(permit) = &mut share.permit
        {
            permit.merge(more);
        }
        self.kib += kib;
        self.note_size();
        true
    }

    /// Tells `reclaim` what it holds now.
    fn note_size(&self) {
        if let Some(held) = &self._held
            && let Some(h) = held
                .holders
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .get_mut(&held.id)
        {
            h.kib = self.kib;
        }
    }
}

/// What one reservation holds of its address's share.
struct Share {
    permit: Option<OwnedSemaphorePermit>,
    address: ClientAddress,
    shares: Shares,
}

impl Drop for Share {
    fn drop(&mut self) {
        drop(self.permit.take());
        // The map's own reference is the last one: no reservation, no waiter.
        let mut shares = self.shares.lock().unwrap_or_else(PoisonError::into_inner);
        if shares
            .get(&self.address)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            shares.remove(&self.address);
        }
    }
}

impl Budget {
    pub(super) fn new(bytes: u64) -> Budget {
        let kib = kib_of(bytes);
        Budget {
            whole: Fair::new(kib),
            capacity_kib: AtomicUsize::new(kib),
            shares: Arc::default(),
            holders: Arc::default(),
            next_holder: AtomicU64::new(0),
            reclaimed_at: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
        }
    }

    /// Sets the budget's size; before serving.
    pub(super) fn set(&self, bytes: u64) {
        let want = kib_of(bytes);
        let had = self.capacity_kib.swap(want, Ordering::Relaxed);
        self.whole
            .resize(want.saturating_sub(had), had.saturating_sub(want));
    }

    /// Its size, in bytes.
    pub(super) fn capacity(&self) -> u64 {
        (self.capacity_kib.load(Ordering::Relaxed) as u64) << 10
    }

    /// The most one address may hold, in bytes.
    pub(super) fn share(&self) -> u64 {
        ((self.capacity_kib.load(Ordering::Relaxed).max(1) / 4).max(1) as u64) << 10
    }

    /// Not reserved now, in bytes.
    pub(super) fn free(&self) -> u64 {
        (self.whole.free() as u64) << 10
    }

    /// Reserves `bytes` (at most an address's share) for a client at `peer`: from the
    /// address's share (in arrival order), then from the whole (the address holding the least
    /// first, `fair`). `None` once `wait` passed.
    pub(super) async fn reserve(
        &self,
        bytes: u64,
        peer: Option<IpAddr>,
        wait: Duration,
    ) -> Option<Reservation> {
        self.reserve_for(bytes, peer, wait, None).await
    }

    /// `reserve`, for a holder closed by `hangup` whose answer's `progress` says when it last
    /// wrote: while it waits, stale holders are closed (`reclaim`: its own address's while it
    /// waits for its share, those of addresses holding more than its own while it waits for
    /// the whole), and once it holds, it may be closed in turn if it goes stale while others
    /// wait. So clients that stop reading (a socket never read, HTTP/2 streams whose window
    /// never opens, opened again and again) hold memory only until someone needs it, and a
    /// client reading slowly but steadily is never closed for it.
    pub(super) async fn reserve_or_reclaim(
        &self,
        bytes: u64,
        peer: Option<IpAddr>,
        wait: Duration,
        holder: (&Hangup, &Arc<Progress>),
    ) -> Option<Reservation> {
        self.reserve_for(bytes, peer, wait, Some(holder)).await
    }

    /// An address's share, in KiB.
    fn share_kib(&self) -> usize {
        usize::try_from(self.share() >> 10).unwrap_or(usize::MAX)
    }

    /// `bytes` in KiB, at least one and at most an address's share.
    fn kib_for(&self, bytes: u64) -> usize {
        usize::try_from(bytes.div_ceil(1024))
            .unwrap_or(usize::MAX)
            .clamp(1, self.share_kib())
    }

    /// Makes `r` — an answer's, carried from the chunk it wrote to its next — hold `bytes`
    /// (at most a share): gives back what it holds beyond, and takes what it lacks only if it
    /// is free now with nobody waiting. An answer that has begun goes on with what it holds
    /// rather than queue again behind others.
    pub(super) fn refit(&self, r: &mut Reservation, bytes: u64) {
        r._whole.start();
        let kib = self.kib_for(bytes);
        if kib < r.kib {
            r.give_back(r.kib - kib);
        } else if kib > r.kib {
            r.try_grow(kib - r.kib);
        }
    }

    async fn reserve_for(
        &self,
        bytes: u64,
        peer: Option<IpAddr>,
        wait: Duration,
        holder: Option<(&Hangup, &Arc<Progress>)>,
    ) -> Option<Reservation> {
        let kib = self.kib_for(bytes);
        let n = u32::try_from(kib).unwrap_or(u32::MAX);
        let deadline = tokio::time::Instant::now() + wait;
        let address = peer.map(ClientAddress::from);
        let reclaims = holder.is_some();
        let share = match address {
            Some(address) => {
                let own = Arc::clone(
                    self.shares
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(address)
                        .or_insert_with(|| Arc::new(Semaphore::new(self.share_kib()))),
                );
                let take = tokio::time::timeout_at(deadline, own.acquire_many_owned(n));
                let permit = self
                    .reclaiming(take, reclaims.then_some(Scope::Own(Some(address))))
                    .await
                    .ok()?
                    .ok()?;
                Some(Share {
                    permit: Some(permit),
                    address,
                    shares: Arc::clone(&self.shares),
                })
            }
            None => None,
        };
        let take = self.whole.acquire(kib, address, deadline);
        let whole = self
            .reclaiming(take, reclaims.then_some(Scope::Heavier(address)))
            .await?;
        let mut r = Reservation {
            kib,
            _held: None,
            _whole: whole,
            _share: share,
        };
        if let Some((hangup, progress)) = holder {
            // For an answer that has written nothing yet, its address's holding is not counted
            // when one of its answers that has begun asks whether it owes its chunk's memory
            // to waiters (`Reservation::owed_to_waiters`).
            if progress.bytes() == 0 {
                r._whole.unstarted();
            }
            let id = self.next_holder.fetch_add(1, Ordering::Relaxed);
            let entry = Holder {
                address,
                conn: hangup.connection(),
                kib,
                hangup: hangup.clone(),
                progress: Arc::clone(progress),
                since: clock_ms(),
            };
            self.holders
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(id, entry);
            r._held = Some(Held {
                id,
                holders: Arc::clone(&self.holders),
            });
        }
        Some(r)
    }

    /// Awaits `wait`, closing a stale holder in `scope` each `RECLAIM_EVERY` meanwhile.
    async fn reclaiming<T>(&self, wait: impl Future<Output = T>, scope: Option<Scope>) -> T {
        tokio::pin!(wait);
        let Some(scope) = scope else {
            return wait.await;
        };
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(start + RECLAIM_EVERY, RECLAIM_EVERY);
        loop {
            tokio::select! {
                r = &mut wait => return r,
                _ = tick.tick() => self.reclaim(scope),
            }
        }
    }
}

/// A request body that takes upload memory for what it holds as its bytes arrive, never before:
/// a body announced large and never sent holds nothing, and what a request holds (up to `most`,
/// what its pipeline can hold) is at most twice what its client sent — on a pipeline that
/// writes what it is handed at once, twice what came in the last 5–10 s (at least a floor), so a
/// body dripped slowly gives back what a burst made it take. Each frame is handed on
/// once room for it is reserved, the reservation doubling as bytes come, and nothing more is read
/// meanwhile; a frame that finds no room within `wait` ends the body with `Error::Busy`. Body
/// errors become `Error::Body`.
pub struct Metered<S> {
    inner: S,
    budget: Arc<Budget>,
    peer: Option<IpAddr>,
    wait: Duration,
    most: u64,
    /// Where what the body holds is only what came lately (a pipeline that writes what it is
    /// handed at once): the least it keeps, and what came in the current and the last window
    /// of `RECENT`. `None`: what came stays held (S3 parts gather until they are whole).
    recent: Option<Recent>,
    received: u64,
    reserved: u64,
    held: Vec<Reservation>,
    /// A frame read and waiting for room, and the reservation it waits for.
    waiting: Option<(Bytes, Pending)>,
}

/// The bytes a body brought lately, over two windows of `RECENT`.
struct Recent {
    floor: u64,
    since: tokio::time::Instant,
    bytes: [u64; 2],
}

/// A window of what a body brought lately.
const RECENT: Duration = Duration::from_secs(5);

impl Recent {
    fn add(&mut self, n: u64) {
        let now = tokio::time::Instant::now();
        let windows = now.duration_since(self.since).as_secs() / RECENT.as_secs();
        if windows > 0 {
            self.bytes = match windows {
                1 => [self.bytes[1], 0],
                _ => [0, 0],
            };
            self.since += RECENT * u32::try_from(windows).unwrap_or(u32::MAX);
        }
        self.bytes[1] += n;
    }

    /// What the body may hold now: twice what came in the last window or two, at least the floor.
    fn holds(&self) -> u64 {
        (2 * (self.bytes[0] + self.bytes[1])).max(self.floor)
    }
}

type Pending = Pin<Box<dyn Future<Output = Option<Reservation>> + Send>>;

impl<S> Metered<S> {
    /// `most`: what the body can hold in memory at once (cut to an address's share); `floor`:
    /// for a pipeline that writes what it is handed at once, what it may hold whatever came
    /// lately (its gathering of small frames).
    pub(super) fn new(
        inner: S,
        budget: Arc<Budget>,
        (most, floor): (u64, Option<u64>),
        peer: Option<IpAddr>,
        wait: Duration,
    ) -> Metered<S> {
        let most = most.min(budget.share()) & !1023;
        Metered {
            inner,
            budget,
            peer,
            wait,
            most,
            recent: floor.map(|floor| Recent {
                floor,
                since: tokio::time::Instant::now(),
                bytes: [0, 0],
            }),
            received: 0,
            reserved: 0,
            held: Vec::new(),
            waiting: None,
        }
    }

    /// Gives back what the reservation holds beyond `want` (whole KiB).
    fn shrink_to(&mut self, want: u64) {
        let mut excess = usize::try_from(self.reserved.saturating_sub(want) >> 10).unwrap_or(0);
        while excess > 0
            && let Some(last) = self.held.last_mut()
        {
            let kib = excess.min(last.kib);
            last.give_back(kib);
            self.reserved -= (kib as u64) << 10;
            excess -= kib;
            if last.kib == 0 {
                self.held.pop();
            }
        }
    }
}

impl<S, E> Stream for Metered<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    type Item = ContentResult<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.waiting.is_none() {
            let frame = match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Some(Err(Error::Body(e.to_string())))),
                None => return Poll::Ready(None),
            };
            let n = frame.len() as u64;
            this.received += n;
            let want = match &mut this.recent {
                Some(recent) => {
                    recent.add(n);
                    recent.holds().min(this.received).min(this.most)
                }
                None => this.received.min(this.most),
            };
            if want <= this.reserved {
                // A body that slowed down gives back what it no longer holds.
                if this.recent.is_some() {
                    this.shrink_to(want);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            let step = (want - this.reserved)
                .max(this.reserved)
                .min(this.most - this.reserved);
            let (budget, peer, wait) = (Arc::clone(&this.budget), this.peer, this.wait);
            let reserve: Pending = Box::pin(async move { budget.reserve(step, peer, wait).await });
            this.waiting = Some((frame, reserve));
        }
        let Some((_, reserve)) = &mut this.waiting else {
            return Poll::Pending;
        };
        let reservation = ready!(reserve.as_mut().poll(cx));
        let Some((frame, _)) = this.waiting.take() else {
            return Poll::Pending;
        };
        match reservation {
            Some(r) => {
                this.reserved += r.bytes();
                this.held.push(r);
                Poll::Ready(Some(Ok(frame)))
            }
            None => Poll::Ready(Some(Err(Error::Busy(
                "the registry's upload memory is taken by other uploads; retry shortly".into(),
            )))),
        }
    }
}

impl Budget {
    /// Closes the holder of a stale reservation in `scope`, at most once per `RECLAIM_GAP` for
    /// the budget: first one whose connection writes nothing at all, then of the address
    /// holding the most, then the quietest.
    fn reclaim(&self, scope: Scope) {
        let now = clock_ms();
        let last = self.reclaimed_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < ms(RECLAIM_GAP) {
            return;
        }
        let hangup = {
            let holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
            let mut per_address: HashMap<Option<ClientAddress>, usize> = HashMap::new();
            for h in holders.values() {
                *per_address.entry(h.address).or_default() += h.kib;
            }
            let held = |a: &Option<ClientAddress>| per_address.get(a).copied().unwrap_or(0);
            // What each connection holds for answers that write (fresh) and for stale ones. A
            // client reading one stream while the next waits its turn (HTTP/2) is closed only
            // when no wholly stalled connection is left, and not at all while what it holds
            // for answers that write is as much as what it holds for stale ones: a stream read
            // slowly cannot shelter many that are never read.
            let mut conns: HashMap<usize, (usize, usize)> = HashMap::new();
            for h in holders.values() {
                let c = conns.entry(h.conn).or_default();
                if h.stale(now) {
                    c.1 += h.kib;
                } else {
                    c.0 += h.kib;
                }
            }
            let writing = |h: &Holder| conns.get(&h.conn).is_some_and(|c| c.0 > 0);
            let sheltered = |h: &Holder| conns.get(&h.conn).is_some_and(|c| c.0 > 0 && c.0 >= c.1);
            // A connection with a stale holder (one that writes holds more for stale answers
            // than for those that write, else it is sheltered; closing is by connection): of
            // the waiter's own address (not one that writes: it would only close the waiter's
            // own reading), or of any address holding more than the waiter's: never a lighter
            // address's, nor one holding as much.
            holders
                .values()
                .filter(|h| match scope {
                    Scope::Own(mine) => h.address == mine && !writing(h),
                    Scope::Heavier(mine) => held(&h.address) > held(&mine) && !sheltered(h),
                })
                .max_by_key(|h| {
                    (
                        !writing(h),
                        held(&h.address),
                        h.progress.quiet_for(now),
                        std::cmp::Reverse(h.address),
                    )
                })
                .map(|h| h.hangup.clone())
        };
        if let Some(hangup) = hangup {
            self.reclaimed_at.store(now.max(1), Ordering::Relaxed);
            self.reclaimed.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("closing a connection that holds memory it does not use");
            hangup.hang_up();
        }
    }

    /// Holders closed by `reclaim` so far.
    pub(super) fn reclaimed(&self) -> u64 {
        self.reclaimed.load(Ordering::Relaxed)
    }
}

/// The start of `reclaim`'s clock.
static EPOCH: std::sync::OnceLock<tokio::time::Instant> = std::sync::OnceLock::new();

fn kib_of(bytes: u64) -> usize {
    usize::try_from(bytes >> 10)
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Closed = tokio::sync::mpsc::UnboundedSender<&'static str>;

    /// A holder on a connection of its own that says when it is closed, with its answer's
    /// progress.
    fn holder(name: &'static str, closed: &Closed) -> (Hangup, Arc<Progress>) {
        let closed = closed.clone();
        let hangup = Hangup::new(move || {
            let _ = closed.send(name);
        });
        (hangup, Progress::new())
    }

    /// Another answer on `on`'s connection.
    fn beside(on: &(Hangup, Arc<Progress>)) -> (Hangup, Arc<Progress>) {
        (on.0.clone(), Progress::new())
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    const WAIT: Duration = Duration::from_secs(30);

    /// A reservation of 256 KiB from `at` that waits (closing stale holders meanwhile).
    fn waiter(b: &Arc<Budget>, at: &'static str, closed: &Closed) -> tokio::task::JoinHandle<bool> {
        let (b, mine) = (Arc::clone(b), holder("waiter", closed));
        tokio::spawn(async move {
            b.reserve_or_reclaim(256 << 10, ip(at), WAIT, (&mine.0, &mine.1))
                .await
                .is_some()
        })
    }

    /// `bytes` reserved for `holder` from `at`, its answer having written a first piece.
    async fn take(
        b: &Budget,
        bytes: u64,
        at: &str,
        (hangup, progress): &(Hangup, Arc<Progress>),
    ) -> Reservation {
        let r = b
            .reserve_or_reclaim(bytes, ip(at), WAIT, (hangup, progress))
            .await
            .unwrap();
        progress.touch(16 << 10);
        r
    }

    /// `take`, its answer having written nothing (an HTTP/2 stream whose window never opens).
    async fn pin(
        b: &Budget,
        bytes: u64,
        at: &str,
        (hangup, progress): &(Hangup, Arc<Progress>),
    ) -> Reservation {
        b.reserve_or_reclaim(bytes, ip(at), WAIT, (hangup, progress))
            .await
            .unwrap()
    }

    /// The next holder closed, within `within`.
    async fn next_closed(
        closed: &mut tokio::sync::mpsc::UnboundedReceiver<&'static str>,
        within: Duration,
    ) -> Option<&'static str> {
        tokio::time::timeout(within, closed.recv())
            .await
            .ok()
            .flatten()
    }

    /// Stamps each of `progress` every `every` with a piece that ends a chunk, like readers
    /// that drain steadily (their chunks sized to what they drain).
    fn keep_writing(progress: Vec<Arc<Progress>>, every: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for p in &progress {
                    p.touch(16 << 10);
                    p.chunk_written(16 << 10, 0);
                }
            }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reservation_closes_the_stale_holder_of_the_heaviest_address() {
        let b = Arc::new(Budget::new(4 << 20));
        let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        let h = |name| holder(name, &tx);
        // An old light holder, the heaviest, one writing lately, and fresh ones.
        let (light, heavy, moving) = (h("light"), h("heavy"), h("moving"));
        let _light = take(&b, 256 << 10, "10.0.0.1", &light).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let kept = take(&b, 1 << 20, "10.0.0.2", &heavy).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let _moving = take(&b, 512 << 10, "10.0.0.3", &moving).await;
        tokio::time::sleep(Duration::from_secs(4)).await;
        moving.1.touch(256 << 10);
        let (fresh, fresh_too, last) = (h("fresh"), h("fresh too"), h("last"));
        let _fresh = take(&b, 768 << 10, "10.0.0.4", &fresh).await;
        let _fresh_too = take(&b, 768 << 10, "10.0.0.5", &fresh_too).await;
        let _last = take(&b, 768 << 10, "10.0.0.7", &last).await;
        assert_eq!(b.free(), 0);
        // A newcomer waits for the whole: after a second, the stale holder of the heaviest
        // address is closed (not the lighter stale one, not the fresh ones, not one that has
        // been holding long but writes)...
        let newcomer = waiter(&b, "10.0.0.6", &tx);
        let within = Duration::from_millis(1500);
        assert_eq!(next_closed(&mut closed, within).await, Some("heavy"));
        // ... once a second while it waits, and it gets its room when a holder gives it back.
        assert_eq!(next_closed(&mut closed, within).await, Some("heavy"));
        drop(kept);
        assert!(newcomer.await.unwrap());
        assert_eq!(b.reclaimed(), 2);
        // Nobody waits now: nothing more is closed.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(closed.try_recv().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn readers_that_drain_steadily_are_never_closed_however_much_they_hold() {
        let b = Arc::new(Budget::new(4 << 20));
        let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        // A slow reader that writes a piece each 4 s, the heaviest of all, and others that
        // drain faster take everything.
        let slow = holder("slow reader", &tx);
        let _slow = take(&b, 1 << 20, "10.0.0.1", &slow).await;
        let pins = [holder("a", &tx), holder("b", &tx), holder("c", &tx)];
        let _a = take(&b, 1 << 20, "10.0.0.2", &pins[0]).await;
        let _b = take(&b, 1 << 20, "10.0.0.3", &pins[1]).await;
        let _c = take(&b, 1 << 20, "10.0.0.4", &pins[2]).await;
        assert_eq!(b.free(), 0);
        let slow_writes = keep_writing(vec![Arc::clone(&slow.1)], Duration::from_secs(4));
        let others_write = keep_writing(
            pins.iter().map(|p| Arc::clone(&p.1)).collect(),
            Duration::from_secs(1),
        );
        // A newcomer waits for the whole for 20 s: nobody is closed for it.
        let newcomer = waiter(&b, "10.0.0.6", &tx);
        let first = next_closed(&mut closed, Duration::from_secs(20)).await;
        assert_eq!(first, None);
        // The slow reader stops: within its 5 s it is closed.
        slow_writes.abort();
        let stopped = next_closed(&mut closed, Duration::from_secs(7)).await;
        assert_eq!(stopped, Some("slow reader"));
        newcomer.abort();
        others_write.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_chunk_held_ten_seconds_is_stale_however_its_pieces_trickle() {
        let b = Arc::new(Budget::new(4 << 20));
        let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        // Four addresses hold everything with chunks their readers take a piece of every 4 s
        // (never quiet for 5 s) and never finish.
        let trickles: Vec<_> = (0..4).map(|_| holder("trickle", &tx)).collect();
        let mut held = Vec::new();
        for (i, t) in trickles.iter().enumerate() {
            held.push(take(&b, 1 << 20, &format!("10.0.0.{}", i + 1), t).await);
        }
        assert_eq!(b.free(), 0);
        let pieces = tokio::spawn({
            let p: Vec<_> = trickles.iter().map(|t| Arc::clone(&t.1)).collect();
            async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(4)).await;
                    for p in &p {
                        p.touch(16 << 10);
                    }
                }
            }
        });
        // A newcomer waits: nobody is closed until a chunk has been held for 10 s...
        let newcomer = waiter(&b, "10.0.0.6", &tx);
        let early = next_closed(&mut closed, Duration::from_millis(9500)).await;
        assert_eq!(early, None);
        // ... then one is, and the newcomer gets its room.
        let late = next_closed(&mut closed, Duration::from_secs(2)).await;
        assert_eq!(late, Some("trickle"));
        held.pop();
        assert!(newcomer.await.unwrap());
        pieces.abort();
    }

    #[test]
    fn a_chunk_is_sized_to_two_seconds_of_what_the_last_drained() {
        let p = Progress::new();
        assert_eq!(p.drain_size(16 << 10), None);
        // 256 KiB made 500 ms ago and written now: 512 KiB/s, so 1 MiB for the next.
        let made = clock_ms();
        std::thread::sleep(Duration::from_millis(500));
        let rate = p.chunk_written(256 << 10, made);
        assert!((480 << 10..=520 << 10).contains(&rate), "{rate}");
        let next = p.drain_size(16 << 10).unwrap();
        assert!((960 << 10..=1040 << 10).contains(&next), "{next}");
        // A chunk read ahead (made with the one before) counts from when the one before was
        // written, not when it was made: 256 KiB in 250 ms.
        std::thread::sleep(Duration::from_millis(250));
        let rate = p.chunk_written(256 << 10, made);
        assert!((900 << 10..=1100 << 10).contains(&rate), "{rate}");
        // One drained at a trickle gets the least.
        std::thread::sleep(Duration::from_millis(200));
        let rate = p.chunk_written(16 << 10, 0);
        assert!(rate < 100 << 10, "{rate}");
        std::thread::sleep(Duration::from_secs(1));
        p.chunk_written(1 << 10, 0);
        assert_eq!(p.drain_size(16 << 10), Some(16 << 10));
    }

    #[tokio::test(start_paused = true)]
    async fn memory_held_for_answers_not_begun_does_not_make_a_draining_one_owe() {
        let b = Arc::new(Budget::new(4 << 20));
        let (tx, _closed) = tokio::sync::mpsc::unbounded_channel();
        // A client reads one stream while the next, its memory granted, has written nothing.
        let client = holder("client", &tx);
        let reading = take(&b, 256 << 10, "10.0.0.1", &client).await;
        let queued = beside(&client);
        let mut next = pin(&b, 256 << 10, "10.0.0.1", &queued).await;
        let rest = holder("rest", &tx);
        let mut others = Vec::new();
        for at in ["10.0.0.2", "10.0.0.3", "10.0.0.4"] {
            others.push(take(&b, 1 << 20, at, &rest).await);
        }
        others.push(take(&b, 512 << 10, "10.0.0.5", &rest).await);
        assert_eq!(b.free(), 0);
        let newcomer = waiter(&b, "10.0.0.6", &tx);
        tokio::task::yield_now().await;
        // The waiter holds nothing, as the client would without its reading chunk and the
        // stream not begun: the client keeps its chunk unless it drained slowly.
        assert!(!reading.owed_to_waiters(false));
        assert!(reading.owed_to_waiters(true));
        // Once the queued stream has written its first chunk (carried on), it counts.
        queued.1.touch(16 << 10);
        b.refit(&mut next, 256 << 10);
        assert!(reading.owed_to_waiters(false));
        newcomer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn streams_that_never_wrote_are_stale_two_seconds_after_they_began() {
        let b = Arc::new(Budget::new(8 << 20));
        let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        // One address holds a stream that never reads, as if opened again and again; another
        // holds more, but its answer wrote a piece (a reader that drains).
        let reader = holder("reader", &tx);
        let _reader = take(&b, 2 << 20, "10.0.0.1", &reader).await;
        let reopened = holder("reopened", &tx);
        let _reopened = pin(&b, 1536 << 10, "10.0.0.2", &reopened).await;
        let rest = holder("rest", &tx);
        let _rest = take(&b, 2 << 20, "10.0.0.3", &rest).await;
        let _more = take(&b, 2 << 20, "10.0.0.4", &rest).await;
        let _last = take(&b, 512 << 10, "10.0.0.5", &rest).await;
        assert_eq!(b.free(), 0);
        // A newcomer waits: the never-read stream is closed 2 s after it began, though the
        // reader has been quiet as long and holds more.
        let newcomer = waiter(&b, "10.0.0.6", &tx);
        let first = next_closed(&mut closed, Duration::from_millis(1500)).await;
        assert_eq!(first, None);
        let first = next_closed(&mut closed, Duration::from_millis(1500)).await;
        assert_eq!(first, Some("reopened"));
        newcomer.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_writes_shelters_no_more_than_it_reads() {
        let b = Arc::new(Budget::new(8 << 20));
        let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        // An HTTP/2 client reads one stream while the next waits its turn.
        let client = holder("client", &tx);
        let _reading = take(&b, 1 << 20, "10.0.0.1", &client).await;
        let _queued = pin(&b, 512 << 10, "10.0.0.1", &beside(&client)).await;
        // A connection that never reads, and one that reads a stream slowly to shelter four
        // that are never read.
        let x = holder("x", &tx);
        let mut stalled = Some(pin(&b, 512 << 10, "10.0.0.2", &x).await);
        let shelter = holder("shelter", &tx);
        let mut sheltered = vec![take(&b, 256 << 10, "10.0.0.3", &shelter).await];
        for _ in 0..4 {
            sheltered.push(pin(&b, 256 << 10, "10.0.0.3", &beside(&shelter)).await);
        }
        let rest = holder("rest", &tx);
        let _rest = take(&b, 2 << 20, "10.0.0.4", &rest).await;
        let _more = take(&b, 2 << 20, "10.0.0.5", &rest).await;
        let _last = take(&b, 768 << 10, "10.0.0.7", &rest).await;
        assert_eq!(b.free(), 0);
        let reads = keep_writing(
            vec![
                Arc::clone(&client.1),
                Arc::clone(&shelter.1),
                Arc::clone(&rest.1),
            ],
            Duration::from_secs(1),
        );
        // Waiting for the whole, a newcomer closes the wholly stalled connection first...
        let newcomer = tokio::spawn({
            let (b, mine) = (Arc::clone(&b), holder("newcomer", &tx));
            async move {
                b.reserve_or_reclaim(2 << 20, ip("10.0.0.6"), WAIT, (&mine.0, &mine.1))
                    .await
                    .is_some()
            }
        });
        let first = next_closed(&mut closed, Duration::from_secs(4)).await;
        assert_eq!(first, Some("x"));
        stalled.take();
        // ... then the one whose reading shelters more than it holds for it...
        let next = next_closed(&mut closed, Duration::from_secs(2)).await;
        assert_eq!(next, Some("shelter"));
        sheltered.clear();
        // ... and never the client's, though its address holds the most and the newcomer
        // still waits.
        let last = next_closed(&mut closed, Duration::from_secs(5)).await;
        assert_eq!(last, None);
        assert!(!newcomer.is_finished());
        newcomer.abort();
        reads.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiter_never_closes_holders_of_an_address_holding_no_more_than_its_own() {
        let b = Arc::new(Budget::new(4 << 20));
        let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        // The first of five addresses holding as much is quiet; a sixth holds a little.
        let quiet = holder("quiet", &tx);
        let _quiet = take(&b, 768 << 10, "10.0.0.1", &quiet).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        let others: Vec<_> = (2..7).map(|_| holder("other", &tx)).collect();
        let mut held = Vec::new();
        for (i, h) in others.iter().enumerate() {
            let bytes = if i < 4 { 768 << 10 } else { 256 << 10 };
            held.push(take(&b, bytes, &format!("10.0.0.{}", i + 2), h).await);
        }
        assert_eq!(b.free(), 0);
        // One of those holding as much waits for the whole: the quiet one is not closed for it.
        let more = waiter(&b, "10.0.0.2", &tx);
        let first = next_closed(&mut closed, Duration::from_secs(3)).await;
        assert_eq!(first, None);
        more.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_reservation_waiting_for_its_own_share_closes_only_its_own_stalled_connections() {
        let b = Arc::new(Budget::new(8 << 20));
        let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        // Another address has stopped reading, its memory held.
        let stopped = holder("stopped", &tx);
        let _stopped = take(&b, 512 << 10, "10.0.0.1", &stopped).await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        // An address fills its share: a connection reading one answer while another waits its
        // turn, and one that stalls after its first piece.
        let reading = holder("reading", &tx);
        let _reading = take(&b, 512 << 10, "10.0.0.2", &reading).await;
        let _queued = pin(&b, 512 << 10, "10.0.0.2", &beside(&reading)).await;
        let stalls = holder("stalls", &tx);
        let _stalls = take(&b, 1 << 20, "10.0.0.2", &stalls).await;
        let reads = keep_writing(vec![Arc::clone(&reading.1)], Duration::from_secs(1));
        let more = waiter(&b, "10.0.0.2", &tx);
        // The other address's holder is never closed for it, nor its own connection that
        // reads; its own stalled one is, once stale.
        let first = next_closed(&mut closed, Duration::from_secs(4)).await;
        assert_eq!(first, None);
        let first = next_closed(&mut closed, Duration::from_secs(3)).await;
        assert_eq!(first, Some("stalls"));
        let next = next_closed(&mut closed, Duration::from_secs(3)).await;
        assert_eq!(next, Some("stalls"));
        more.abort();
        reads.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_goes_on_with_its_memory_without_queueing_behind_waiters() {
        let b = Arc::new(Budget::new(4 << 20));
        let (tx, _closed) = tokio::sync::mpsc::unbounded_channel();
        let answer = holder("answer", &tx);
        let mut carried = take(&b, 256 << 10, "10.0.0.1", &answer).await;
        // Room is free and nobody waits: it grows to what its next chunk wants.
        b.refit(&mut carried, 512 << 10);
        assert_eq!(carried.bytes(), 512 << 10);
        let rest = holder("rest", &tx);
        let mut others = Vec::new();
        for (at, bytes) in [
            ("10.0.0.2", 1 << 20),
            ("10.0.0.4", 1 << 20),
            ("10.0.0.5", 1 << 20),
        ] {
            others.push(take(&b, bytes, at, &rest).await);
        }
        others.push(take(&b, 512 << 10, "10.0.0.6", &rest).await);
        b.refit(&mut carried, 256 << 10);
        assert_eq!(b.free(), 256 << 10);
        // Others wait for room: it does not take what they wait for, and goes on with what it
        // holds; what it gives back goes to them.
        let queued = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.reserve(384 << 10, ip("10.0.0.3"), WAIT).await.is_some() }
        });
        tokio::task::yield_now().await;
        b.refit(&mut carried, 512 << 10);
        assert_eq!(carried.bytes(), 256 << 10);
        b.refit(&mut carried, 64 << 10);
        assert_eq!(carried.bytes(), 64 << 10);
        // (The waiter's task has ended, its room given back.)
        assert!(queued.await.unwrap());
        assert_eq!(b.free(), 448 << 10);
    }
}
