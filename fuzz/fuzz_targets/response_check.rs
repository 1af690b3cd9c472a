//! Drives the response check (`fhirwall_fhir::response`) with arbitrary bodies, fed in chunks
//! whose sizes the input picks, in every mode. Any refusal is fine; a panic, a timeout or memory
//! beyond the cap is a bug, and so are chunkings that disagree: the same body must be refused or
//! not, and released as the same bytes when it is not, whatever pieces it arrives in.

#![no_main]

use bytes::BytesMut;
use fhirwall_fhir::{
    ResourceType, TypeSet,
    response::{BodyFormat, CheckMode, PatientRule, ResponseCheck, ResponseRules},
};
use libfuzzer_sys::fuzz_target;

fn rules(selector: u8) -> ResponseRules {
    let mode = match selector % 3 {
        0 => CheckMode::Record,
        1 => CheckMode::Deny,
        _ => CheckMode::Filter,
    };
    let patients = match selector / 3 % 3 {
        0 => PatientRule::Any,
        1 => PatientRule::Only(vec!["a".to_owned()]),
        _ => PatientRule::One,
    };
    ResponseRules {
        mode,
        readable: [ResourceType::Observation, ResourceType::Patient]
            .into_iter()
            .collect(),
        patients,
        exempt: TypeSet::EMPTY,
        max_held: 4096,
    }
}

/// The body through a check, in pieces of `size`: what went out, and whether it was refused.
fn run(rules: &ResponseRules, format: BodyFormat, body: &[u8], size: usize) -> (Vec<u8>, bool) {
    let mut check = ResponseCheck::new(rules.clone(), format);
    let mut out = BytesMut::new();
    for piece in body.chunks(size.max(1)) {
        if check.feed(piece, &mut out).is_err() {
            return (out.to_vec(), true);
        }
    }
    let refused = check.finish(&mut out).is_err();
    (out.to_vec(), refused)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Some((&chunk, body)) = rest.split_first() else {
        return;
    };
    let format = if selector & 0x80 == 0 {
        BodyFormat::Json
    } else {
        BodyFormat::Ndjson
    };
    let rules = rules(selector & 0x7f);
    let (whole, whole_refused) = run(&rules, format, body, body.len());
    let (pieces, pieces_refused) = run(&rules, format, body, usize::from(chunk % 17) + 1);
    assert_eq!(
        whole_refused, pieces_refused,
        "chunking changed the verdict"
    );
    if !whole_refused {
        assert_eq!(whole, pieces, "chunking changed what was released");
    }
});
