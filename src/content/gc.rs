//! Garbage collection: removes what nothing keeps, safely while pushes go on.
//!
//! One metadata transaction decides what goes (`Writer::collect_garbage`): expired upload
//! sessions, with `untagged` the manifests nothing keeps, blob links older than the grace period
//! that no manifest of their repository references, and blobs that are then linked and
//! referenced nowhere. Files are removed afterwards, each under its digest's lock and only after
//! re-reading that no row names it, so a push that commits the same digest meanwhile wins; a
//! small blob kept in its row on S3 (`content::INLINE_MAX`) goes with its row.
//! A final sweep removes files a crash left without a row (blobs at once, upload files once they
//! are older than the upload expiry).
//!
//! Invariant: a blob linked or referenced within the grace period is never removed, so a blob
//! pushed during a collection and then referenced by a manifest survives it.

use std::time::Duration;

use super::error::Result;
use crate::blob::BlobStore;
use crate::store::{MetadataStore, now};
use crate::types::Digest;

#[derive(Debug, Clone)]
pub struct Options {
    /// Links and manifests younger than this are kept.
    pub grace: Duration,
    /// Upload sessions older than this are removed.
    pub upload_ttl: Duration,
    /// Also remove manifests that no tag, index or present subject keeps.
    pub untagged: bool,
    /// Report only; change nothing.
    pub dry_run: bool,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub dry_run: bool,
    pub manifests_removed: Vec<String>,
    pub links_removed: u64,
    pub blobs_removed: u64,
    pub bytes_freed: u64,
    pub uploads_removed: u64,
    pub orphan_files_removed: u64,
    /// The digests whose blob files this run removed (unreferenced blobs and orphans).
    pub removed_blob_digests: Vec<String>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        for m in &self.manifests_removed {
            writeln!(f, "{verb} manifest {m}")?;
        }
        write!(
            f,
            "{verb} {} manifests, {} blob links, {} blobs ({} bytes), {} expired uploads, {} orphaned files",
            self.manifests_removed.len(),
            self.links_removed,
            self.blobs_removed,
            self.bytes_freed,
            self.uploads_removed,
            self.orphan_files_removed
        )
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

pub(super) fn run(meta: &MetadataStore, blobs: &BlobStore, opts: &Options) -> Result<Report> {
    let now = now();
    let cutoff = now.saturating_sub(secs(opts.grace));
    let upload_cutoff = now.saturating_sub(secs(opts.upload_ttl));
    let plan = if opts.dry_run {
        meta.write_dry_run(|w| w.collect_garbage(cutoff, upload_cutoff, opts.untagged))?
    } else {
        meta.write(|w| w.collect_garbage(cutoff, upload_cutoff, opts.untagged))?
    };
    let mut report = Report {
        dry_run: opts.dry_run,
        manifests_removed: plan
            .manifests
            .iter()
            .map(|(r, d)| format!("{r}@{d}"))
            .collect(),
        links_removed: plan.links,
        uploads_removed: plan.uploads.len() as u64,
        ..Report::default()
    };
    if opts.dry_run {
        report.blobs_removed = plan.blobs.len() as u64;
        report.bytes_freed = plan.blobs.iter().map(|b| b.size).sum();
        return Ok(report);
    }
    for b in &plan.blobs {
        // A blob kept in its row went with it: nothing to ask the bucket (an object a race
        // left under its key has no row now, and the sweep below removes it).
        if b.in_row || remove_if_unreferenced(meta, blobs, &b.digest)? {
            report.blobs_removed += 1;
            report.bytes_freed += b.size;
            report.removed_blob_digests.push(b.digest.to_string());
        }
    }
    for u in &plan.uploads {
        blobs.discard_upload(&u.id, u.s3_state.as_deref())?;
    }
    // Files left by a crash between a rename and its commit, or by a GC that stopped half-way.
    for d in blobs.list_blobs()? {
        if meta.read(|r| r.blob_size(&d))?.is_none() && remove_if_unreferenced(meta, blobs, &d)? {
            report.orphan_files_removed += 1;
            report.removed_blob_digests.push(d.to_string());
        }
    }
    for (id, age) in blobs.list_uploads()? {
        if age > opts.upload_ttl.as_secs() && meta.read(|r| r.upload(&id))?.is_none() {
            blobs.remove_upload(&id)?;
            report.orphan_files_removed += 1;
        }
    }
    Ok(report)
}

/// Removes the bytes of `d` if, under its lock, no metadata row names it.
fn remove_if_unreferenced(meta: &MetadataStore, blobs: &BlobStore, d: &Digest) -> Result<bool> {
    let _lock = super::lock::lock_digest(meta, blobs, d)?;
    if meta.read(|r| r.blob_size(d))?.is_some() || !blobs.blob_exists(d)? {
        return Ok(false);
    }
    blobs.remove_blob(d)?;
    Ok(true)
}
