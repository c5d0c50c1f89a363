//! housekeep's integration tests, one crate: each module tests one part of the product on real
//! systems — a PostgreSQL database of its own per test and a real S3 API (moto) with a prefix of
//! its own per test, both started by `scripts/test.sh` — and reads like the guarantees of
//! SPEC §10 it checks. `common` holds the harness, `fixtures` the datasets and the SPEC §10
//! invariants as assertions.

mod common;
mod fixtures;

mod actions;
mod api;
mod adversarial;
mod cli;
mod code_shape;
mod crash;
mod deploy_prometheus;
mod deploy_kubernetes;
mod deploy_systemd;
mod faults;
mod gitlab_rules;
mod live_gitlab;
mod logs;
mod migrate;
mod orphan_files;
mod orphans;
mod pipeline;
mod reports;
mod seed;
mod sql_layout;
mod store_conformance;
mod tls;
mod verify;
mod worker;
