//! Drives `fhirwall_fhir::classify` with arbitrary method, target, headers and body.
//!
//! Input layout: byte 0 picks the method and the config (base path, tenant mode); the rest is
//! split on NUL into target, Content-Type, If-None-Exist and body. Any `Err` is fine; a panic,
//! stack overflow, timeout or out-of-memory is a bug.

#![no_main]

use fhirwall_fhir::{ClassifyConfig, HttpRequest, TenantMode, classify};
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "get",
];
const BASES: [&str; 2] = ["/fhir/R4", "/"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let mut parts = rest.splitn(4, |&b| b == 0);
    let target = parts.next().unwrap_or_default();
    let content_type = parts.next().unwrap_or_default();
    let if_none_exist = parts.next().unwrap_or_default();
    let body = parts.next();
    let Ok(target) = std::str::from_utf8(target) else {
        return;
    };

    let base = BASES[usize::from(selector >> 3 & 1)];
    let Ok(mut config) = ClassifyConfig::new(base) else {
        return;
    };
    config.tenant = match selector >> 4 & 3 {
        1 => TenantMode::PathSegment,
        2 => TenantMode::Header("X-Tenant".to_owned()),
        _ => TenantMode::None,
    };
    config.max_bundle_entries = 64;
    config.authorities.push("fhir.example".to_owned());
    let headers: [(&str, &[u8]); 4] = [
        ("Content-Type", content_type),
        ("If-None-Exist", if_none_exist),
        ("Host", b"fhir.example"),
        ("X-Tenant", b"t1"),
    ];
    let request = HttpRequest {
        method: METHODS[usize::from(selector & 7)],
        target,
        headers: &headers,
        body,
    };
    if let Ok(classified) = classify(&request, &config) {
        // Serialization is part of the contract (the CLI prints it): it must not panic either.
        let _ = serde_json::to_vec(&classified);
    }
});
