//! The integration tests: one binary, one file per feature. Every test starts the real `berth`
//! binary on an ephemeral loopback port and talks to it over HTTP, with reqwest or with real
//! registry clients (skopeo, podman, oras).




mod clients;
mod durability;
mod gc;
mod oci_blobs;
mod oci_manifests;

mod support;
