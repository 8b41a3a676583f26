//! A client's address as per-address limits count it.

use std::net::IpAddr;
use std::sync::Arc;

/// One client address as per-address limits count it: an IPv4 address, or an IPv6 /56 (what a
/// provider hands one customer; its holder can pick any address, and any /64, in it). An
/// IPv4-mapped IPv6 address is its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientAddress {
    V4(u32),
    V6(u64),
}

impl std::fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientAddress::V4(v4) => std::net::Ipv4Addr::from(*v4).fmt(f),
            ClientAddress::V6(prefix) => {
                write!(
                    f,
                    "{}/56",
                    std::net::Ipv6Addr::from(u128::from(*prefix) << 72)
                )
            }
        }
    }
}

impl From<IpAddr> for ClientAddress {
    fn from(ip: IpAddr) -> ClientAddress {
        match ip {
            IpAddr::V4(v4) => ClientAddress::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientAddress::V4(u32::from(v4)),
                None => ClientAddress::V6((u128::from(v6) >> 72) as u64),
            },
        }
    }
}

/// Closes the connection a request came on. The server hands it to what holds memory for the
/// request (a pull's chunks not yet written), so that a client that stops reading can be made
/// to give that memory back when others need it.
#[derive(Clone)]
pub struct Hangup(Arc<dyn Fn() + Send + Sync>);

impl Hangup {
    pub fn new(close: impl Fn() + Send + Sync + 'static) -> Hangup {
        Hangup(Arc::new(close))
    }

    pub fn hang_up(&self) {
        (self.0)();
    }

    /// Which connection it closes: the same for every request of one connection.
    pub fn connection(&self) -> usize {
        Arc::as_ptr(&self.0).cast::<()>() as usize
    }
}

impl std::fmt::Debug for Hangup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hangup")
    }
}
