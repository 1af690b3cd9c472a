//! Purposes of use: the codes of the HL7 v3 PurposeOfUse value set
//! (<http://terminology.hl7.org/ValueSet/v3-PurposeOfUse>, codes from
//! <http://terminology.hl7.org/CodeSystem/v3-ActReason>), as expanded for FHIR R4 4.0.1
//! (<http://hl7.org/fhir/R4/v3/PurposeOfUse/vs.html>), minus the abstract root `PurposeOfUse`.
//!
//! Codes are matched exactly and flat: allowing `TREAT` does not allow its child `ETREAT`. A
//! hierarchy would let an integration reach purposes nobody listed for it.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// The code system a request may name with the code (`system|code`).
pub const ACT_REASON_SYSTEM: &str = "http://terminology.hl7.org/CodeSystem/v3-ActReason";

macro_rules! purposes {
    ($($code:ident,)+) => {
        /// One v3 PurposeOfUse code. Variants are the codes as written, so `stringify!`
        /// yields the code.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum PurposeOfUse {
            $(
                #[doc = concat!("`", stringify!($code), "`")]
                $code,
            )+
        }

        impl PurposeOfUse {
            /// Every known code, in value-set order.
            pub const ALL: &[PurposeOfUse] = &[$(PurposeOfUse::$code,)+];

            #[must_use]
            pub const fn code(self) -> &'static str {
                match self {
                    $(PurposeOfUse::$code => stringify!($code),)+
                }
            }

            /// Parses a code, case-sensitive (the code system is).
            #[must_use]
            pub fn parse(code: &str) -> Option<PurposeOfUse> {
                match code {
                    $(stringify!($code) => Some(PurposeOfUse::$code),)+
                    _ => None,
                }
            }
        }
    };
}

purposes! {
    HMARKT,
    HOPERAT,
    CAREMGT,
    DONAT,
    FRAUD,
    GOV,
    HACCRED,
    HCOMPL,
    HDECD,
    HDIRECT,
    HDM,
    HLEGAL,
    HOUTCOMS,
    HPRGRP,
    HQUALIMP,
    HSYSADMIN,
    LABELING,
    METAMGT,
    MEMADMIN,
    MILCDM,
    PATADMIN,
    PATSFTY,
    PERFMSR,
    RECORDMGT,
    SYSDEV,
    HTEST,
    TRAIN,
    HPAYMT,
    CLMATTCH,
    COVAUTH,
    COVERAGE,
    ELIGDTRM,
    ELIGVER,
    ENROLLM,
    MILDCRANGE,
    REMITADV,
    HRESCH,
    BIORCH,
    CLINTRCH,
    CLINTRCHNPC,
    CLINTRCHPC,
    PRECLINTRCH,
    DSRCH,
    POARCH,
    TRANSRCH,
    PATRQT,
    FAMRQT,
    PWATRNY,
    SUPNWK,
    PUBHLTH,
    DISASTER,
    THREAT,
    TREAT,
    COC,
    ETREAT,
    BTG,
    ERTREAT,
    POPHLTH,
}

// The set below is a u64 bitset.
const _: () = assert!(PurposeOfUse::ALL.len() <= 64);

impl PurposeOfUse {
    /// Parses a request header value: `CODE` or `http://terminology.hl7.org/CodeSystem/v3-ActReason|CODE`,
    /// surrounding whitespace ignored. Anything else (another system, a list, bad UTF-8) is
    /// [`RequestedPurpose::Invalid`]: a request must state one purpose.
    #[must_use]
    pub fn from_header(value: &[u8]) -> RequestedPurpose {
        let Ok(text) = std::str::from_utf8(value) else {
            return RequestedPurpose::Invalid;
        };
        let text = text.trim_matches([' ', '\t']);
        let code = match text.split_once('|') {
            Some((ACT_REASON_SYSTEM, code)) => code,
            Some(_) => return RequestedPurpose::Invalid,
            None => text,
        };
        PurposeOfUse::parse(code).map_or(RequestedPurpose::Invalid, RequestedPurpose::Stated)
    }
}

impl fmt::Display for PurposeOfUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for PurposeOfUse {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for PurposeOfUse {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        PurposeOfUse::parse(&code).ok_or_else(|| {
            de::Error::invalid_value(
                de::Unexpected::Str(&code),
                &"a v3 PurposeOfUse code such as TREAT, HPAYMT, HOPERAT, ETREAT, PUBHLTH",
            )
        })
    }
}

/// What a request says about its purpose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestedPurpose {
    /// No purpose header: the integration's `default_purpose` applies, if it has one.
    Absent,
    Stated(PurposeOfUse),
    /// A header that is not one known code (or appears twice).
    Invalid,
}

/// A set of purposes, as a bitset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PurposeSet(u64);

impl PurposeSet {
    #[must_use]
    pub const fn contains(self, purpose: PurposeOfUse) -> bool {
        self.0 & (1 << purpose as u8) != 0
    }

    #[must_use]
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = PurposeOfUse> {
        PurposeOfUse::ALL
            .iter()
            .copied()
            .filter(move |p| self.contains(*p))
    }
}

impl FromIterator<PurposeOfUse> for PurposeSet {
    fn from_iter<I: IntoIterator<Item = PurposeOfUse>>(iter: I) -> Self {
        PurposeSet(iter.into_iter().fold(0, |bits, p| bits | 1 << p as u8))
    }
}

impl fmt::Display for PurposeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, purpose) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(purpose.code())?;
        }
        Ok(())
    }
}

impl Serialize for PurposeSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// A YAML list of codes; a repeated code is refused (it is a typo for another one).
impl<'de> Deserialize<'de> for PurposeSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let list = Vec::<PurposeOfUse>::deserialize(deserializer)?;
        let set: PurposeSet = list.iter().copied().collect();
        if set.iter().count() != list.len() {
            return Err(de::Error::custom("a purpose of use is listed twice"));
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_values_name_one_known_code() {
        let table: &[(&[u8], RequestedPurpose)] = &[
            (b"TREAT", RequestedPurpose::Stated(PurposeOfUse::TREAT)),
            (b" HPAYMT\t", RequestedPurpose::Stated(PurposeOfUse::HPAYMT)),
            (
                b"http://terminology.hl7.org/CodeSystem/v3-ActReason|ETREAT",
                RequestedPurpose::Stated(PurposeOfUse::ETREAT),
            ),
            (
                b"http://example.org/reasons|TREAT",
                RequestedPurpose::Invalid,
            ),
            (b"treat", RequestedPurpose::Invalid),
            (b"TREAT,HPAYMT", RequestedPurpose::Invalid),
            (b"PurposeOfUse", RequestedPurpose::Invalid),
            (b"", RequestedPurpose::Invalid),
            (b"\xff", RequestedPurpose::Invalid),
        ];
        for (value, expected) in table {
            assert_eq!(
                PurposeOfUse::from_header(value),
                *expected,
                "{}",
                String::from_utf8_lossy(value)
            );
        }
    }

    #[test]
    fn sets_hold_exactly_their_members() {
        let set: PurposeSet = [PurposeOfUse::TREAT, PurposeOfUse::POPHLTH]
            .into_iter()
            .collect();
        assert!(set.contains(PurposeOfUse::TREAT));
        assert!(set.contains(PurposeOfUse::POPHLTH), "the last code fits");
        assert!(!set.contains(PurposeOfUse::ETREAT), "no hierarchy");
        assert_eq!(set.to_string(), "TREAT, POPHLTH");
        let codes: std::collections::BTreeSet<&str> =
            PurposeOfUse::ALL.iter().map(|p| p.code()).collect();
        assert_eq!(codes.len(), PurposeOfUse::ALL.len(), "no duplicate codes");
    }

    #[test]
    fn yaml_lists_refuse_unknown_and_repeated_codes() {
        let ok: PurposeSet = serde_saphyr::from_str("[TREAT, ETREAT]").expect("valid");
        assert_eq!(ok.iter().count(), 2);
        let unknown = serde_saphyr::from_str::<PurposeSet>("[TREATMENT]").expect_err("unknown");
        assert!(
            unknown.to_string().contains("PurposeOfUse code"),
            "{unknown}"
        );
        let twice = serde_saphyr::from_str::<PurposeSet>("[TREAT, TREAT]").expect_err("twice");
        assert!(twice.to_string().contains("twice"), "{twice}");
    }
}
