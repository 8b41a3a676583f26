//! A client's address as per-address limits count it.

use std::net::IpAddr;

/// One client address as per-address limits count it: an IPv4 address, or an IPv6 /56 (what a
/// provider hands one customer; its holder can pick any address, and any /64, in it). An
/// IPv4-mapped IPv6 address is its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
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
