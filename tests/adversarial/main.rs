//! Attacks and careless use, kept in the suite: each module tries to break one SPEC §10
//! guarantee the way an attacker or a careless operator would (symlinks out of the store, secrets
//! in odd places, two processes on one manifest, huge values, odd keys, slow clients) and asserts
//! that housekeep refuses or holds.

#[path = "../common/mod.rs"]
mod common;
#[path = "../fixtures/mod.rs"]
mod fixtures;

mod config_values;
mod listener;
mod manifests;
mod runs;
mod store_paths;
