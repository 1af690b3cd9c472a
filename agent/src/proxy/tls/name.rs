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

    /// The subject alternative name to certify.
    pub(super) fn san(&self) -> Result<SanType, TlsError> {
        Ok(match self {
            Self::Ip(ip) => SanType::IpAddress(*ip),
            Self::Dns(name) => SanType::DnsName(
                Ia5String::try_from(name.as_str())
                    .map_err(|_| TlsError::BadServerName { name: name.clone() })?,
            ),
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
    fn bad_names_are_cut_in_errors() {
        let long = "x".repeat(10_000);
        match LeafName::parse(&long) {
            Err(TlsError::BadServerName { name }) => assert_eq!(name.len(), 256),
            other => panic!("expected BadServerName, got {other:?}"),
        }
    }
}
