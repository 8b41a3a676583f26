//! Copying every row of one metadata store into another (`berth migrate`: SQLite → PostgreSQL).
//! Rows keep their ids, so credentials, bindings and tokens keep pointing at the same things;
//! a row already in the target is left as it is, so a copy interrupted half-way is finished by
//! running it again. Identity sequences are moved past the copied ids afterwards.

use super::error::Result;
use super::handle::MetadataStore;
use super::sql::{Conn, Param, Row};

/// A column's type on both engines.
#[derive(Clone, Copy)]
enum Kind {
    Int,
    Text,
    Bytes,
    Bool,
}

use Kind::{Bool, Bytes, Int, Text};

/// Every table, in an order where nothing points at a table copied later; `Some(column)` for a
/// table whose ids come from an identity sequence.
type Table = (
    &'static str,
    Option<&'static str>,
    &'static [(&'static str, Kind)],
);

const TABLES: &[Table] = &[
    (
        "orgs",
        Some("id"),
        &[("id", Int), ("name", Text), ("created_at", Int)],
    ),
    (
        "users",
        Some("id"),
        &[
            ("id", Int),
            ("name", Text),
            ("password_hash", Text),
            ("admin", Bool),
            ("created_at", Int),
            ("password_epoch", Int),
        ],
    ),
    (
        "namespaces",
        None,
        &[
            ("name", Text),
            ("org_id", Int),
            ("public", Bool),
            ("created_at", Int),
            ("public_gen", Int),
        ],
    ),
    (
        "memberships",
        None,
        &[("org_id", Int), ("user_id", Int), ("role", Text)],
    ),
    (
        "robots",
        Some("id"),
        &[
            ("id", Int),
            ("org_id", Int),
            ("name", Text),
            ("description", Text),
            ("created_at", Int),
        ],
    ),
    (
        "robot_trusts",
        Some("id"),
        &[
            ("id", Int),
            ("robot_id", Int),
            ("name", Text),
            ("issuer", Text),
            ("subject", Text),
            ("audience", Text),
            ("claims", Text),
            ("jwks", Text),
            ("created_at", Int),
            ("last_used_at", Int),
        ],
    ),
    (
        "credentials",
        None,
        &[
            ("id", Text),
            ("kind", Text),
            ("name", Text),
            ("user_id", Int),
            ("robot_id", Int),
            ("org_id", Int),
            ("secret_hash", Bytes),
            ("readwrite", Bool),
            ("description", Text),
            ("created_at", Int),
            ("expires_at", Int),
            ("revoked_at", Int),
            ("last_used_at", Int),
            ("last_used_addr", Text),
            ("last_used_agent", Text),
            ("source", Text),
            ("family", Text),
            ("creator", Text),
            ("previous_hash", Bytes),
            ("previous_until", Int),
            ("generation", Int),
            ("ended_at", Int),
        ],
    ),
    ("lineage", None, &[("source", Text), ("object", Text)]),
    ("policy_epochs", None, &[("subject", Text), ("epoch", Int)]),
    (
        "invitations",
        None,
        &[
            ("org_id", Int),
            ("user_id", Int),
            ("role", Text),
            ("created_at", Int),
        ],
    ),
    (
        "roles",
        None,
        &[
            ("org_id", Int),
            ("name", Text),
            ("rules", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    ),
    (
        "idp_groups",
        Some("id"),
        &[("id", Int), ("name", Text), ("created_at", Int)],
    ),
    ("user_groups", None, &[("user_id", Int), ("group_id", Int)]),
    (
        "sso_links",
        None,
        &[
            ("issuer", Text),
            ("subject", Text),
            ("provider", Text),
            ("user_id", Int),
            ("epoch", Int),
            ("groups_read_at", Int),
            ("created_at", Int),
        ],
    ),
    (
        "bindings",
        None,
        &[
            ("org_id", Int),
            ("name", Text),
            ("role", Text),
            ("subject_kind", Text),
            ("subject_id", Int),
            ("scope_kind", Text),
            ("scope", Text),
            ("created_at", Int),
            ("updated_at", Int),
        ],
    ),
    (
        "audit_events",
        Some("id"),
        &[
            ("id", Int),
            ("at", Int),
            ("actor", Text),
            ("action", Text),
            ("outcome", Text),
            ("target", Text),
            ("client_addr", Text),
            ("detail", Text),
            ("attempted", Text),
            ("count", Int),
            ("org", Text),
        ],
    ),
    (
        "revocations",
        Some("seq"),
        &[("seq", Int), ("key", Text), ("at", Int)],
    ),
    (
        "repositories",
        Some("id"),
        &[("id", Int), ("name", Text), ("created_at", Int)],
    ),
    (
        "blobs",
        None,
        &[
            ("digest", Text),
            ("size", Int),
            ("created_at", Int),
            ("data", Bytes),
        ],
    ),
    (
        "repo_blobs",
        None,
        &[("repo_id", Int), ("digest", Text), ("linked_at", Int)],
    ),
    (
        "manifests",
        Some("id"),
        &[
            ("id", Int),
            ("repo_id", Int),
            ("digest", Text),
            ("media_type", Text),
            ("artifact_type", Text),
            ("subject", Text),
            ("annotations", Text),
            ("size", Int),
            ("content", Bytes),
            ("pushed_at", Int),
        ],
    ),
    (
        "manifest_refs",
        None,
        &[
            ("repo_id", Int),
            ("manifest_digest", Text),
            ("ref_digest", Text),
            ("kind", Int),
        ],
    ),
    (
        "tags",
        None,
        &[
            ("repo_id", Int),
            ("name", Text),
            ("digest", Text),
            ("updated_at", Int),
        ],
    ),
];

/// One value, typed for both drivers.
enum Value {
    Int(Option<i64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
    Bool(Option<bool>),
}

impl Value {
    fn read(r: &Row<'_>, i: usize, kind: Kind) -> Result<Value> {
        Ok(match kind {
            Int => Value::Int(r.get(i)?),
            Text => Value::Text(r.get(i)?),
            Bytes => Value::Bytes(r.get(i)?),
            Bool => Value::Bool(r.get(i)?),
        })
    }

    fn param(&self) -> &dyn Param {
        match self {
            Value::Int(v) => v,
            Value::Text(v) => v,
            Value::Bytes(v) => v,
            Value::Bool(v) => v,
        }
    }
}

/// What a copy did, per table: (table, rows read, rows inserted).
pub type CopyReport = Vec<(&'static str, u64, u64)>;

impl MetadataStore {
    /// Copies every row of `self` into `target` (see the module comment). `progress` is told
    /// each table's name and row count as it goes.
    pub fn copy_into(
        &self,
        target: &MetadataStore,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<CopyReport> {
        let mut report = Vec::new();
        for (table, id, cols) in TABLES {
            let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
            let select = format!("SELECT {} FROM {table}", names.join(", "));
            let rows: Vec<Vec<Value>> = self.read(|r| {
                r.conn.query(&select, &[], |row| {
                    cols.iter()
                        .enumerate()
                        .map(|(i, (_, k))| Value::read(row, i, *k))
                        .collect()
                })
            })?;
            let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("?{i}")).collect();
            let insert = format!(
                "INSERT INTO {table} ({}) VALUES ({}) ON CONFLICT DO NOTHING",
                names.join(", "),
                placeholders.join(", ")
            );
            let mut inserted = 0;
            // In batches, each one transaction: an interruption loses at most a batch, which
            // the next run inserts.
            for batch in rows.chunks(500) {
                inserted += target.write(|w| {
                    let mut n = 0;
                    for row in batch {
                        let params: Vec<&dyn Param> = row.iter().map(Value::param).collect();
                        n += w.conn.execute(&insert, &params)?;
                    }
                    Ok::<_, super::error::Error>(n)
                })?;
            }
            if let Some(col) = id {
                target.write(|w| bump_sequence(w.conn, table, col))?;
            }
            progress(table, rows.len() as u64);
            report.push((*table, rows.len() as u64, inserted));
        }
        Ok(report)
    }
}

/// Moves a PostgreSQL identity sequence past the largest id copied (SQLite needs nothing).
fn bump_sequence(conn: Conn<'_>, table: &str, col: &str) -> Result<()> {
    if let Conn::Pg(_) = conn {
        conn.exists(
            &format!(
                "SELECT setval(pg_get_serial_sequence('{table}', '{col}'), \
                 GREATEST((SELECT COALESCE(MAX({col}), 0) FROM {table}), 1))"
            ),
            &[],
        )?;
    }
    Ok(())
}
