//! Driver tests: every request goes through [`serve_connection`] for real, against a real test
//! upstream that counts what reaches it.

mod exchange;
mod inspect;
mod load;
mod release;
mod smuggling;
mod support;
