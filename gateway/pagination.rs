//! Pagination: CockroachDB's offset pagination for `/nodes/` and `/nodes/{id}/ranges/`, and
//! an opaque, versioned token for the fan-out endpoints (`/sessions/`, `/ranges/hot/`).
//!
//! A token is URL-safe base64 of `v1:<kind>:<cursor>`. Unlike CockroachDB (which silently
//! restarts on a bad token), a token that does not decode is a 400; a well-formed token past
//! the end is a 200 with no rows. `next` appears only while more rows remain.

use std::num::NonZeroUsize;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;

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

/// Reads `limit` and `offset` as CockroachDB does: a missing, unparsable or non-positive limit
/// means everything; a bad or negative offset means 0, and so does any offset without a limit.
pub fn parse_limit_offset(limit: Option<&str>, offset: Option<&str>) -> (Limit, usize) {
    let limit = limit
        .and_then(|l| l.trim().parse::<i64>().ok())
        .and_then(|l| usize::try_from(l).ok())
        .and_then(NonZeroUsize::new)
        .map_or(Limit::all(), Limit::at_most);
    let offset = match limit.get() {
        None => 0,
        Some(_) => offset.and_then(|o| o.trim().parse::<i64>().ok()).filter(|o| *o > 0).unwrap_or(0) as usize,
    };
    (limit, offset)
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

/// Encodes a cursor as an opaque token.
pub fn encode(cursor: &Cursor) -> String {
    let text = match cursor {
        Cursor::Sessions { start, id } => format!("{VERSION}:sessions:{start}:{id}"),
        Cursor::HotRanges { position } => format!("{VERSION}:hot:{position}"),
    };
    URL_SAFE.encode(text)
}

/// Decodes a token; `None` if it is not one of ours.
pub fn decode(token: &str) -> Option<Cursor> {
    let bytes = URL_SAFE.decode(token.trim()).ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let mut parts = text.split(':');
    if parts.next()? != VERSION {
        return None;
    }
    let cursor = match parts.next()? {
        "sessions" => {
            let start = parts.next()?.parse().ok()?;
            let id = parts.next()?.to_string();
            if id.len() != 32 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            Cursor::Sessions { start, id }
        }
        "hot" => Cursor::HotRanges { position: parts.next()?.parse().ok()? },
        _ => return None,
    };
    parts.next().is_none().then_some(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(limit: usize) -> Limit {
        Limit::at_most(NonZeroUsize::new(limit).unwrap())
    }

    #[test]
    fn simple_pagination_matches_cockroachdb() {
        assert_eq!(parse_limit_offset(None, Some("5")), (Limit::all(), 0));
        assert_eq!(parse_limit_offset(Some("2"), Some("-1")), (rows(2), 0));
        assert_eq!(parse_limit_offset(Some("x"), None), (Limit::all(), 0));
        assert_eq!(parse_limit_offset(Some("-3"), Some("1")), (Limit::all(), 0));
        assert_eq!(parse_limit_offset(Some("2"), Some("3")), (rows(2), 3));
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
        for garbage in [
            "",
            "garbage",
            "!!!",
            &URL_SAFE.encode("v2:hot:1"),
            &URL_SAFE.encode("v1:hot:x"),
            &URL_SAFE.encode("v1:hot:1:extra"),
            &URL_SAFE.encode("v1:sessions:5:nothex"),
        ] {
            assert_eq!(decode(garbage), None, "{garbage}");
        }
    }
}
