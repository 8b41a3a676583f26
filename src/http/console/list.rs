//! Long lists, a page at a time: the filter and sort form above a table and the pager below it.
//! Lists the API pages itself (repositories, tags) pass `q`, `sort` and `page` through; lists
//! the API answers whole (robots, bindings, credentials) are filtered, sorted and cut here, so
//! the browser never receives more than a page.

use std::collections::HashMap;

use maud::{Markup, html};
use serde_json::Value;

use super::html::seg;

/// Rows per page of the lists cut here.
pub(super) const PAGE: usize = 50;

/// What a list page was asked for.
pub(super) struct Wanted {
    /// A case-insensitive part of the row's text ("" for every row).
    pub(super) q: String,
    pub(super) sort: String,
    /// 1-based.
    pub(super) page: u64,
}

impl Wanted {
    /// From the query string; a sort not in `sorts` falls back to the first.
    pub(super) fn read(query: &HashMap<String, String>, sorts: &[(&str, &str)]) -> Wanted {
        let sort = query
            .get("sort")
            .filter(|s| sorts.iter().any(|(k, _)| k == s))
            .cloned()
            .unwrap_or_else(|| sorts.first().map_or("", |s| s.0).to_owned());
        Wanted {
            q: query
                .get("q")
                .map_or("", |q| q.trim())
                .chars()
                .take(200)
                .collect(),
            sort,
            page: query
                .get("page")
                .and_then(|p| p.parse().ok())
                .unwrap_or(1)
                .max(1),
        }
    }

    /// The query string of page `page` of this list (`q` and `sort` kept).
    pub(super) fn query(&self, page: u64) -> String {
        let mut q = format!("?sort={}&page={page}", seg(&self.sort));
        if !self.q.is_empty() {
            q.push_str(&format!("&q={}", seg(&self.q)));
        }
        q
    }

    /// Rows holding `q` (in `text`'s words), sorted by `sort`, cut to this page; with how many
    /// rows matched and the number of pages.
    pub(super) fn cut(
        &self,
        mut rows: Vec<Value>,
        text: impl Fn(&Value) -> String,
        sort: impl Fn(&mut Vec<Value>, &str),
    ) -> (Vec<Value>, u64, u64) {
        let q = self.q.to_lowercase();
        rows.retain(|r| text(r).to_lowercase().contains(&q));
        sort(&mut rows, &self.sort);
        let total = rows.len() as u64;
        let pages = total.div_ceil(PAGE as u64).max(1);
        let skip = usize::try_from(self.page.min(pages) - 1).unwrap_or(0) * PAGE;
        (
            rows.into_iter().skip(skip).take(PAGE).collect(),
            total,
            pages,
        )
    }
}

/// The filter and sort form of a list at `path` (a GET: the result has its own address).
pub(super) fn controls(path: &str, w: &Wanted, sorts: &[(&str, &str)], what: &str) -> Markup {
    html! {
        form.filters role="search" method="get" action=(path) aria-label=(format!("Filter {what}")) {
            div.field {
                label for="list-q" { "Filter" }
                input #list-q type="search" name="q" value=(w.q) placeholder=(format!("part of a {what} name"));
            }
            @if sorts.len() > 1 {
                div.field {
                    label for="list-sort" { "Sort by" }
                    select #list-sort name="sort" {
                        @for (k, label) in sorts { option value=(k) selected[*k == w.sort] { (label) } }
                    }
                }
            }
            button type="submit" { "Show" }
        }
    }
}

/// Below a list: where this page is, and links to the first, previous and next pages.
pub(super) fn pager(path: &str, w: &Wanted, pages: u64, total: u64) -> Markup {
    let page = w.page.min(pages);
    html! {
        nav.pager aria-label="Pages" {
            @if page > 1 {
                a href=(format!("{path}{}", w.query(1))) { "« First" } " "
                a rel="prev" href=(format!("{path}{}", w.query(page - 1))) { "‹ Previous" } " "
            }
            span.muted { "Page " (page) " of " (pages) " · " (total) " in all" }
            @if page < pages {
                " " a rel="next" href=(format!("{path}{}", w.query(page + 1))) { "Next ›" }
            }
        }
    }
}

/// Sorts rows by a string field, ascending; `desc` for newest (largest) first.
pub(super) fn sort_by_field(rows: &mut [Value], field: &str, desc: bool) {
    rows.sort_by(|a, b| {
        let (x, y) = (&a[field], &b[field]);
        let o = match (x.as_u64(), y.as_u64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x.as_str().unwrap_or("").cmp(y.as_str().unwrap_or("")),
        };
        if desc { o.reverse() } else { o }
    });
}
