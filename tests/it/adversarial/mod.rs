//! Attacks and careless use, kept in the suite: each module tries to break one SPEC §10
//! guarantee the way an attacker or a careless operator would (symlinks out of the store, secrets
//! in odd places, two processes on one manifest, huge values, odd keys, slow clients) and asserts
//! that housekeep refuses or holds.

mod config_values;
mod listener;
mod manifests;
mod runs;
mod store_paths;
