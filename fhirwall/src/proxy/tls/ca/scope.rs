//! What the node CA may sign for: X.509 name constraints (RFC 5280 4.2.1.10) made from the
//! protected upstreams' names and addresses when the CA is created, and read back from the
//! certificate when it is loaded, so a name the CA does not cover is refused before a client
//! would reject its leaf.

use std::net::IpAddr;

use rcgen::{CidrSubnet, GeneralSubtree, NameConstraints};
use x509_parser::extensions::GeneralName;

use super::LeafName;

/// The subtrees a CA permits; `None` for a CA without name constraints (made before they
/// were set, or by `ca init` without any): it covers every name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    permitted: Option<Permitted>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Permitted {
    /// DNS subtrees: the name itself and every name below it.
    dns: Vec<String>,
    /// Address and mask, both 4 or both 16 bytes.
    ips: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Scope {
    /// The name constraints for a CA that signs for exactly `names` (each address on its own,
    /// each DNS name with its subdomains, as RFC 5280 defines a `dNSName` subtree). `None` when
    /// `names` is empty: a CA for nothing yet is left unconstrained rather than unusable.
    #[must_use]
    pub fn constraints<'a>(
        names: impl IntoIterator<Item = &'a LeafName>,
    ) -> Option<NameConstraints> {
        let mut permitted = Vec::new();
        for name in names {
            match name {
                LeafName::Dns(dns) => permitted.push(GeneralSubtree::DnsName(dns.clone())),
                LeafName::Ip(ip) => permitted.push(ip_subtree(*ip)),
                LeafName::IpWithHost(ip, dns) => {
                    permitted.push(ip_subtree(*ip));
                    permitted.push(GeneralSubtree::DnsName(dns.clone()));
                }
            }
        }
        permitted.dedup();
        (!permitted.is_empty()).then_some(NameConstraints {
            permitted_subtrees: permitted,
            excluded_subtrees: Vec::new(),
        })
    }

    /// The scope of a parsed CA certificate.
    pub fn of(cert: &x509_parser::certificate::X509Certificate<'_>) -> Result<Self, &'static str> {
        let constraints = cert
            .name_constraints()
            .map_err(|_| "name constraints do not parse")?;
        let Some(subtrees) = constraints.and_then(|c| c.value.permitted_subtrees.as_ref()) else {
            return Ok(Self::default());
        };
        let mut permitted = Permitted::default();
        for subtree in subtrees {
            match subtree.base {
                GeneralName::DNSName(dns) => permitted.dns.push(dns.to_ascii_lowercase()),
                GeneralName::IPAddress(bytes) if bytes.len() == 8 || bytes.len() == 32 => {
                    let (addr, mask) = bytes.split_at(bytes.len() / 2);
                    permitted.ips.push((addr.to_vec(), mask.to_vec()));
                }
                // A form the sidecar never certifies: it constrains nothing it mints.
                _ => {}
            }
        }
        Ok(Self {
            permitted: Some(permitted),
        })
    }

    /// Whether a leaf for `name` lies within the CA's name constraints.
    #[must_use]
    pub fn covers(&self, name: &LeafName) -> bool {
        let Some(p) = &self.permitted else {
            return true;
        };
        match name {
            LeafName::Dns(dns) => p.covers_dns(dns),
            LeafName::Ip(ip) => p.covers_ip(*ip),
            LeafName::IpWithHost(ip, dns) => p.covers_ip(*ip) && p.covers_dns(dns),
        }
    }

    /// Whether the CA has name constraints at all.
    #[must_use]
    pub fn is_constrained(&self) -> bool {
        self.permitted.is_some()
    }
}

impl Permitted {
    /// RFC 5280: a name matches a `dNSName` subtree if it is the subtree or ends in `.` plus
    /// it. With no `dNSName` subtree at all, DNS names are not constrained.
    fn covers_dns(&self, name: &str) -> bool {
        self.dns.is_empty()
            || self.dns.iter().any(|base| {
                name == base
                    || name
                        .strip_suffix(base.as_str())
                        .is_some_and(|head| head.ends_with('.'))
            })
    }

    /// With no `iPAddress` subtree at all, addresses are not constrained.
    fn covers_ip(&self, ip: IpAddr) -> bool {
        let octets = match ip {
            IpAddr::V4(v4) => v4.octets().to_vec(),
            IpAddr::V6(v6) => v6.octets().to_vec(),
        };
        self.ips.is_empty()
            || self.ips.iter().any(|(addr, mask)| {
                addr.len() == octets.len()
                    && octets
                        .iter()
                        .zip(addr.iter().zip(mask))
                        .all(|(o, (a, m))| o & m == a & m)
            })
    }
}

fn ip_subtree(ip: IpAddr) -> GeneralSubtree {
    let prefix = if ip.is_ipv4() { 32 } else { 128 };
    GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, prefix))
}
