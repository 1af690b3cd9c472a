//! Tests against real `SQLite` stores in temporary directories.

pub(crate) mod support;

mod disk_full;
mod export;
mod fhir;
mod group_commit;
mod journal;
mod locked;
mod pindex;
mod query_report;
mod rebuild;
mod retention;
mod tamper;
