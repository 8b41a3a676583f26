//! Which connections are served: at most `max` at once, at most `per_address` from one client
//! address, and, when full, room made for a newcomer rather than refusing it, by closing a
//! connection of an address that holds more than the newcomer's (`Table::victim`).
//!
//! A connection is *busy* while one of its requests is in flight (from the end of its head to the
//! end of its response body) and *waiting* otherwise: before its first request head is complete,
//! and between keep-alive requests. Waiting costs the server nothing but a slot, so a client that
//! opens connections and never finishes a head (slowloris) cannot hold slots against newcomers:
//! each newcomer takes the place of the longest-waiting connection. A request can be kept in
//! flight cheaply too (a body sent a byte at a time), so a busy connection that moves little is
//! shared fairly too: a newcomer from an address that holds fewer connections than another takes
//! a slow one of that address's, never a transfer making progress. Few addresses cannot hold the
//! server against many.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::types::ClientAddress;

/// Milliseconds since the process's first connection: a cheap clock for activity stamps.
pub(super) fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    u64::try_from(
        START
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis(),
    )
    .unwrap_or(u64::MAX)
}

/// What a connection moved: its socket's last byte (the idle timeout), and its progress
/// (admission's judge of a busy connection): the bodies' bytes that really moved, request
/// bodies read by the handlers and answers' bodies written to the connection.
#[derive(Debug, Default)]
pub(super) struct Traffic {
    /// When the socket last read or wrote a byte (`clock_ms`), stamped by the socket itself
    /// (`server::Watched`).
    pub(super) last: AtomicU64,
    /// Request bodies' bytes read by the handlers: a client's pings, window updates, frames of
    /// no use or heads are none (helper-27), nor a body the handler does not read.
    read: AtomicU64,
    /// Answers' bodies' bytes handed to the connection (`server::Moving`)...
    handed: AtomicU64,
    /// ... and what the connection wrote of answers (`server::counted::Counted`, above TLS): on HTTP/2
    /// the payloads of DATA frames only, on HTTP/1 every byte. Answers' progress is the lesser
    /// of the two, counted from the start: a body handed whole to a stream whose window lets a
    /// byte through moves a byte (helper-28), pings and their answers move nothing (helper-34:
    /// counted in the socket's bytes, they paid off bodies handed to such streams), and a body
    /// handed a chunk at a time and drained in bursts after counts whole (helper-33).
    written: AtomicU64,
    /// What of it does not count for its spell (`step_at`), though it does for its balance: a
    /// connection that goes on with a spell handed to it first writes into its kernel's and
    /// TLS's buffers, `ABSORBED`, whether its client reads or not.
    unseen: AtomicU64,
    /// When the connection last made a `STEP` of progress past `unseen`, and that progress by
    /// then; and its progress at its balance's last step.
    step_at: AtomicU64,
    seen_at_step: AtomicU64,
    progress_at_step: AtomicU64,
    /// Its balance against being slow, as of `credit_at` (`clock_ms`): the progress of its
    /// steps less `SLOW_RATE` for the time gone by, kept between `-DEBT` and `CREDIT`
    /// (`Conn::slow`).
    credit: AtomicI64,
    credit_at: AtomicU64,
}

impl Traffic {
    pub(super) fn new(now: u64) -> Traffic {
        let t = Traffic {
            credit: AtomicI64::new(FIRST_CREDIT),
            ..Traffic::default()
        };
        for stamp in [&t.last, &t.step_at, &t.credit_at] {
            stamp.store(now, Ordering::Relaxed);
        }
        t
    }

    /// The socket read or wrote a byte now (TLS's included): the idle timeout's stamp, not
    /// progress.
    pub(super) fn seen(&self) {
        self.last.store(clock_ms(), Ordering::Relaxed);
    }

    /// A handler read `n` bytes of a request body. (The connection's task and its streams' and
    /// handlers' tasks count: a race makes a step off by a few bytes, nothing more.)
    pub(super) fn read(&self, n: usize) {
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        self.step(clock_ms());
    }

    /// `n` bytes of an answer's body were handed to the connection.
    pub(super) fn handed(&self, n: usize) {
        self.handed.fetch_add(n as u64, Ordering::Relaxed);
        self.step(clock_ms());
    }

    /// The connection wrote `n` bytes of answers (see `written`). What it wrote beyond the
    /// bodies handed is heads (HTTP/1): at most a `STEP` of them is kept, so the heads of many
    /// answers without a body cannot pay off a body handed later and never taken.
    pub(super) fn written(&self, n: u64) {
        let cap = self.handed.load(Ordering::Relaxed).saturating_add(STEP);
        let _ = self
            .written
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                Some(w.saturating_add(n).min(cap).max(w))
            });
        self.step(clock_ms());
    }

    /// Its progress since it was admitted.
    fn progress(&self) -> u64 {
        let answers = self
            .handed
            .load(Ordering::Relaxed)
            .min(self.written.load(Ordering::Relaxed));
        self.read.load(Ordering::Relaxed).saturating_add(answers)
    }

    /// Adds a `STEP` of progress made since the last to the credit, and stamps one made past
    /// `unseen` (its spell's). (Not the balance: a client behind an address holding several
    /// connections, reconnecting as it reads through a small receive buffer, was slow before
    /// its kernel had taken `ABSORBED` and cut again and again; helper-36.)
    fn step(&self, now: u64) {
        let progress = self.progress();
        let seen = progress.saturating_sub(self.unseen.load(Ordering::Relaxed));
        if stepped(&self.seen_at_step, seen).is_some() {
            self.step_at.store(now, Ordering::Relaxed);
        }
        if let Some(made) = stepped(&self.progress_at_step, progress) {
            let made = i64::try_from(made).unwrap_or(i64::MAX);
            let credit = self.credit_at(now).saturating_add(made).min(CREDIT);
            self.credit.store(credit, Ordering::Relaxed);
            self.credit_at.store(now, Ordering::Relaxed);
        }
    }

    /// Its balance now: what it had, less `SLOW_RATE` for the time since, down to `-DEBT`.
    fn credit_at(&self, now: u64) -> i64 {
        let ms = now.saturating_sub(self.credit_at.load(Ordering::Relaxed));
        let spent = i64::try_from(ms.min(1 << 32)).unwrap_or(0) * SLOW_RATE / 1000;
        self.credit
            .load(Ordering::Relaxed)
            .saturating_sub(spent)
            .max(-DEBT)
    }

    /// Starts its balance afresh, at `FIRST_CREDIT` (a new busy spell).
    fn no_credit(&self, now: u64) {
        self.credit.store(FIRST_CREDIT, Ordering::Relaxed);
        self.credit_at.store(now, Ordering::Relaxed);
    }
}

/// Moves `mark` to `to` if that is a `STEP` or more past it (for one of callers that race):
/// by how much.
fn stepped(mark: &AtomicU64, to: u64) -> Option<u64> {
    let then = mark.load(Ordering::Relaxed);
    let made = to.saturating_sub(then);
    (made >= STEP
        && mark
            .compare_exchange(then, to, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok())
    .then_some(made)
}

/// A busy connection counts as slow once busy this long (ms)...
const SLOW_AFTER_MS: u64 = 2_000;
/// ... and its progress has fallen behind this many bytes a second: its balance, what it moved
/// less this rate for the time gone by, is below nothing. It counts up to `CREDIT`, so a
/// burst into the kernel's buffers from a client that then stops reading holds up its balance
/// for at most 32 s; and a client reading steadily from a large receive buffer, whose socket
/// the kernel lets move only in bursts seconds apart, is not slow between them (helper-31: four
/// 50 kB/s pulls from one address were cut after each first burst, at 4 s of silence).
/// Its debt is kept to `DEBT`, so a connection that was slow and moves again is not slow once
/// it has made up 4 s.
const SLOW_RATE: i64 = 16 * 1024;
const CREDIT: i64 = 512 * 1024;
const DEBT: i64 = 64 * 1024;
/// A balance starts at one step: progress is counted a `STEP` at a time, so a reader just above
/// `SLOW_RATE` that started at nothing would owe most of a step just before each of its first
/// few (helper-33). A connection that moves nothing is still slow from `SLOW_AFTER_MS`.
const FIRST_CREDIT: i64 = STEP as i64;
/// A busy connection whose bodies have not moved a `STEP` for this long gives way to any
/// newcomer, however few its address holds: otherwise one such connection from each of many
/// addresses would keep everyone out for free. A step, not a byte: a stream whose window
/// opens a byte at a time, or a cheap answer now and then, is not progress (helper-27).
const GONE_MS: u64 = 10_000;
const STEP: u64 = 16 * 1024;
/// A connection's busy spell goes on across its requests unless it waited this long between
/// them: a client that ends a stalled request and starts the next at once (an HTTP/2 stream
/// reset and opened again) does not start afresh, nor does one that pauses a moment between
/// (helper-29: stalls of 8.9 s with pauses of 1.05 s, all in step, kept every connection from
/// being gone, and newcomers waited up to 9 s). A spell starts afresh only after as long a wait
/// as it takes to be gone, and a connection waiting gives way to any address holding fewer.
const PAUSE_MS: u64 = GONE_MS;
/// An address whose gone connection (`GONE_MS`) gave way to a newcomer takes no other's place
/// for this long (it may still connect when a slot is free): otherwise clients that reconnect
/// as soon as they are pushed out, from more addresses than there are slots, push each other
/// out faster than any connection can age to `GONE_MS`, and a newcomer finds none to take the
/// place of (helper-26). A slow connection that gave way for its address holding the most does
/// not count: that is sharing, and a client behind a busy address is not held back for it
/// (helper-27).
const GAVE_WAY_MS: u64 = 30_000;
/// A connection that closes in a busy spell (busy, or waiting under `PAUSE_MS`) hands the
/// spell to its address's next connection within this long: otherwise a client that closes a
/// stalled request before it is gone and reconnects at once, from as many addresses as there
/// are slots, all in step, starts a fresh spell each time and is never gone, and takes the slot
/// its own close freed before a newcomer can (helper-30). Each such close hands its spell to one
/// connection. Clients that hold each slot for 9.5 s from an address of a pool, each address
/// unused for longer than this in between, need 1 + 120 / 9.5, about 14 times as many
/// addresses as slots (helper-31: at 30 s, 2,048 addresses held 256 slots, and newcomers waited
/// up to 28 s).
const SPELL_KEPT_MS: u64 = 120_000;
/// What a fresh connection's writes can put in buffers before its client takes a byte: the
/// kernel's unsent bytes (`UNSENT`, 128 KiB) and rustls's (64 KiB). A connection that
/// goes on with a spell handed to it counts none of it: otherwise a client that reconnects every
/// 9 s and never reads made a step of each connection's first writes, and its spell never went
/// (helper-35: 8 slots held for about 115 B/s each).
const ABSORBED: u64 = UNSENT as u64 + 64 * 1024;
/// Bytes of an answer the kernel keeps unsent for a connection (`TCP_NOTSENT_LOWAT`, set by
/// `server`).
pub(super) const UNSENT: u32 = 128 * 1024;
/// At most this many addresses' spells are kept (about 3 MiB), more than such a pool needs to
/// hold the default 1,024 slots.
const SPELLS_KEPT: usize = 65_536;

/// A served connection, as admission sees it.
#[derive(Debug)]
pub(super) struct Conn {
    id: u64,
    address: ClientAddress,
    /// Requests in flight.
    busy: AtomicU32,
    /// When it was admitted (`clock_ms`).
    admitted: u64,
    /// When it last became waiting (`clock_ms`).
    waiting_since: AtomicU64,
    /// When its busy spell began (`clock_ms`; see `PAUSE_MS`).
    busy_since: AtomicU64,
    traffic: Arc<Traffic>,
    /// Told when a newcomer takes its place, or when it is to give back memory; its task
    /// closes it.
    evicted: tokio::sync::Notify,
}

impl Conn {
    /// Resolves once a newcomer has taken this connection's place, or it is to close.
    pub(super) async fn evicted(&self) {
        self.evicted.notified().await;
    }

    /// Closes it (its task ends it): it holds memory it does not use (`types::Hangup`).
    pub(super) fn close(&self) {
        self.evicted.notify_one();
    }

    /// Marks a request in flight until the guard drops (with the response body).
    pub(super) fn request(self: &Arc<Conn>) -> InFlight {
        let now = clock_ms();
        if self.busy.fetch_add(1, Ordering::AcqRel) == 0
            && now.saturating_sub(self.waiting_since.load(Ordering::Relaxed)) >= PAUSE_MS
        {
            self.busy_since.store(now, Ordering::Relaxed);
            self.traffic.no_credit(now);
        }
        InFlight(Arc::clone(self))
    }

    /// What it moves: its socket's bytes (`server::Watched`) and its bodies' (`server::Moving`).
    pub(super) fn traffic(&self) -> Arc<Traffic> {
        Arc::clone(&self.traffic)
    }

    /// Since when its busy spell has made no `STEP` of progress.
    fn no_step_since(&self) -> u64 {
        let since = self.traffic.step_at.load(Ordering::Relaxed);
        since.max(self.busy_since.load(Ordering::Relaxed))
    }

    /// Busy, and it has not made a `STEP` of progress for `GONE_MS` of its busy spell.
    fn gone(&self, now: u64) -> bool {
        self.busy.load(Ordering::Acquire) > 0 && now.saturating_sub(self.no_step_since()) >= GONE_MS
    }

    /// The start of its busy spell's span without a `STEP` of progress, if it is in a spell:
    /// busy, or waiting under `PAUSE_MS`.
    fn spell(&self, now: u64) -> Option<u64> {
        let in_spell = self.busy.load(Ordering::Acquire) > 0
            || now.saturating_sub(self.waiting_since.load(Ordering::Relaxed)) < PAUSE_MS;
        in_spell.then(|| self.no_step_since())
    }

    /// Busy for a while, and its progress has fallen behind `SLOW_RATE` (its balance is owed):
    /// a body or a reader that holds its place without using it.
    fn slow(&self, now: u64) -> bool {
        // (Its own part of a spell it went on with: a connection is not slow before it began.)
        let busy_since = self.busy_since.load(Ordering::Relaxed).max(self.admitted);
        now.saturating_sub(busy_since) >= SLOW_AFTER_MS && self.traffic.credit_at(now) < 0
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub(super) struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.waiting_since.store(clock_ms(), Ordering::Relaxed);
        }
    }
}

/// What admission decided of a new connection.
#[derive(Debug)]
pub(super) enum Admitted {
    /// Served; the slot is released when the guard drops.
    Yes(Slot),
    /// Served in the place of a waiting or slow connection, which was told to close.
    InPlaceOf(Slot),
    /// Closed at once: its address is at its cap, or every connection is busy.
    No,
}

#[derive(Debug, Default)]
struct Table {
    conns: HashMap<u64, Arc<Conn>>,
    per_address: HashMap<ClientAddress, usize>,
    next_id: u64,
    /// When an address's connection last gave way to a newcomer (`clock_ms`), within
    /// `GAVE_WAY_MS` (older entries are swept as the map grows).
    gave_way: HashMap<ClientAddress, u64>,
    /// Busy spells of an address's connections that closed in them (`SPELL_KEPT_MS`), for its
    /// next connections to go on with.
    spells: HashMap<ClientAddress, Spell>,
    /// When `spells` was last swept (`clock_ms`).
    swept: u64,
}

/// Spells left by an address's closed connections.
#[derive(Debug, Clone, Copy)]
struct Spell {
    /// The earliest start of their spans without a step (`Conn::spell`).
    since: u64,
    /// When the last of them closed.
    at: u64,
    /// How many: each goes on in one new connection.
    left: u32,
}

impl Table {
    /// The connection that gives way to a newcomer whose address holds `mine` connections, from
    /// the address holding the most among those with one that may: a gone busy one
    /// (`Conn::gone`), whatever its address holds; else a connection waiting for a request (the
    /// longest waiting), if its address holds more than the newcomer's; else a slow busy one
    /// (`Conn::slow`; the newest), if its address holds more than the newcomer's would. (Gone
    /// before waiting: a client doing requests back to back on a keep-alive is not cut between
    /// them while stalled connections of addresses holding as many are there to take; helper-31.)
    /// So connections are shared fairly among addresses under contention: an address cannot
    /// push out those of one holding fewer (a newcomer's half-sent head or a keep-alive between
    /// requests included), the few that hold the most give way first (their slow requests
    /// before others' keep-alives), and a transfer making progress is never cut for a newcomer.
    fn victim(&self, mine: usize) -> Option<u64> {
        let now = clock_ms();
        self.conns
            .values()
            .filter_map(|c| {
                let held = self.per_address.get(&c.address).copied().unwrap_or(0);
                let waiting = c.busy.load(Ordering::Acquire) == 0;
                let gone = c.gone(now);
                let may = match waiting {
                    true => held > mine,
                    false => (held > mine + 1 && c.slow(now)) || gone,
                };
                let order = match waiting {
                    true => u64::MAX - c.waiting_since.load(Ordering::Relaxed),
                    false => c.id,
                };
                may.then_some(((held, gone, waiting, order), c.id))
            })
            .max_by_key(|(key, _)| *key)
            .map(|(_, id)| id)
    }

    /// Whether `address`'s connection gave way to a newcomer within `GAVE_WAY_MS`.
    fn gave_way_lately(&self, address: &ClientAddress, now: u64) -> bool {
        self.gave_way
            .get(address)
            .is_some_and(|&at| now.saturating_sub(at) < GAVE_WAY_MS)
    }

    /// Notes that `address`'s connection gave way now, sweeping old entries as the map doubles.
    fn note_gave_way(&mut self, address: ClientAddress, now: u64) {
        if self.gave_way.len() >= 2 * self.conns.len().max(512) {
            self.gave_way
                .retain(|_, &mut at| now.saturating_sub(at) < GAVE_WAY_MS);
        }
        self.gave_way.insert(address, now);
    }

    /// Removes connection `id`; if its client closed it, or it went on with a spell it was
    /// handed, keeps its spell for its address's next connection. (A connection a newcomer took
    /// the place of hands on nothing of its own: if it was gone, its address is held back
    /// instead (`GAVE_WAY_MS`); if it was waiting between requests or slow, a client whose
    /// keep-alive or transfer was taken does not come back gone.)
    fn remove(&mut self, id: u64, closed_by_client: bool) {
        let Some(c) = self.conns.remove(&id) else {
            return;
        };
        if let Some(n) = self.per_address.get_mut(&c.address) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&c.address);
            }
        }
        let now = clock_ms();
        // (One that went on with a spell it was handed gives it back however it ends: else an
        // idle throwaway connection takes the spell, and a connection of the same client
        // takes the throwaway's place; helper-32.)
        let handed = |since: &u64| closed_by_client || *since < c.admitted;
        if let Some(since) = c.spell(now).filter(handed) {
            self.keep_spell(c.address, since, now);
        }
    }

    /// Keeps a spell of `address`'s. Past `SPELLS_KEPT` addresses (far more than there are
    /// slots, closing in spells within `SPELL_KEPT_MS`), old ones are swept, at most once a
    /// second, and new ones not kept until there is room.
    fn keep_spell(&mut self, address: ClientAddress, since: u64, now: u64) {
        if self.spells.len() >= SPELLS_KEPT && !self.spells.contains_key(&address) {
            if now.saturating_sub(self.swept) >= 1_000 {
                self.swept = now;
                self.spells
                    .retain(|_, s| now.saturating_sub(s.at) < SPELL_KEPT_MS);
            }
            if self.spells.len() >= SPELLS_KEPT {
                return;
            }
        }
        let fresh = Spell {
            since,
            at: now,
            left: 0,
        };
        let s = self.spells.entry(address).or_insert(fresh);
        if now.saturating_sub(s.at) >= SPELL_KEPT_MS {
            *s = fresh;
        }
        s.since = s.since.min(since);
        s.at = now;
        s.left = s.left.saturating_add(1);
    }

    /// A spell of `address`'s for a new connection to go on with, if one is kept.
    fn take_spell(&mut self, address: &ClientAddress, now: u64) -> Option<u64> {
        let s = self.spells.get_mut(address)?;
        let since = (now.saturating_sub(s.at) < SPELL_KEPT_MS).then_some(s.since);
        s.left -= 1;
        if s.left == 0 || since.is_none() {
            self.spells.remove(address);
        }
        since
    }
}

/// The connections being served.
#[derive(Debug)]
pub(super) struct Admission {
    max: usize,
    per_address: usize,
    table: Arc<Mutex<Table>>,
}

/// A connection's place in the table; dropping it frees the place.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) conn: Arc<Conn>,
    table: Arc<Mutex<Table>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(self.conn.id, true);
    }
}

impl Admission {
    pub(super) fn new(max: usize, per_address: usize) -> Admission {
        Admission {
            max: max.max(1),
            per_address: per_address.clamp(1, max.max(1)),
            table: Arc::default(),
        }
    }

    /// Admits a connection from `ip`, or not (see the module's rules).
    pub(super) fn admit(&self, ip: IpAddr) -> Admitted {
        let address = ClientAddress::from(ip);
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let mine = t.per_address.get(&address).copied().unwrap_or(0);
        if mine >= self.per_address {
            return Admitted::No;
        }
        let mut evicted = false;
        if t.conns.len() >= self.max {
            let now = clock_ms();
            if t.gave_way_lately(&address, now) {
                return Admitted::No;
            }
            let Some(victim) = t.victim(mine) else {
                return Admitted::No;
            };
            if let Some(c) = t.conns.get(&victim) {
                c.evicted.notify_one();
                // Only a gone connection pushed out counts: a waiting one (a keep-alive, a head
                // not sent) gives way to any address holding fewer, so churning such ones
                // keeps no newcomer out, and a client whose idle keep-alive or slow transfer
                // was taken for its address holding the most is not held back for it.
                if c.gone(now) {
                    let address = c.address;
                    t.note_gave_way(address, now);
                }
            }
            t.remove(victim, false);
            evicted = true;
        }
        let id = t.next_id;
        t.next_id += 1;
        let now = clock_ms();
        // Its busy spell goes on from one its address's last connections closed in, if kept.
        let handed = t.take_spell(&address, now);
        let since = handed.unwrap_or(now);
        let traffic = Traffic::new(now);
        traffic.step_at.store(since, Ordering::Relaxed);
        if handed.is_some() {
            traffic.unseen.store(ABSORBED, Ordering::Relaxed);
        }
        let conn = Arc::new(Conn {
            id,
            address,
            admitted: now,
            busy: AtomicU32::new(0),
            waiting_since: AtomicU64::new(now),
            busy_since: AtomicU64::new(since),
            traffic: Arc::new(traffic),
            evicted: tokio::sync::Notify::new(),
        });
        t.conns.insert(id, Arc::clone(&conn));
        *t.per_address.entry(address).or_insert(0) += 1;
        let slot = Slot {
            conn,
            table: Arc::clone(&self.table),
        };
        if evicted {
            Admitted::InPlaceOf(slot)
        } else {
            Admitted::Yes(slot)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Traffic {
        /// `n` bytes of an answer's body handed and written.
        fn both(&self, n: usize) {
            self.seen();
            self.handed(n);
            self.written(n as u64);
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `n` connections from `x`, each with a request in flight.
    fn busy(a: &Admission, x: &str, n: usize) -> Vec<(Slot, InFlight)> {
        (0..n)
            .map(|_| {
                let s = slot(a.admit(ip(x)));
                let r = s.conn.request();
                (s, r)
            })
            .collect()
    }

    fn slot(a: Admitted) -> Slot {
        match a {
            Admitted::Yes(s) | Admitted::InPlaceOf(s) => s,
            Admitted::No => panic!("refused"),
        }
    }

    #[test]
    fn one_address_is_capped_and_an_ipv6_56_is_one_address() {
        let a = Admission::new(10, 2);
        let _x = slot(a.admit(ip("10.0.0.1")));
        let _y = slot(a.admit(ip("10.0.0.1")));
        assert!(matches!(a.admit(ip("10.0.0.1")), Admitted::No));
        let _z = slot(a.admit(ip("10.0.0.2")));
        let _v = slot(a.admit(ip("2001:db8::1")));
        let _w = slot(a.admit(ip("2001:db8::ffff:2")));
        assert!(matches!(a.admit(ip("2001:db8::3")), Admitted::No));
        assert!(matches!(a.admit(ip("2001:db8:0:ff::1")), Admitted::No));
        let _u = slot(a.admit(ip("2001:db8:0:100::1")));
        // An IPv4-mapped address counts as its IPv4 address.
        assert!(matches!(a.admit(ip("::ffff:10.0.0.1")), Admitted::No));
        drop(_x);
        let _again = slot(a.admit(ip("::ffff:10.0.0.1")));
    }

    #[test]
    fn when_all_are_busy_the_address_holding_the_most_gives_way_down_to_a_fair_share() {
        let a = Admission::new(4, 4);
        let held = busy(&a, "10.0.0.1", 4);
        // Busy long enough to be judged, having moved nothing: slow.
        std::thread::sleep(std::time::Duration::from_millis(SLOW_AFTER_MS + 100));
        let count = |a: &Admission, x: &str| {
            a.table
                .lock()
                .unwrap()
                .per_address
                .get(&ClientAddress::from(ip(x)))
                .copied()
        };
        let mut newcomers = Vec::new();
        for (i, x) in ["10.0.0.2", "10.0.0.3", "10.0.0.4"].into_iter().enumerate() {
            let s = match a.admit(ip(x)) {
                Admitted::InPlaceOf(s) => s,
                other => panic!("{x}: {other:?}"),
            };
            let r = s.conn.request();
            newcomers.push((s, r));
            assert_eq!(count(&a, "10.0.0.1"), Some(3 - i));
        }
        // The newest of the heaviest address went first: the oldest request under way stays.
        assert!(
            a.table
                .lock()
                .unwrap()
                .conns
                .contains_key(&held[0].0.conn.id)
        );
        // One each: nobody holds more than a newcomer would, so the next is refused.
        assert!(matches!(a.admit(ip("10.0.0.5")), Admitted::No));
        // ... and so is one more from an address that already holds its share.
        assert!(matches!(a.admit(ip("10.0.0.2")), Admitted::No));
        // Even once all of them are slow.
        std::thread::sleep(std::time::Duration::from_millis(SLOW_AFTER_MS + 100));
        assert!(matches!(a.admit(ip("10.0.0.5")), Admitted::No));
    }

    #[test]
    fn the_address_holding_the_most_gives_way_before_others_keep_alives() {
        let a = Admission::new(4, 4);
        let heavy = busy(&a, "10.0.0.1", 3);
        // A keep-alive client between two requests.
        let kept = slot(a.admit(ip("10.0.0.2")));
        std::thread::sleep(std::time::Duration::from_millis(SLOW_AFTER_MS + 100));
        let _newcomer = match a.admit(ip("10.0.0.3")) {
            Admitted::InPlaceOf(s) => s,
            other => panic!("{other:?}"),
        };
        let table = a.table.lock().unwrap();
        assert!(table.conns.contains_key(&kept.conn.id));
        assert_eq!(
            heavy
                .iter()
                .filter(|(s, _)| table.conns.contains_key(&s.conn.id))
                .count(),
            2
        );
    }

    #[test]
    fn a_busy_connection_whose_bodies_move_under_a_step_gives_way_however_few_its_address_holds() {
        let a = Admission::new(3, 3);
        let held = [
            busy(&a, "10.0.0.1", 1),
            busy(&a, "10.0.0.2", 1),
            busy(&a, "10.0.0.3", 1),
        ];
        // One trickles its body a few bytes at a time, its socket busy with pings; one moves
        // 4 KiB/s of body; the third moves bodies that reach a step only now and then.
        for i in 0..((GONE_MS + 500) / 500) {
            std::thread::sleep(std::time::Duration::from_millis(500));
            held[0][0].0.conn.traffic.both(100);
            held[0][0].0.conn.traffic.seen();
            held[1][0].0.conn.traffic.both(2048);
            if i == 8 {
                held[2][0].0.conn.traffic.both(STEP as usize);
            }
        }
        let now = clock_ms();
        assert!(held[0][0].0.conn.gone(now));
        assert!(!held[1][0].0.conn.gone(now));
        assert!(!held[2][0].0.conn.gone(now));
        let _newcomer = match a.admit(ip("10.0.0.4")) {
            Admitted::InPlaceOf(s) => s,
            other => panic!("{other:?}"),
        };
        let table = a.table.lock().unwrap();
        assert!(!table.conns.contains_key(&held[0][0].0.conn.id));
        assert!(table.conns.contains_key(&held[1][0].0.conn.id));
        assert!(table.conns.contains_key(&held[2][0].0.conn.id));
        // The gone connection's address is held back; a fresh one is not.
        assert!(table.gave_way_lately(&ClientAddress::from(ip("10.0.0.1")), clock_ms()));
    }

    #[test]
    fn a_connection_closed_in_a_stalled_spell_hands_it_to_its_address_next_one() {
        let a = Admission::new(3, 3);
        let [first] = <[_; 1]>::try_from(busy(&a, "10.0.0.1", 1)).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(GONE_MS / 2 + 500));
        // It closes before it is gone (its request first, as a connection's task ends), and
        // its address connects again at once; another address connects for the first time.
        drop(first);
        let again = busy(&a, "10.0.0.1", 1);
        // (Nor is the one that goes on with it slow before its own time.)
        assert!(!again[0].0.conn.slow(clock_ms()));
        let fresh = busy(&a, "10.0.0.2", 1);
        let idle = slot(a.admit(ip("10.0.0.3")));
        // Both write what their kernels and TLS take whether their clients read or not: not
        // a step of the spell handed on (helper-35: a reconnect every 9 s kept it from gone).
        for (s, _) in [&again[0], &fresh[0]] {
            s.conn.traffic.both(ABSORBED as usize);
        }
        // One close hands its spell to one connection.
        let address = ClientAddress::from(ip("10.0.0.1"));
        assert!(!a.table.lock().unwrap().spells.contains_key(&address));
        std::thread::sleep(std::time::Duration::from_millis(GONE_MS / 2));
        let now = clock_ms();
        assert!(again[0].0.conn.gone(now));
        assert!(!fresh[0].0.conn.gone(now));
        let _newcomer = match a.admit(ip("10.0.0.4")) {
            Admitted::InPlaceOf(s) => s,
            other => panic!("{other:?}"),
        };
        // The gone one gives way before a keep-alive of an address holding as many.
        let table = a.table.lock().unwrap();
        assert!(!table.conns.contains_key(&again[0].0.conn.id));
        assert!(table.conns.contains_key(&fresh[0].0.conn.id));
        assert!(table.conns.contains_key(&idle.conn.id));
        // It went on with a spell it was handed: though its place was taken, it gives the
        // spell back (else an idle throwaway connection would take the spell, and a connection
        // of the same client take the throwaway's place; helper-32), and its address is held
        // back.
        assert!(table.spells.contains_key(&address));
        assert!(table.gave_way_lately(&address, clock_ms()));
        drop(table);
        drop((again, fresh, idle, _newcomer));
        // A connection of its own spell whose place was taken hands on nothing: a client
        // whose keep-alive was taken does not come back gone.
        let a = Admission::new(1, 1);
        let own = slot(a.admit(ip("10.0.0.7")));
        let _taker = slot(a.admit(ip("10.0.0.8")));
        assert!(!a.table.lock().unwrap().conns.contains_key(&own.conn.id));
        assert!(a.table.lock().unwrap().spells.is_empty());
    }

    #[test]
    fn a_spell_is_kept_for_two_minutes_and_spells_for_so_many_addresses() {
        let mut t = Table::default();
        let address = |i: u32| ClientAddress::from(IpAddr::from(std::net::Ipv4Addr::from(i)));
        // An address of a pool comes back after 100 s: its spell is still there.
        t.keep_spell(address(1), 5, 10);
        assert_eq!(t.take_spell(&address(1), 100_010), Some(5));
        assert_eq!(t.take_spell(&address(1), 100_010), None);
        t.keep_spell(address(1), 5, 10);
        assert_eq!(t.take_spell(&address(1), SPELL_KEPT_MS + 10), None);
        // Two closes, two spells, the earliest start kept.
        t.keep_spell(address(2), 7, 20);
        t.keep_spell(address(2), 3, 30);
        assert_eq!(t.take_spell(&address(2), 40), Some(3));
        assert_eq!(t.take_spell(&address(2), 40), Some(3));
        assert_eq!(t.take_spell(&address(2), 40), None);
        // Spells of more addresses than a pool holding every slot needs are kept, no more.
        for i in 0..SPELLS_KEPT as u32 + 10 {
            t.keep_spell(address(1000 + i), 0, 50);
        }
        assert_eq!(t.spells.len(), SPELLS_KEPT);
        assert!(SPELLS_KEPT as u64 >= 1024 * (1 + SPELL_KEPT_MS / 9_500));
    }

    #[test]
    fn progress_is_bodies_bytes_really_moved() {
        let a = Admission::new(5, 5);
        let held = [
            busy(&a, "10.0.0.1", 1),
            busy(&a, "10.0.0.2", 1),
            busy(&a, "10.0.0.3", 1),
            busy(&a, "10.0.0.4", 1),
            busy(&a, "10.0.0.5", 1),
        ];
        let traffic = |i: usize| &held[i][0].0.conn.traffic;
        // One had 512 KiB of bodies handed at first, to streams that took a byte each
        // (helper-34); then its socket moves only pings and frames of no use, and it writes
        // heads of answers without bodies (HTTP/1).
        traffic(0).handed(512 << 10);
        traffic(0).written(90);
        for _ in 0..((GONE_MS + 500) / 500) {
            std::thread::sleep(std::time::Duration::from_millis(500));
            traffic(0).seen();
            traffic(4).written(2 << 10);
            // One hands whole bodies to streams that let a byte through (helper-28).
            traffic(1).handed(6 << 10);
            traffic(1).written(40);
            // One reads a few bytes of a request body now and then.
            traffic(2).seen();
            traffic(2).read(10);
            // One moves its body through its socket.
            traffic(3).both(2 << 10);
        }
        let now = clock_ms();
        for gone in [0, 1, 2, 4] {
            assert!(held[gone][0].0.conn.gone(now), "{gone}");
        }
        assert!(!held[3][0].0.conn.gone(now));
    }

    #[test]
    fn heads_written_without_bodies_bank_at_most_a_step() {
        let t = Traffic::new(0);
        // The heads of a thousand answers without a body, then a body handed and not taken.
        for _ in 0..1000 {
            t.written(200);
        }
        t.handed(256 << 10);
        assert_eq!(t.progress(), STEP);
        // Written as it is handed: all of it counts.
        t.written(256 << 10);
        assert_eq!(t.progress(), 256 << 10);
    }

    #[test]
    fn what_buffers_take_is_no_step_of_a_handed_spell_but_counts_for_its_balance() {
        // A reader at 20 kB/s through a small receive buffer, going on with a handed spell:
        // its kernel takes 144 KiB at once.
        let t = Traffic::new(0);
        t.unseen.store(ABSORBED, Ordering::Relaxed);
        t.handed.fetch_add(4 << 20, Ordering::Relaxed);
        t.written.fetch_add(144 << 10, Ordering::Relaxed);
        t.step(0);
        assert_eq!(t.step_at.load(Ordering::Relaxed), 0);
        let mut first_step = None;
        for now in (100..=10_000).step_by(100) {
            t.written.fetch_add(2000, Ordering::Relaxed);
            t.step(now);
            // Never slow (helper-36: cut at 2-3 s, again and again).
            assert!(t.credit_at(now) >= 0, "{now}");
            if first_step.is_none() && t.step_at.load(Ordering::Relaxed) == now {
                first_step = Some(now);
            }
        }
        // Its spell's first step comes once its client took what the buffers held, and a step.
        let first = first_step.unwrap();
        assert!((3_000..6_000).contains(&first), "{first}");
    }

    /// A reader at `rate` bytes a second, its body handed in 256 KiB chunks that its socket
    /// drains in bursts of `burst` bytes: the lowest balance it has over a minute.
    fn lowest_credit_of_a_chunked_reader(rate: u64, burst: u64) -> i64 {
        let t = Traffic::new(0);
        let (mut handed, mut drained, mut lowest) = (0u64, 0u64, i64::MAX);
        let every_ms = burst * 1000 / rate;
        for tick in 1..=(60_000 / every_ms) {
            let now = tick * every_ms;
            if handed - drained < burst {
                t.handed.fetch_add(256 << 10, Ordering::Relaxed);
                handed += 256 << 10;
                t.step(now);
            }
            t.written.fetch_add(burst, Ordering::Relaxed);
            drained += burst;
            t.step(now);
            if now >= SLOW_AFTER_MS {
                lowest = lowest.min(t.credit_at(now));
            }
        }
        lowest
    }

    #[test]
    fn a_reader_above_the_slow_rate_is_not_slow_however_its_body_is_chunked() {
        // helper-33: at 20 kB/s, whose socket drains 4 KiB or 20 KiB at a time, a step that
        // dropped the body's lead counted under half of it.
        for burst in [4 << 10, 20 << 10, 64 << 10] {
            let lowest = lowest_credit_of_a_chunked_reader(20_000, burst);
            assert!(lowest >= 0, "burst {burst}: balance fell to {lowest}");
        }
        // And one under the rate still is.
        assert!(lowest_credit_of_a_chunked_reader(12_000, 4 << 10) < 0);
    }

    #[test]
    fn requests_one_after_another_without_a_pause_are_one_busy_spell() {
        let a = Admission::new(2, 2);
        let churn = slot(a.admit(ip("10.0.0.1")));
        let paused = slot(a.admit(ip("10.0.0.2")));
        // One ends its stalled request and starts the next at once, again and again; the other
        // moved much, and pauses between its requests.
        paused.conn.traffic.both(8 << 20);
        let mut busy = Some(churn.conn.request());
        for _ in 0..((GONE_MS + 1000) / 250) {
            std::thread::sleep(std::time::Duration::from_millis(250));
            drop(busy.take());
            busy = Some(churn.conn.request());
        }
        assert!(churn.conn.gone(clock_ms()));
        std::thread::sleep(std::time::Duration::from_millis(PAUSE_MS + 100));
        let _r = paused.conn.request();
        assert!(!paused.conn.gone(clock_ms()));
        // A new spell starts with no balance: what it moved before does not keep it from slow.
        std::thread::sleep(std::time::Duration::from_millis(SLOW_AFTER_MS + 100));
        assert!(paused.conn.slow(clock_ms()));
    }

    #[test]
    fn a_slow_connection_of_the_address_holding_the_most_gives_way_without_holding_it_back() {
        let a = Admission::new(3, 3);
        let heavy = busy(&a, "10.0.0.1", 3);
        std::thread::sleep(std::time::Duration::from_millis(SLOW_AFTER_MS + 100));
        // Slow but moving steps of body: not gone.
        for (s, _) in &heavy {
            s.conn.traffic.both(STEP as usize);
        }
        let _newcomer = match a.admit(ip("10.0.0.2")) {
            Admitted::InPlaceOf(s) => s,
            other => panic!("{other:?}"),
        };
        let t = a.table.lock().unwrap();
        assert_eq!(
            t.per_address.get(&ClientAddress::from(ip("10.0.0.1"))),
            Some(&2)
        );
        assert!(!t.gave_way_lately(&ClientAddress::from(ip("10.0.0.1")), clock_ms()));
    }

    #[test]
    fn a_burst_then_silence_is_slow_and_a_steady_reader_in_bursts_is_not() {
        let a = Admission::new(3, 3);
        let held = busy(&a, "10.0.0.1", 3);
        let traffic = |i: usize| &held[i].0.conn.traffic;
        // One writes 8 MiB at once (into the kernel's buffers) and then nothing: it is credited
        // with no more than `CREDIT`.
        traffic(0).both(8 << 20);
        assert!(traffic(0).credit_at(clock_ms()) <= CREDIT);
        // One writes 48 KiB and then nothing: slow once its balance, 64 KiB with the one step it
        // starts with, has gone by at `SLOW_RATE`; 9 s later it would owe 80 KiB.
        traffic(1).both(48 << 10);
        // One reads 21 KiB/s from a large receive buffer, which the kernel refills in bursts of
        // 96 KiB every 4.5 s: never slow.
        for _ in 0..2 {
            traffic(2).both(96 << 10);
            for _ in 0..18 {
                std::thread::sleep(std::time::Duration::from_millis(250));
                assert!(!held[2].0.conn.slow(clock_ms()));
            }
        }
        let now = clock_ms();
        assert!(held[1].0.conn.slow(now));
        assert!(!held[0].0.conn.slow(now));
        // What it owes is kept to 4 s of `SLOW_RATE`: moving that much and a little more, the
        // slow one is not slow.
        traffic(1).both(72 << 10);
        assert!(!held[1].0.conn.slow(clock_ms()));
    }

    #[test]
    fn a_busy_connection_making_progress_never_gives_way() {
        let a = Admission::new(4, 4);
        let held = busy(&a, "10.0.0.1", 4);
        std::thread::sleep(std::time::Duration::from_millis(SLOW_AFTER_MS + 100));
        // Three transfer at a healthy rate (well over 16 KiB/s since they began); one does not.
        for (s, _) in &held[..3] {
            s.conn.traffic.both(1 << 20);
        }
        let newcomer = match a.admit(ip("10.0.0.2")) {
            Admitted::InPlaceOf(s) => s,
            other => panic!("{other:?}"),
        };
        let _busy = newcomer.conn.request();
        let table = a.table.lock().unwrap();
        assert!(
            held[..3]
                .iter()
                .all(|(s, _)| table.conns.contains_key(&s.conn.id))
        );
        assert!(!table.conns.contains_key(&held[3].0.conn.id));
        drop(table);
        // Only moving ones are left: the next newcomer is refused.
        assert!(matches!(a.admit(ip("10.0.0.3")), Admitted::No));
    }

    #[test]
    fn an_address_cannot_push_out_the_waiting_connection_of_one_holding_fewer() {
        let a = Admission::new(3, 3);
        let held = busy(&a, "10.0.0.1", 2);
        // A keep-alive client between two requests (or one still sending its head).
        let other = slot(a.admit(ip("10.0.0.2")));
        // The busy address reconnects: it may not take the other's place.
        assert!(matches!(a.admit(ip("10.0.0.1")), Admitted::No));
        assert!(a.table.lock().unwrap().conns.contains_key(&other.conn.id));
        // A newcomer holding nothing may (they would hold one each).
        assert!(matches!(a.admit(ip("10.0.0.3")), Admitted::InPlaceOf(_)));
        assert!(!a.table.lock().unwrap().conns.contains_key(&other.conn.id));
        drop(held);
    }

    #[test]
    fn when_full_the_longest_waiting_connection_gives_way_and_busy_ones_never_do() {
        let a = Admission::new(2, 2);
        let first = slot(a.admit(ip("10.0.0.1")));
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = slot(a.admit(ip("10.0.0.2")));
        // Full: the newcomer takes the place of the longest waiting (the first).
        let third = match a.admit(ip("10.0.0.3")) {
            Admitted::InPlaceOf(s) => s,
            other => panic!("{other:?}"),
        };
        assert!(!a.table.lock().unwrap().conns.contains_key(&first.conn.id));
        assert!(
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
                .block_on(async {
                    tokio::time::timeout(
                        std::time::Duration::from_millis(100),
                        first.conn.evicted(),
                    )
                    .await
                })
                .is_ok(),
            "the evicted connection was not told"
        );
        // The evicted slot's drop does not free the newcomer's place.
        drop(first);
        assert_eq!(a.table.lock().unwrap().conns.len(), 2);
        // Both busy: a newcomer is refused.
        let (_r2, _r3) = (second.conn.request(), third.conn.request());
        assert!(matches!(a.admit(ip("10.0.0.4")), Admitted::No));
        // A request ends: that connection is waiting again and gives way.
        drop(_r2);
        assert!(matches!(a.admit(ip("10.0.0.4")), Admitted::InPlaceOf(_)));
    }
}
