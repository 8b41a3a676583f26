//! `berth migrate`: moves an embedded installation (SQLite and files in a data directory) to
//! PostgreSQL and an S3 bucket, for several nodes. Every row keeps its id (identity, policies,
//! credentials as their hashes, audit, repositories, manifests, tags); every blob is read from
//! its file, hashed and placed in the bucket only if its digest matches; the token CA and
//! signing keys move into the database, sealed with the secret key. Run it before starting the
//! new nodes. A second run continues an interrupted one: rows and blobs already there are kept.

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};

use crate::blob::{Engine, S3Options};
use crate::config::env;
use crate::store::{MetadataStore, PgOptions};
use crate::types::{Digest, Hasher};

#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// The data directory of the embedded installation (stop its server first).
    #[arg(long, value_name = "DIR")]
    pub from_data_dir: PathBuf,
    /// The PostgreSQL to move to, postgres://USER:PASS@HOST:PORT/DB (or BERTH_DATABASE_URL).
    #[arg(long, env = env::BERTH_DATABASE_URL, value_name = "URL", hide_env_values = true)]
    pub to_database: String,
    /// The bucket to move the blobs to, s3://BUCKET[/PREFIX] (or BERTH_STORAGE).
    #[arg(long, env = env::BERTH_STORAGE, value_name = "URL")]
    pub to_storage: String,
    /// S3 endpoint URL, for S3-compatible stores [default: AWS]
    #[arg(long, env = env::BERTH_S3_ENDPOINT, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// S3 region
    #[arg(long, env = env::BERTH_S3_REGION, value_name = "REGION")]
    pub s3_region: Option<String>,
    /// Address the bucket in the path (most S3-compatible stores)
    #[arg(long, env = env::BERTH_S3_PATH_STYLE, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub s3_path_style: Option<bool>,
    /// File with the secret that seals the signing keys in the database (or BERTH_SECRET_KEY);
    /// the new nodes need the same.
    #[arg(long, env = env::BERTH_SECRET_KEY_FILE, value_name = "FILE")]
    pub secret_key_file: Option<PathBuf>,
}

/// A progress line on a terminal (nothing when stderr is not one).
struct Progress {
    on: bool,
}

impl Progress {
    fn show(&self, text: &str) {
        if self.on {
            eprint!("\r\x1b[2K{text}");
        }
    }

    fn done(&self) {
        if self.on {
            eprintln!();
        }
    }
}

fn bar(done: u64, total: u64) -> String {
    let width = 30;
    let filled = done
        .saturating_mul(width as u64)
        .checked_div(total)
        .map_or(width, |f| usize::try_from(f).unwrap_or(width));
    format!(
        "[{}{}]",
        "#".repeat(filled),
        " ".repeat(width - filled.min(width))
    )
}

pub(super) fn run(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let progress = Progress {
        on: std::io::stderr().is_terminal(),
    };
    let db_path = args.from_data_dir.join("berth.db");
    if !db_path.is_file() {
        bail!(
            "no berth data in {} (give the data directory of the embedded installation)",
            args.from_data_dir.display()
        );
    }
    let secret = match &args.secret_key_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("reading {}", f.display()))?
            .trim()
            .to_owned(),
        None => std::env::var(env::BERTH_SECRET_KEY)
            .ok()
            .filter(|s| !s.trim().is_empty())
            .context("the secret key is needed to seal the signing keys: set BERTH_SECRET_KEY or --secret-key-file")?,
    };
    let source = MetadataStore::open(&db_path).context("opening the embedded database")?;
    let target = MetadataStore::open_postgres(&PgOptions {
        url: args.to_database.clone(),
        pool_size: 4,
        statement_timeout: std::time::Duration::from_secs(60),
    })
    .context("opening the target database")?;
    let bucket = crate::blob::BlobStore::open_s3(
        &S3Options {
            url: args.to_storage.clone(),
            endpoint: args.s3_endpoint.clone(),
            region: args.s3_region.clone(),
            path_style: args.s3_path_style.unwrap_or(false),
            timeout: std::time::Duration::from_secs(120),
        },
        &args.from_data_dir,
    )
    .context("opening the bucket")?;
    let Engine::S3(s3) = bucket.engine().clone() else {
        bail!("the target storage must be a bucket");
    };
    let files = crate::blob::FsStore::open(&args.from_data_dir)?;

    // 1. The signing keys first, so that nodes started later find them.
    let keys = crate::auth::keys::Keys::copy_into_store(&args.from_data_dir, &target, &secret)
        .context("moving the token signing keys")?;

    // 2. Every row.
    let report = source.copy_into(&target, |table, n| {
        progress.show(&format!("rows: {table} ({n})"));
    })?;
    progress.done();
    let (read, inserted) = report
        .iter()
        .fold((0, 0), |(r, i), (_, a, b)| (r + a, i + b));

    // 3. Every blob, its digest checked on the way.
    let blobs = source.read(|r| r.all_blobs())?;
    let total: u64 = blobs.iter().map(|b| b.size).sum();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let (mut moved, mut kept, mut done_bytes) = (0u64, 0u64, 0u64);
    for b in &blobs {
        progress.show(&format!(
            "blobs {} {}/{} MB",
            bar(done_bytes, total),
            done_bytes / 1_000_000,
            total / 1_000_000
        ));
        // A small blob kept in its row (SQLite with a bucket) came with the rows.
        if b.in_row || s3.blob_exists(&b.digest)? {
            kept += 1;
        } else {
            runtime.block_on(copy_blob(&files, &s3, &b.digest))?;
            moved += 1;
        }
        done_bytes += b.size;
    }
    progress.show(&format!("blobs {} done", bar(total, total)));
    progress.done();
    crate::cli_print(&format!(
        "migrated {} rows ({inserted} new), {} blobs ({moved} copied and verified, {kept} already there), {keys} signing keys",
        read,
        blobs.len()
    ));
    Ok(ExitCode::SUCCESS)
}

/// Streams blob `d` from its file into the bucket, hashing it; placed only if the digest matches.
async fn copy_blob(
    files: &crate::blob::FsStore,
    s3: &crate::blob::S3Store,
    d: &Digest,
) -> anyhow::Result<()> {
    let id = uuid::Uuid::new_v4();
    let mut file = files.open_blob(d)?;
    let mut sink = s3.staging_sink(&id);
    let mut hasher = Hasher::new(d.algorithm());
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = tokio::task::block_in_place(|| file.read(&mut buf))
            .with_context(|| format!("reading blob {d}"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        sink.put(bytes::Bytes::copy_from_slice(&buf[..n])).await?;
    }
    let got = hasher.finish();
    if &got != d {
        sink.abort();
        bail!("blob {d} in the data directory holds {got}: not copied (the source is damaged)");
    }
    let s3 = s3.clone();
    let d = d.clone();
    tokio::task::block_in_place(move || -> anyhow::Result<()> {
        s3.place(sink, &id, &d)?;
        Ok(())
    })
}
