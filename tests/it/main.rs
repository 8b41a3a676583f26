//! The integration tests: one binary, one file per feature. Every test starts the real `berth`
//! binary on an ephemeral loopback port and talks to it over HTTP, with reqwest or with real
//! registry clients (skopeo, podman, oras).

#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

mod api_fuzz;
mod attacks;
mod authz_matrix;
mod cli;
mod clients;
mod console;
mod durability;
mod faults;
mod fuzz_corpus;
mod gc;
mod identity;
mod interop;
mod oci_blobs;
mod oci_manifests;
mod repos;
mod scale;
mod server;
mod sso;
mod workload;

mod support;
mod tidy;
