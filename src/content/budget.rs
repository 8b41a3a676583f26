//! A node's memory budget for bytes in flight (uploads' bodies, pulls' chunks): reservations
//! wait for room, first from the client address's share (a quarter), then from the whole, so
//! one address — or a few — cannot take what everyone needs.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::types::ClientAddress;

type Shares = Arc<Mutex<HashMap<ClientAddress, Arc<Semaphore>>>>;

/// Bytes in flight, counted in KiB.
pub(super) struct Budget {
    permits: Arc<Semaphore>,
    capacity_kib: AtomicUsize,
    /// Each address's share while it has a reservation or a waiter (then dropped).
    shares: Shares,
}

/// Room reserved in a budget, given back when dropped.
pub struct Reservation {
    _whole: OwnedSemaphorePermit,
    _share: Option<Share>,
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
        let capacity = self.capacity_kib.load(Ordering::Relaxed).max(1);
        let per_address = (capacity / 4).max(1);
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
            _whole: whole,
            _share: share,
        })
    }
}

fn kib_of(bytes: u64) -> usize {
    usize::try_from(bytes >> 10)
        .unwrap_or(usize::MAX)
        .clamp(1, Semaphore::MAX_PERMITS)
}
