//! Pagination: CockroachDB's offset pagination for `/nodes/` and `/nodes/{id}/ranges/`, and
//! an opaque, versioned token for the fan-out endpoints (`/sessions/`, `/ranges/hot/`).
//!
//! A token is URL-safe base64 of `v1:<kind>:<cursor>`. Unlike CockroachDB (which silently
//! restarts on a bad token), a token that does not decode is a 400; a well-formed token past
//! the end is a 200 with no rows. `next` appears only while more rows remain.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE;

/// Reads `limit` and `offset` as CockroachDB does: a missing, unparsable or non-positive limit
/// means "everything"; a bad or negative offset means 0.
pub fn simple_values(limit: Option<&str>, offset: Option<&str>) -> (usize, usize) {
    let limit = limit.and_then(|l| l.trim().parse::<i64>().ok()).filter(|l| *l > 0).unwrap_or(0) as usize;
    let offset = if limit == 0 {
        0
    } else {
        offset.and_then(|o| o.trim().parse::<i64>().ok()).filter(|o| *o > 0).unwrap_or(0) as usize
    };
    (limit, offset)
}

/// Slices `items` by `limit`/`offset`; returns the page and `next` (the next offset, only if
/// more items remain — always greater than `offset`).
pub fn paginate<T>(items: Vec<T>, limit: usize, offset: usize) -> (Vec<T>, Option<usize>) {
    if limit == 0 {
        return (items, None);
    }
    let next = next_offset(items.len(), limit, offset);
    (items.into_iter().skip(offset).take(limit).collect(), next)
}

/// `next` for a page of `limit` from `offset` out of `total` items (limit 0: one page).
pub fn next_offset(total: usize, limit: usize, offset: usize) -> Option<usize> {
    if limit == 0 {
        return None;
    }
    let end = offset.saturating_add(limit).min(total);
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

    #[test]
    fn simple_pagination_matches_cockroachdb() {
        assert_eq!(simple_values(None, Some("5")), (0, 0));
        assert_eq!(simple_values(Some("2"), Some("-1")), (2, 0));
        assert_eq!(simple_values(Some("x"), None), (0, 0));
        assert_eq!(simple_values(Some("2"), Some("3")), (2, 3));
        assert_eq!(paginate(vec![1, 2, 3, 4, 5], 2, 0), (vec![1, 2], Some(2)));
        assert_eq!(paginate(vec![1, 2, 3, 4, 5], 2, 2), (vec![3, 4], Some(4)));
        assert_eq!(paginate(vec![1, 2, 3, 4, 5], 2, 4), (vec![5], None));
        assert_eq!(paginate(vec![1, 2, 3], 2, 9), (vec![], None));
        assert_eq!(paginate(vec![1, 2, 3], 0, 0), (vec![1, 2, 3], None));
        assert_eq!(next_offset(5, 2, 2), Some(4));
        assert_eq!(next_offset(5, 2, 4), None);
        assert_eq!(next_offset(5, 0, 0), None);
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
