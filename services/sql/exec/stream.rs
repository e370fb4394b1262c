//! Reading a table's rows as they come: a scan is read in pages from one snapshot (see
//! [`crate::services::scan`]), holding and charging one page at a time, and a SELECT that needs
//! no materialization (no sort, nothing to deduplicate) hands its rows to the client one by one
//! as pages arrive. The first page is read when the statement runs, so the snapshot is the
//! state at that moment even if the client reads the rows much later.

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use sqlparser::ast::{Expr, SelectItem};

use super::SqlEngine;
use super::dml::count_star;
use crate::services::kv::Op;
use crate::services::scan::{CursorRef, PageLimits, ScanRequest};
use crate::services::sql::SqlHost;
use crate::services::sql::catalog::TableDescriptor;
use crate::services::sql::error::SqlError;
use crate::services::sql::expr::{Ctx, eval};
use crate::services::sql::limits::MemoryBudget;
use crate::services::sql::plan::Access;
use crate::services::sql::session::SessionHandle;
use crate::services::sql::value::Value;

/// Most rows one page carries.
const PAGE_ROWS: u32 = 1024;
/// Most key and value bytes of one page, and the least.
const MAX_PAGE_BYTES: u64 = 256 * 1024;
const MIN_PAGE_BYTES: u64 = 4 * 1024;
/// The share of a statement's budget one page may take in stored bytes: decoded, a row takes
/// a few times its stored size, and a sort or a write set may be charged beside the page.
const PAGE_SHARE_OF_BUDGET: u64 = 8;

/// The page size a statement with `budget` bytes reads with.
pub(super) fn page_limits(budget: u64, rows: Option<usize>) -> PageLimits {
    let bytes = (budget / PAGE_SHARE_OF_BUDGET).clamp(MIN_PAGE_BYTES, MAX_PAGE_BYTES) as u32;
    let rows = rows.map_or(PAGE_ROWS, |n| (n.min(PAGE_ROWS as usize) as u32).max(1));
    PageLimits { max_rows: rows, max_bytes: bytes }
}

/// The rows of a statement's result, produced as the client reads them.
pub struct RowStream(pub Pin<Box<dyn Stream<Item = Result<Vec<Value>, SqlError>> + Send>>);

impl std::fmt::Debug for RowStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RowStream")
    }
}

/// Bytes charged for holding `rows`: their keys and values and the pairs holding them.
fn page_bytes(rows: &[(Vec<u8>, Vec<u8>)]) -> usize {
    rows.iter().map(|(k, v)| k.len() + v.len() + std::mem::size_of::<(Vec<u8>, Vec<u8>)>()).sum()
}

/// A scan read page by page from one snapshot, holding (and charging to the statement) only
/// the page being read. Dropped before its end, it closes its cursor at once.
struct PagedScan {
    host: Arc<dyn SqlHost>,
    end: Vec<u8>,
    /// The next page's cursor (`None` before the first page) and first key; `None`: done.
    next: Option<(Option<CursorRef>, Vec<u8>)>,
    limits: PageLimits,
    budget: Arc<MemoryBudget>,
    held: usize,
}

impl PagedScan {
    /// The next page, or `None` at the end; the previous page's charge is released first.
    async fn next_page(&mut self) -> Result<Option<Vec<(Vec<u8>, Vec<u8>)>>, SqlError> {
        self.budget.release(std::mem::take(&mut self.held));
        // A group's part of the scan may hold no rows: the next part opens where it ends, so
        // the loop ends at the first page with rows or at the scan's end. Each turn starts
        // further on: bounded by the number of groups the scan crosses.
        let page = loop {
            let Some((cursor, start)) = self.next.take() else { return Ok(None) };
            let request = ScanRequest { start, end: self.end.clone(), cursor, limits: self.limits, close: false };
            let page = self.host.scan_page(request).await?;
            match &page.resume {
                Some((None, next)) if page.rows.is_empty() => self.next = Some((None, next.clone())),
                Some(_) if page.rows.is_empty() => {
                    return Err(SqlError::new("XX000", "internal error: an empty page of a scan that goes on"));
                }
                _ => break page,
            }
        };
        self.next = page.resume;
        self.held = page_bytes(&page.rows);
        self.budget.charge(self.held)?;
        Ok(Some(page.rows))
    }
}

impl Drop for PagedScan {
    fn drop(&mut self) {
        self.budget.release(self.held);
        // A scan left before its end (LIMIT reached, an error, the client gone) closes its
        // snapshot now rather than when the cursor's idle timeout runs out.
        if let Some((Some(cursor), start)) = self.next.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let host = self.host.clone();
            let request = ScanRequest {
                start,
                end: std::mem::take(&mut self.end),
                cursor: Some(cursor),
                limits: self.limits,
                close: true,
            };
            runtime.spawn(async move {
                if let Err(err) = host.scan_page(request).await {
                    tracing::debug!(error = %err, "closing an abandoned scan");
                }
            });
        }
    }
}

/// The stored rows of an access plan, in key order: point gets read at once, a scan page by
/// page.
pub(super) struct RowReader {
    scan: Option<PagedScan>,
    page: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
}

impl RowReader {
    /// The next stored row (key and value), or `None` after the last.
    pub(super) async fn next(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>, SqlError> {
        // Each pass either returns or reads a page that holds at least one row (an empty page
        // ends the scan), so this runs at most twice per row.
        loop {
            if let Some(row) = self.page.next() {
                return Ok(Some(row));
            }
            let Some(scan) = &mut self.scan else { return Ok(None) };
            match scan.next_page().await? {
                Some(rows) if !rows.is_empty() => self.page = rows.into_iter(),
                _ => {
                    self.scan = None;
                    return Ok(None);
                }
            }
        }
    }
}

impl SqlEngine {
    /// Starts reading the rows of `access`: point gets are read whole (their keys are in the
    /// statement already), a scan's first page is read now, so the scan's snapshot is taken
    /// when the statement runs. `rows` caps how many rows the caller may want, to size pages.
    pub(super) async fn open_rows(
        &self,
        access: &Access,
        budget: &Arc<MemoryBudget>,
        rows: Option<usize>,
    ) -> Result<RowReader, SqlError> {
        match access {
            Access::Keys(keys) if keys.is_empty() => Ok(RowReader { scan: None, page: Vec::new().into_iter() }),
            Access::Keys(keys) => {
                // The keys themselves (an IN list's), and the Get ops holding copies.
                budget.charge(keys.iter().map(|key| 2 * key.len() + std::mem::size_of::<Op>()).sum())?;
                let ops = keys.iter().map(|key| Op::Get { key: key.clone() }).collect();
                let results = self.host().batch(ops).await?;
                let mut found = Vec::new();
                for (key, result) in keys.iter().zip(results) {
                    if let Some(value) = result.value {
                        budget.charge(key.len() + value.len())?;
                        found.push((key.clone(), value));
                    }
                }
                Ok(RowReader { scan: None, page: found.into_iter() })
            }
            Access::Scan { start, end } => {
                let mut scan = PagedScan {
                    host: self.host().clone(),
                    end: end.clone(),
                    next: Some((None, start.clone())),
                    limits: page_limits(budget.limit(), rows),
                    budget: budget.clone(),
                    held: 0,
                };
                let first = scan.next_page().await?.unwrap_or_default();
                Ok(RowReader { scan: Some(scan), page: first.into_iter() })
            }
        }
    }
}

/// The values of one result row: the select list evaluated on a stored `row`.
pub(super) fn project_row(projection: &[SelectItem], row: &[Value], ctx: &Ctx<'_>) -> Result<Vec<Value>, SqlError> {
    let mut values = Vec::with_capacity(projection.len());
    for item in projection {
        match item {
            SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => values.extend(row.iter().cloned()),
            SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => {
                if count_star(item) {
                    return Err(SqlError::new("42803", "count(*) must be the only output column (no GROUP BY)"));
                }
                values.push(eval(expr, ctx)?)
            }
            other => return Err(SqlError::unsupported(format!("select item {other} is not supported"))),
        }
    }
    Ok(values)
}

/// What a streamed SELECT does to each stored row: decode, WHERE, OFFSET, LIMIT, the select list.
pub(super) struct Pipeline {
    pub(super) table: TableDescriptor,
    pub(super) selection: Option<Expr>,
    pub(super) projection: Vec<SelectItem>,
    pub(super) params: Vec<Value>,
    pub(super) session: SessionHandle,
    /// Matching rows still to skip.
    pub(super) offset: usize,
    /// Rows still to produce (`None`: all).
    pub(super) limit: Option<usize>,
}

impl Pipeline {
    /// Whether a stored row passes the WHERE clause; returns it decoded.
    pub(super) fn matches(&self, value: &[u8]) -> Result<Option<Vec<Value>>, SqlError> {
        let row = self.table.decode_row(value)?;
        if let Some(selection) = &self.selection {
            let ctx =
                Ctx { table: Some(&self.table), row: Some(&row), params: &self.params, session: Some(&self.session) };
            if eval(selection, &ctx)? != Value::Bool(true) {
                return Ok(None);
            }
        }
        Ok(Some(row))
    }

    /// The result row for a stored row, if it matches and is not skipped by OFFSET.
    fn admit(&mut self, value: &[u8]) -> Result<Option<Vec<Value>>, SqlError> {
        let Some(row) = self.matches(value)? else { return Ok(None) };
        if self.offset > 0 {
            self.offset -= 1;
            return Ok(None);
        }
        let ctx = Ctx { table: Some(&self.table), row: Some(&row), params: &self.params, session: Some(&self.session) };
        let values = project_row(&self.projection, &row, &ctx)?;
        if let Some(limit) = &mut self.limit {
            *limit -= 1;
        }
        Ok(Some(values))
    }

    fn done(&self) -> bool {
        self.limit == Some(0)
    }
}

/// The result rows of `pipeline` over the rows `reader` reads, as the consumer asks for them.
/// After an error the stream ends.
pub(super) fn stream_rows(reader: RowReader, pipeline: Pipeline) -> RowStream {
    let stream = futures::stream::unfold(Some((reader, pipeline)), |state| async move {
        let (mut reader, mut pipeline) = state?;
        if pipeline.done() {
            return None;
        }
        // Each pass consumes one stored row; the scan is finite.
        loop {
            let value = match reader.next().await {
                Ok(Some((_, value))) => value,
                Ok(None) => return None,
                Err(err) => return Some((Err(err), None)),
            };
            match pipeline.admit(&value) {
                Ok(Some(row)) => return Some((Ok(row), Some((reader, pipeline)))),
                Ok(None) => continue,
                Err(err) => return Some((Err(err), None)),
            }
        }
    });
    RowStream(Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_an_eighth_of_the_budget_within_bounds() {
        assert_eq!(page_limits(64 << 20, None), PageLimits { max_rows: PAGE_ROWS, max_bytes: 256 * 1024 });
        assert_eq!(page_limits(256 << 10, None).max_bytes, 32 * 1024);
        assert_eq!(page_limits(1024, None).max_bytes, 4 * 1024);
        assert_eq!(page_limits(1 << 20, Some(10)).max_rows, 10);
        assert_eq!(page_limits(1 << 20, Some(0)).max_rows, 1);
        assert_eq!(page_limits(1 << 20, Some(1 << 40)).max_rows, PAGE_ROWS);
    }
}
