//! A client's address as per-address limits count it.

use std::net::IpAddr;

/// One client address as per-address limits count it: an IPv4 address, or an IPv6 /64 (one
/// host's share of a network; a host can pick any address in it). An IPv4-mapped IPv6 address
/// is its IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientAddress {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for ClientAddress {
    fn from(ip: IpAddr) -> ClientAddress {
        match ip {
            IpAddr::V4(v4) => ClientAddress::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientAddress::V4(u32::from(v4)),
                None => ClientAddress::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}
