//! The metadata store: repositories, blob links, manifests, tags, upload sessions, identity.
//!
//! `MetadataStore` is the concrete handle the rest of the program holds, over one of two engines:
//! SQLite in the data directory (`sqlite.rs`, the default) or PostgreSQL (`postgres.rs`, for
//! several nodes). The queries are written once (`registry.rs`, `iam.rs`) through `sql.rs`.
//! No SQL or driver type leaves this module, and nothing here knows about HTTP.
//!
//! Invariant: every write runs in one transaction (`MetadataStore::write`), so a crash leaves
//! either all of a write or none of it, and write transactions run one at a time (SQLite's
//! `BEGIN IMMEDIATE`; PostgreSQL's write advisory lock).

mod cache;
mod copy;
mod error;
mod handle;
mod iam;
mod model;
mod postgres;
mod registry;
pub(crate) mod sql;
mod sqlite;
mod sso;

pub use copy::CopyReport;
pub use error::{Error, Result, STORAGE_FULL, STORAGE_READ_ONLY, UNAVAILABLE};
pub use handle::{Lease, MetadataStore};
pub use iam::{binding_key, generation_key, member_key, role_key};
pub use model::*;
pub use postgres::{PgLock, PgOptions};
pub use sql::{Reader, Writer};
pub use sso::sso_key;
