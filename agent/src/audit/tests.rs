//! Tests against real `SQLite` stores in temporary directories.

mod support;

mod disk_full;
mod group_commit;
mod query_report;
mod retention;
mod tamper;
