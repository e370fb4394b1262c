//! The layout of the ordered keyspace. Keys are raw bytes ordered lexicographically:
//!
//! | prefix | holds | range |
//! |---|---|---|
//! | `0x02 "range/" <id:u64 BE>` | the routing copy of range descriptors and members (`/Meta/range/<id>`, JSON `MetaRecord`); the authoritative descriptors are kept by each Raft group's state machine | range 1 |
//! | `0x04 <name>` | system data: cluster id, ID allocators, node registry, users, web sessions | range 1 |
//! | `0x05 ..` | user data: raw KV keys and table rows | range 2 and the ranges split from it |
//!
//! Range 1 spans `["", 0x05)` and never splits; range 2 starts at [`USER_SPACE_START`].

/// Prefix of the routing copy's records, one per range ([`crate::services::ranges::MetaRecord`]).
pub const META_PREFIX: &[u8] = b"\x02range/";
/// Prefix of all system keys.
pub const SYSTEM_PREFIX: &[u8] = b"\x04";
/// The first key outside range 1.
pub const USER_SPACE_START: &[u8] = b"\x05";

/// The key holding the cluster's id.
pub const CLUSTER_ID: &[u8] = b"\x04cluster/id";
/// The node ID allocator (big-endian u64: the last id handed out).
pub const NODE_ID_ALLOCATOR: &[u8] = b"\x04idalloc/node";
/// The range ID allocator (big-endian u64: the last id handed out).
pub const RANGE_ID_ALLOCATOR: &[u8] = b"\x04idalloc/range";
/// Prefix of node registry records (`/System/node/<id>`).
pub const NODE_PREFIX: &[u8] = b"\x04node/";
/// Prefix of node status records (`/System/status/<id>`).
pub const STATUS_PREFIX: &[u8] = b"\x04status/";
/// Prefix of node membership records (`/System/membership/<id>`): decommissioning state.
pub const MEMBERSHIP_PREFIX: &[u8] = b"\x04membership/";
/// Prefix of spans pending deletion (`/System/gc/<id>`): the rows of a dropped table, deleted
/// after the catalog change that dropped it (see [`crate::services::kv::delete_pending_span`]).
pub const GC_PREFIX: &[u8] = b"\x04gc/";
/// Prefix of web sessions (`/System/websession/<id>`).
pub const WEB_SESSION_PREFIX: &[u8] = b"\x04websession/";
/// Prefixes of the SQL catalog (databases, table names, table descriptors). A write under
/// any of them bumps the state machine's catalog version, which invalidates cached descriptors.
pub const CATALOG_PREFIXES: [&[u8]; 3] = [b"\x04db/", b"\x04ns/", b"\x04desc/"];

/// Prefix of user records (`/System/user/<name>`).
pub const USER_PREFIX: &[u8] = b"\x04user/";

/// The key of range `range_id`'s descriptor.
pub fn range_descriptor_key(range_id: u64) -> Vec<u8> {
    [META_PREFIX, &range_id.to_be_bytes()].concat()
}

/// The key of node `node_id`'s registry record.
pub fn node_key(node_id: u64) -> Vec<u8> {
    [NODE_PREFIX, &node_id.to_be_bytes()].concat()
}

/// The key of pending deletion `id` (a dropped table's id).
pub fn gc_key(id: u64) -> Vec<u8> {
    [GC_PREFIX, &id.to_be_bytes()].concat()
}

/// A pending deletion's value: `[start length u32 BE][start][end]`.
pub fn encode_span(start: &[u8], end: &[u8]) -> Vec<u8> {
    [&(start.len() as u32).to_be_bytes()[..], start, end].concat()
}

/// The span of a pending deletion's value; `None` if it is not one.
pub fn decode_span(value: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (len, rest) = value.split_first_chunk::<4>()?;
    let len = u32::from_be_bytes(*len) as usize;
    (rest.len() >= len).then(|| (rest[..len].to_vec(), rest[len..].to_vec()))
}

/// The key of node `node_id`'s membership record.
pub fn membership_key(node_id: u64) -> Vec<u8> {
    [MEMBERSHIP_PREFIX, &node_id.to_be_bytes()].concat()
}

/// The key of node `node_id`'s status record.
pub fn status_key(node_id: u64) -> Vec<u8> {
    [STATUS_PREFIX, &node_id.to_be_bytes()].concat()
}

/// The key of web session `id`.
pub fn web_session_key(id: u64) -> Vec<u8> {
    [WEB_SESSION_PREFIX, &id.to_be_bytes()].concat()
}

/// The key of user `name`'s record.
pub fn user_key(name: &str) -> Vec<u8> {
    [USER_PREFIX, name.as_bytes()].concat()
}

/// The smallest key greater than every key starting with `prefix` (empty: no upper bound).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// Encodes a counter as stored by Increment.
pub fn encode_u64(value: u64) -> Vec<u8> {
    value.to_be_bytes().to_vec()
}

/// Decodes a counter stored by Increment; `None` if the value is not 8 bytes.
pub fn decode_u64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.try_into().ok()?))
}

/// Prints a key for humans, the way CockroachDB pretty-prints keys: system keys get their
/// logical path (`/Meta/range/5`, `/System/node/3`), the ends of the keyspace are `/Min` and
/// `/Max`, and other bytes are quoted with non-printable bytes escaped.
pub fn pretty(key: &[u8]) -> String {
    if key.is_empty() {
        return "/Min".to_string();
    }
    if let Some(rest) = key.strip_prefix(META_PREFIX)
        && let Some(id) = decode_u64(rest)
    {
        return format!("/Meta/range/{id}");
    }
    if let Some(rest) = key.strip_prefix(NODE_PREFIX)
        && let Some(id) = decode_u64(rest)
    {
        return format!("/System/node/{id}");
    }
    if let Some(rest) = key.strip_prefix(SYSTEM_PREFIX) {
        return format!("/System/{}", escape(rest));
    }
    format!("\"{}\"", escape(key))
}

/// Pretty-prints an end key, where the empty key means the end of the keyspace.
pub fn pretty_end(key: &[u8]) -> String {
    if key.is_empty() { "/Max".to_string() } else { pretty(key) }
}

fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// Parses a key typed by a user: printable text as is, with `\xNN` escapes for other bytes.
pub fn parse_user_key(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && bytes.get(i + 1) == Some(&b'x') {
            let hex = text.get(i + 2..i + 4).ok_or_else(|| format!("incomplete escape in key {text:?}"))?;
            let byte = u8::from_str_radix(hex, 16).map_err(|_| format!("invalid escape \\x{hex} in key {text:?}"))?;
            out.push(byte);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_deletion_spans_round_trip_and_garbage_is_refused() {
        let value = encode_span(b"\x05t\x00\x00\x00\x07", b"\x05t\x00\x00\x00\x08");
        assert_eq!(decode_span(&value), Some((b"\x05t\x00\x00\x00\x07".to_vec(), b"\x05t\x00\x00\x00\x08".to_vec())));
        assert_eq!(decode_span(&encode_span(b"", b"")), Some((Vec::new(), Vec::new())));
        assert_eq!(decode_span(b"\x00\x00"), None);
        assert_eq!(decode_span(b"\x00\x00\x00\x09abc"), None);
    }

    #[test]
    fn system_keys_sort_inside_range_one() {
        let (gc, membership) = (gc_key(3), membership_key(4));
        for key in
            [CLUSTER_ID, NODE_ID_ALLOCATOR, &node_key(7), &range_descriptor_key(9), &user_key("root"), &gc, &membership]
        {
            assert!(key < USER_SPACE_START, "{key:?}");
        }
        assert!(range_descriptor_key(2) < range_descriptor_key(10));
        assert!(node_key(255) < node_key(256));
    }

    #[test]
    fn prefix_end_skips_trailing_ff() {
        assert_eq!(prefix_end(b"ab"), b"ac");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"");
    }

    #[test]
    fn pretty_prints_logical_paths() {
        assert_eq!(pretty(b""), "/Min");
        assert_eq!(pretty_end(b""), "/Max");
        assert_eq!(pretty(&range_descriptor_key(5)), "/Meta/range/5");
        assert_eq!(pretty(&node_key(3)), "/System/node/3");
        assert_eq!(pretty(NODE_ID_ALLOCATOR), "/System/idalloc/node");
        assert_eq!(pretty(b"user\x00\"x"), "\"user\\x00\\x22x\"");
    }

    #[test]
    fn user_keys_parse_escapes() {
        assert_eq!(parse_user_key("a\\x00b").unwrap(), b"a\x00b");
        assert_eq!(parse_user_key("plain").unwrap(), b"plain");
        assert!(parse_user_key("bad\\x4").is_err());
        assert!(parse_user_key("bad\\xzz").is_err());
    }
}
