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

use crate::types::{ClientAddress, Hangup};

type Shares = Arc<Mutex<HashMap<ClientAddress, Arc<Semaphore>>>>;

/// Reservations whose holders can be closed (`Hangup`), by id.
type Holders = Arc<Mutex<HashMap<u64, Holder>>>;

/// Bytes in flight, counted in KiB.
pub(super) struct Budget {
    permits: Arc<Semaphore>,
    capacity_kib: AtomicUsize,
    /// Each address's share while it has a reservation or a waiter (then dropped).
    shares: Shares,
    holders: Holders,
    next_holder: AtomicU64,
    /// When a holder was last closed to take its memory back (`clock`), and how many were.
    reclaimed_at: AtomicU64,
    reclaimed: AtomicU64,
}

/// A reservation held this long without being given back is *stale*: for a pull's chunk, its
/// client has not read it (256 KiB) in that time.
const STALE: Duration = Duration::from_secs(5);
/// A reservation that waits closes the holder of a stale one each this often (`reclaim`), and
/// the budget closes one at most each `RECLAIM_GAP` whoever waits.
const RECLAIM_EVERY: Duration = Duration::from_secs(1);
const RECLAIM_GAP: Duration = Duration::from_millis(100);

/// A reservation's holder, as `reclaim` chooses among them.
struct Holder {
    address: Option<ClientAddress>,
    since: tokio::time::Instant,
    kib: usize,
    hangup: Hangup,
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
    _whole: OwnedSemaphorePermit,
    _share: Option<Share>,
}

impl Reservation {
    /// What it holds, in bytes.
    pub(super) fn bytes(&self) -> u64 {
        (self.kib as u64) << 10
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
            permits: Arc::new(Semaphore::new(kib)),
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
        if want > had {
            self.permits.add_permits(want - had);
        } else {
            self.permits.forget_permits(had - want);
        }
    }

    /// The most one address may hold, in bytes.
    pub(super) fn share(&self) -> u64 {
        ((self.capacity_kib.load(Ordering::Relaxed).max(1) / 4).max(1) as u64) << 10
    }

    /// Not reserved now, in bytes.
    pub(super) fn free(&self) -> u64 {
        (self.permits.available_permits() as u64) << 10
    }

    /// Reserves `bytes` (at most an address's share) for a client at `peer`: from the
    /// address's share, then from the whole, both in arrival order. `None` once `wait` passed.
    pub(super) async fn reserve(
        &self,
        bytes: u64,
        peer: Option<IpAddr>,
        wait: Duration,
    ) -> Option<Reservation> {
        let per_address = usize::try_from(self.share() >> 10).unwrap_or(usize::MAX);
        let kib = usize::try_from(bytes.div_ceil(1024))
            .unwrap_or(usize::MAX)
            .clamp(1, per_address);
        let n = u32::try_from(kib).unwrap_or(u32::MAX);
        let deadline = tokio::time::Instant::now() + wait;
        let share = match peer {
            Some(ip) => {
                let address = ClientAddress::from(ip);
                let own = Arc::clone(
                    self.shares
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(address)
                        .or_insert_with(|| Arc::new(Semaphore::new(per_address))),
                );
                let permit = tokio::time::timeout_at(deadline, own.acquire_many_owned(n))
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
        let whole =
            tokio::time::timeout_at(deadline, Arc::clone(&self.permits).acquire_many_owned(n))
                .await
                .ok()?
                .ok()?;
        Some(Reservation {
            kib,
            _held: None,
            _whole: whole,
            _share: share,
        })
    }
}

/// A request body that takes upload memory for what it holds as its bytes arrive, never before:
/// a body announced large and never sent holds nothing, and what a request holds (up to `most`,
/// what its pipeline can hold) is at most twice what its client sent. Each frame is handed on
/// once room for it is reserved, the reservation doubling as bytes come, and nothing more is read
/// meanwhile; a frame that finds no room within `wait` ends the body with `Error::Busy`. Body
/// errors become `Error::Body`.
pub struct Metered<S> {
    inner: S,
    budget: Arc<Budget>,
    peer: Option<IpAddr>,
    wait: Duration,
    most: u64,
    received: u64,
    reserved: u64,
    held: Vec<Reservation>,
    /// A frame read and waiting for room, and the reservation it waits for.
    waiting: Option<(Bytes, Pending)>,
}

type Pending = Pin<Box<dyn Future<Output = Option<Reservation>> + Send>>;

impl<S> Metered<S> {
    /// `most`: what the body can hold in memory at once (cut to an address's share).
    pub(super) fn new(
        inner: S,
        budget: Arc<Budget>,
        most: u64,
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
            received: 0,
            reserved: 0,
            held: Vec::new(),
            waiting: None,
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
            this.received += frame.len() as u64;
            let want = this.received.min(this.most);
            if want <= this.reserved {
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
    /// `reserve`, for a holder that `hangup` closes: while it waits, stale holders are closed
    /// (`reclaim`), and once it holds, it may be closed in turn if it keeps its reservation
    /// `STALE` while others wait. So clients that stop reading (a socket never read, HTTP/2
    /// streams whose window never opens) hold memory only until someone needs it.
    pub(super) async fn reserve_or_reclaim(
        &self,
        bytes: u64,
        peer: Option<IpAddr>,
        wait: Duration,
        hangup: Option<&Hangup>,
    ) -> Option<Reservation> {
        let address = peer.map(ClientAddress::from);
        let reserve = self.reserve(bytes, peer, wait);
        tokio::pin!(reserve);
        let start = tokio::time::Instant::now();
        let mut tick = tokio::time::interval_at(start + RECLAIM_EVERY, RECLAIM_EVERY);
        let mut r = loop {
            tokio::select! {
                r = &mut reserve => break r?,
                _ = tick.tick() => self.reclaim(address),
            }
        };
        if let Some(hangup) = hangup {
            let id = self.next_holder.fetch_add(1, Ordering::Relaxed);
            let holder = Holder {
                address,
                since: tokio::time::Instant::now(),
                kib: r.kib,
                hangup: hangup.clone(),
            };
            let mut holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
            holders.insert(id, holder);
            r._held = Some(Held {
                id,
                holders: Arc::clone(&self.holders),
            });
        }
        Some(r)
    }

    /// Closes the holder of the oldest stale reservation of the address holding the most (the
    /// waiter's own, of those holding as much), at most once per `RECLAIM_GAP` for the budget.
    fn reclaim(&self, mine: Option<ClientAddress>) {
        let now = tokio::time::Instant::now();
        let ms = |t: tokio::time::Instant| u64::try_from(t.elapsed().as_millis()).unwrap_or(0);
        let clock = ms(*EPOCH.get_or_init(tokio::time::Instant::now));
        let last = self.reclaimed_at.load(Ordering::Relaxed);
        let gap = u64::try_from(RECLAIM_GAP.as_millis()).unwrap_or(u64::MAX);
        if last != 0 && clock.saturating_sub(last) < gap {
            return;
        }
        let hangup = {
            let holders = self.holders.lock().unwrap_or_else(PoisonError::into_inner);
            let mut per_address: HashMap<Option<ClientAddress>, usize> = HashMap::new();
            for h in holders.values() {
                *per_address.entry(h.address).or_default() += h.kib;
            }
            holders
                .values()
                .filter(|h| now.duration_since(h.since) >= STALE)
                .max_by_key(|h| {
                    let held = per_address.get(&h.address).copied().unwrap_or(0);
                    (held, h.address == mine, now.duration_since(h.since))
                })
                .map(|h| h.hangup.clone())
        };
        if let Some(hangup) = hangup {
            self.reclaimed_at.store(clock.max(1), Ordering::Relaxed);
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

    /// A hangup that says which holder was closed.
    fn hangup(
        name: &'static str,
        closed: &tokio::sync::mpsc::UnboundedSender<&'static str>,
    ) -> Hangup {
        let closed = closed.clone();
        Hangup::new(move || {
            let _ = closed.send(name);
        })
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reservation_closes_the_oldest_stale_holder_of_the_heaviest_address() {
        let b = Budget::new(4 << 20);
        let (tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        let wait = Duration::from_secs(30);
        let take = |bytes: u64, at: &str, name: &'static str| {
            let (h, peer, b) = (hangup(name, &tx), ip(at), &b);
            async move { b.reserve_or_reclaim(bytes, peer, wait, Some(&h)).await }
        };
        // An old light holder, then heavier ones, and the heaviest only lately.
        let light = take(256 << 10, "10.0.0.1", "light").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let heavy = take(768 << 10, "10.0.0.2", "heavy").await.unwrap();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let other = take(512 << 10, "10.0.0.3", "other").await.unwrap();
        tokio::time::sleep(Duration::from_secs(4)).await;
        let fresh = take(1 << 20, "10.0.0.4", "fresh").await.unwrap();
        let fresh_too = take(1 << 20, "10.0.0.5", "fresh too").await.unwrap();
        let last = take(512 << 10, "10.0.0.7", "last").await.unwrap();
        assert_eq!(b.free(), 0);
        // A newcomer waits: after a second, the stale holder of the heaviest address (not the
        // older light one, not the fresh heavier ones) is closed...
        let newcomer = tokio::spawn({
            let b = Arc::new(b);
            async move {
                let r = b
                    .reserve_or_reclaim(256 << 10, ip("10.0.0.6"), wait, None)
                    .await;
                (r.is_some(), b)
            }
        });
        let first = tokio::time::timeout(Duration::from_millis(1500), closed.recv())
            .await
            .unwrap();
        assert_eq!(first, Some("heavy"));
        // ... once a second while it waits, and it gets its room when a holder gives it back.
        let second = tokio::time::timeout(Duration::from_millis(1500), closed.recv())
            .await
            .unwrap();
        assert_eq!(second, Some("heavy"));
        drop(heavy);
        let (got, b) = newcomer.await.unwrap();
        assert!(got);
        assert_eq!(b.reclaimed(), 2);
        // Nobody waits now: nothing more is closed.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(closed.try_recv().is_err());
        drop((light, other, fresh, fresh_too, last));
        assert_eq!(b.free(), 4 << 20);
    }
}
