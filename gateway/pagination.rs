//! Pagination: CockroachDB's offset pagination for `/nodes/` and `/nodes/{id}/ranges/`, and
//! an opaque, versioned token for the fan-out endpoints (`/sessions/`, `/ranges/hot/`).
//!
//! A token is `v1.<kind>.<cursor>` (`v1.hot.<position>`, `v1.sessions.<start ns>.<id hex>`):
//! opaque to clients, but plain enough that the OpenAPI document states exactly which
//! tokens are accepted (a pattern), in characters that need no escaping in a URL. Numbers are
//! canonical (no sign, no leading zero). Unlike CockroachDB (which silently restarts on a bad
//! token), a token that does not decode is a 400; a well-formed token past the end is a 200
//! with no rows. `next` appears only while more rows remain.

use std::num::NonZeroUsize;

use crate::gateway::error::ApiError;

/// How many rows a page holds: a number of rows, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limit(Option<NonZeroUsize>);

impl Limit {
    /// Every row, in one page.
    pub const fn all() -> Self {
        Limit(None)
    }

    /// At most `rows` rows.
    pub const fn at_most(rows: NonZeroUsize) -> Self {
        Limit(Some(rows))
    }

    /// The number of rows, `None` for all.
    pub fn get(self) -> Option<usize> {
        self.0.map(NonZeroUsize::get)
    }

    /// The limit of the nodes' gRPC requests, where 0 means all.
    pub fn to_wire(self) -> u32 {
        self.get().map_or(0, |rows| u32::try_from(rows).unwrap_or(u32::MAX))
    }
}

/// The largest `limit` and `offset` accepted: what a node's request carries (and more rows
/// than any page could hold).
pub const MAX_PAGE_VALUE: u32 = i32::MAX as u32;

/// Reads `limit` and `offset`. Each is a decimal integer from 0 to [`MAX_PAGE_VALUE`]; a
/// missing or 0 limit means everything, and an offset without a limit is ignored, as in
/// CockroachDB. Unlike CockroachDB, which silently reads garbage (`abc`, `-1`, `10^23`) as
/// "no limit" or "offset 0", anything else is an error naming the parameter: a client that
/// sent `limit=-1` meant something, and a whole table is a bad surprise for it.
pub fn parse_limit_offset(limit: Option<&str>, offset: Option<&str>) -> Result<(Limit, usize), ApiError> {
    let limit = parse_page_value("limit", limit)?.and_then(NonZeroUsize::new).map_or(Limit::all(), Limit::at_most);
    let offset = parse_page_value("offset", offset)?.unwrap_or(0);
    Ok((limit, if limit.get().is_some() { offset } else { 0 }))
}

/// One of `limit`/`offset`: `None` when absent, else digits only (no sign, no spaces) within
/// [`MAX_PAGE_VALUE`].
fn parse_page_value(name: &str, text: Option<&str>) -> Result<Option<usize>, ApiError> {
    let Some(text) = text else { return Ok(None) };
    let value = Some(text)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|v| *v <= u64::from(MAX_PAGE_VALUE));
    match value {
        Some(value) => Ok(Some(value as usize)),
        None => Err(ApiError::bad_request(format!("invalid {name}: must be an integer from 0 to {MAX_PAGE_VALUE}"))),
    }
}

/// Slices `items` by `limit`/`offset`; returns the page and `next` (the next offset, only if
/// more items remain — always greater than `offset`).
pub fn paginate<T>(items: Vec<T>, limit: Limit, offset: usize) -> (Vec<T>, Option<usize>) {
    let Some(rows) = limit.get() else { return (items, None) };
    let next = next_offset(items.len(), limit, offset);
    (items.into_iter().skip(offset).take(rows).collect(), next)
}

/// `next` for a page of `limit` from `offset` out of `total` items (all: one page).
pub fn next_offset(total: usize, limit: Limit, offset: usize) -> Option<usize> {
    let end = offset.saturating_add(limit.get()?).min(total);
    (end < total).then_some(end)
}

/// What a fan-out token points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// Sessions: after the session that started at `start` (ns) with id `id` (hex).
    Sessions { start: i64, id: String },
    /// Hot ranges: the position in the ranked list.
    HotRanges { position: usize },
}

const VERSION: &str = "v1";

/// The latest session start (ns since the epoch, in 2255) a token carries: 19 digits with a
/// first digit up to 8, which the document's pattern can state (`i64::MAX` it could not).
const MAX_SESSION_START: u64 = 8_999_999_999_999_999_999;

/// The OpenAPI pattern of `start` on `/ranges/hot/` (empty: the first page). The query
/// type's attribute needs a literal; a test checks the document carries this one.
pub const HOT_TOKEN_PATTERN: &str = r"^(|v1\.hot\.(0|[1-9][0-9]{0,17}))$";

/// The OpenAPI pattern of `start` on `/sessions/` (empty: the first page), checked likewise.
pub const SESSIONS_TOKEN_PATTERN: &str = r"^(|v1\.sessions\.(0|[1-9][0-9]{0,17}|[1-8][0-9]{18})\.[0-9a-f]{32})$";

/// Encodes a cursor as an opaque token.
pub fn encode(cursor: &Cursor) -> String {
    match cursor {
        Cursor::Sessions { start, id } => format!("{VERSION}.sessions.{start}.{id}"),
        Cursor::HotRanges { position } => format!("{VERSION}.hot.{position}"),
    }
}

/// Decodes a token; `None` if it is not one of ours (exactly the patterns above).
pub fn decode(token: &str) -> Option<Cursor> {
    let mut parts = token.split('.');
    if parts.next()? != VERSION {
        return None;
    }
    let cursor = match parts.next()? {
        "sessions" => {
            let start = canonical_number(parts.next()?, 19).filter(|s| *s <= MAX_SESSION_START)?;
            let id = parts.next()?;
            if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return None;
            }
            Cursor::Sessions { start: start as i64, id: id.to_string() }
        }
        "hot" => Cursor::HotRanges { position: canonical_number(parts.next()?, 18)? as usize },
        _ => return None,
    };
    parts.next().is_none().then_some(cursor)
}

/// A number as [`encode`] writes it: digits only, no leading zero, at most `max_digits`.
fn canonical_number(text: &str, max_digits: usize) -> Option<u64> {
    let canonical = text == "0" || (!text.starts_with('0') && text.len() <= max_digits);
    (canonical && !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())).then(|| text.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(limit: usize) -> Limit {
        Limit::at_most(NonZeroUsize::new(limit).unwrap())
    }

    #[test]
    fn simple_pagination_matches_cockroachdb_and_refuses_garbage() {
        assert_eq!(parse_limit_offset(None, Some("5")), Ok((Limit::all(), 0)));
        assert_eq!(parse_limit_offset(Some("0"), Some("5")), Ok((Limit::all(), 0)));
        assert_eq!(parse_limit_offset(Some("2"), Some("3")), Ok((rows(2), 3)));
        assert_eq!(parse_limit_offset(Some("2147483647"), Some("0")), Ok((rows(2147483647), 0)));
        let limit_error = "invalid limit: must be an integer from 0 to 2147483647";
        for garbage in ["", "x", "-3", "+3", " 3", "1.5", "2147483648", "100000000000000000000000"] {
            assert_eq!(parse_limit_offset(Some(garbage), None).unwrap_err().message, limit_error, "{garbage:?}");
            let offset_error = parse_limit_offset(Some("2"), Some(garbage)).unwrap_err().message;
            assert_eq!(offset_error, "invalid offset: must be an integer from 0 to 2147483647", "{garbage:?}");
        }
        assert_eq!(paginate(vec![1, 2, 3, 4, 5], rows(2), 0), (vec![1, 2], Some(2)));
        assert_eq!(paginate(vec![1, 2, 3, 4, 5], rows(2), 2), (vec![3, 4], Some(4)));
        assert_eq!(paginate(vec![1, 2, 3, 4, 5], rows(2), 4), (vec![5], None));
        assert_eq!(paginate(vec![1, 2, 3], rows(2), 9), (vec![], None));
        assert_eq!(paginate(vec![1, 2, 3], Limit::all(), 0), (vec![1, 2, 3], None));
        assert_eq!(next_offset(5, rows(2), 2), Some(4));
        assert_eq!(next_offset(5, rows(2), 4), None);
        assert_eq!(next_offset(5, Limit::all(), 0), None);
        assert_eq!((Limit::all().to_wire(), rows(7).to_wire()), (0, 7));
    }

    #[test]
    fn tokens_round_trip_and_reject_garbage() {
        let cursors = [
            Cursor::Sessions { start: 1_700_000_000_000_000_000, id: "00112233445566778899aabbccddeeff".into() },
            Cursor::HotRanges { position: 20 },
        ];
        for cursor in cursors {
            assert_eq!(decode(&encode(&cursor)), Some(cursor));
        }
        assert_eq!(encode(&Cursor::HotRanges { position: 20 }), "v1.hot.20");
        assert_eq!(decode("v1.hot.0"), Some(Cursor::HotRanges { position: 0 }));
        let latest = format!("v1.sessions.8999999999999999999.{}", "a".repeat(32));
        assert!(decode(&latest).is_some());
        for garbage in [
            "",
            "garbage",
            "!!!",
            "v2.hot.1",
            "v1.hot.x",
            "v1.hot.01",
            "v1.hot.+1",
            "v1.hot.1000000000000000000",
            "v1.hot.1.extra",
            "v1.sessions.5.nothex",
            &format!("v1.sessions.5.{}", "A".repeat(32)),
            &format!("v1.sessions.9000000000000000000.{}", "a".repeat(32)),
            &format!("v1.sessions.-5.{}", "a".repeat(32)),
        ] {
            assert_eq!(decode(garbage), None, "{garbage}");
        }
    }
}
