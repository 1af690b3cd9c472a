//! Addresses as the kernel programs keep them: IPv6 words in network byte order, IPv4 mapped.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use fhirwall_common::Addr;

/// Converts an address to the kernel's key form (IPv4 becomes `::ffff:a.b.c.d`).
#[must_use]
pub fn to_addr(ip: IpAddr) -> Addr {
    let v6 = match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    let o = v6.octets();
    [0, 4, 8, 12].map(|i| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]))
}

/// Converts back; IPv4-mapped addresses become IPv4.
#[must_use]
pub fn from_addr(addr: &Addr) -> IpAddr {
    let mut octets = [0u8; 16];
    for (chunk, word) in octets.chunks_exact_mut(4).zip(addr) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let v6 = Ipv6Addr::from(octets);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// The IPv4 word of an address as the kernel holds `user_ip4` (network byte order).
#[must_use]
pub fn ipv4_word(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

#[cfg(test)]
mod tests {
    use fhirwall_common::{V4_MAPPED_WORD, v4_mapped};

    use super::*;

    #[test]
    fn ipv4_maps_like_the_kernel_programs() {
        let ip = Ipv4Addr::new(10, 1, 2, 3);
        assert_eq!(to_addr(IpAddr::V4(ip)), v4_mapped(ipv4_word(ip)));
        assert_eq!(to_addr(IpAddr::V4(ip))[2], V4_MAPPED_WORD);
    }

    #[test]
    fn round_trips() {
        for ip in [
            "127.0.0.1",
            "::1",
            "2001:db8::7",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            let ip: IpAddr = ip.parse().expect("test literal");
            let expected = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                IpAddr::V4(_) => ip,
            };
            assert_eq!(from_addr(&to_addr(ip)), expected);
        }
    }
}
