//! The name a leaf certificate is minted for: the client's SNI, or the fallback the listener
//! supplies when there is none (the upstream's host name, or the original destination address).

use std::{fmt, net::IpAddr};

use rcgen::{SanType, string::Ia5String};
use rustls::pki_types::DnsName;

use super::TlsError;

/// A DNS name (lowercase, validated as RFC 1035 / RFC 5280 `dNSName` syntax) or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LeafName {
    /// Certified as a `dNSName` subject alternative name.
    Dns(String),
    /// Certified as an `iPAddress` subject alternative name (clients connecting by address send
    /// no SNI: RFC 6066 section 3 forbids literal addresses in it).
    Ip(IpAddr),
    /// Certified with both an `iPAddress` and a `dNSName`: the fallback for a client without SNI
    /// to an upstream known by a host name. Such a client most likely connected by address (and
    /// checks the address, RFC 6125 section 6.2.1), but a legacy stack with SNI turned off checks
    /// the host name; one leaf serves both. Never parsed from a client's SNI.
    IpWithHost(IpAddr, String),
}

impl LeafName {
    /// An IP literal (`10.0.0.5`, `::1`, `[::1]`) or a DNS name; anything else is refused.
    /// Wildcards are refused too: a leaf is minted for exactly the name a client asked for.
    pub fn parse(name: &str) -> Result<Self, TlsError> {
        let unbracketed = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Self::Ip(ip));
        }
        let bad = || TlsError::BadServerName {
            name: name.chars().take(256).collect(),
        };
        // A trailing dot names the same host (RFC 1034 3.1); certificates carry it without.
        let trimmed = name.strip_suffix('.').unwrap_or(name);
        if trimmed.contains('*') {
            return Err(bad());
        }
        let dns = DnsName::try_from(trimmed).map_err(|_| bad())?;
        Ok(Self::Dns(dns.as_ref().to_ascii_lowercase()))
    }

    /// The fallback name for a client without SNI that connected to `destination` of an
    /// upstream whose certificate name is `host` (if known).
    #[must_use]
    pub fn without_sni(destination: IpAddr, host: Option<&Self>) -> Self {
        match host {
            Some(Self::Dns(name)) => Self::IpWithHost(destination, name.clone()),
            _ => Self::Ip(destination),
        }
    }

    /// The subject alternative names to certify.
    pub(super) fn sans(&self) -> Result<Vec<SanType>, TlsError> {
        let dns = |name: &str| {
            Ia5String::try_from(name)
                .map(SanType::DnsName)
                .map_err(|_| TlsError::BadServerName { name: name.into() })
        };
        Ok(match self {
            Self::Ip(ip) => vec![SanType::IpAddress(*ip)],
            Self::Dns(name) => vec![dns(name)?],
            Self::IpWithHost(ip, name) => vec![SanType::IpAddress(*ip), dns(name)?],
        })
    }
}

impl From<IpAddr> for LeafName {
    fn from(ip: IpAddr) -> Self {
        Self::Ip(ip)
    }
}

impl fmt::Display for LeafName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dns(name) => f.write_str(name),
            Self::Ip(ip) => write!(f, "{ip}"),
            Self::IpWithHost(ip, name) => write!(f, "{name} ({ip})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_addresses() {
        let table: &[(&str, Option<LeafName>)] = &[
            (
                "fhir.ehr.example",
                Some(LeafName::Dns("fhir.ehr.example".into())),
            ),
            (
                "FHIR.Ehr.Example.",
                Some(LeafName::Dns("fhir.ehr.example".into())),
            ),
            ("localhost", Some(LeafName::Dns("localhost".into()))),
            ("10.1.2.3", Some(LeafName::Ip([10, 1, 2, 3].into()))),
            ("::1", Some(LeafName::Ip("::1".parse().expect("literal")))),
            (
                "[fe80::1]",
                Some(LeafName::Ip("fe80::1".parse().expect("literal"))),
            ),
            ("", None),
            ("*.ehr.example", None),
            ("fhir..example", None),
            ("fhir ehr", None),
            ("fhir.ehr.example:443", None),
            ("-bad.example", None),
            ("é.example", None),
        ];
        for (input, want) in table {
            let got = LeafName::parse(input).ok();
            assert_eq!(&got, want, "input {input:?}");
        }
    }

    #[test]
    fn clients_without_sni_get_the_address_and_the_host_name() {
        let ip: IpAddr = [127, 0, 0, 9].into();
        let host = LeafName::parse("ehr.example").expect("name");
        let both = LeafName::without_sni(ip, Some(&host));
        assert_eq!(
            both.sans().expect("sans"),
            vec![
                SanType::IpAddress(ip),
                SanType::DnsName(Ia5String::try_from("ehr.example").expect("ia5")),
            ]
        );
        // No host name (or an address as the upstream's name): the address alone.
        for host in [None, Some(LeafName::Ip([10, 0, 0, 1].into()))] {
            assert_eq!(LeafName::without_sni(ip, host.as_ref()), LeafName::Ip(ip));
        }
    }

    #[test]
    fn bad_names_are_cut_in_errors() {
        let long = "x".repeat(10_000);
        match LeafName::parse(&long) {
            Err(TlsError::BadServerName { name }) => assert_eq!(name.len(), 256),
            other => panic!("expected BadServerName, got {other:?}"),
        }
    }
}
