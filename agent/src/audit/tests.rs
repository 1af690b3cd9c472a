//! Tests against real `SQLite` stores in temporary directories.

mod support;

mod disk_full;
mod group_commit;
mod retention;
mod tamper;
