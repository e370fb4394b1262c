//! SQL types and values, and how they are stored:
//! - primary-key columns are encoded into the row's key with an order-preserving encoding, so
//!   key order is primary-key order and range scans are primary-key ranges;
//! - the row's value holds every column (JSON of [`Value`]s, in column order).
//!
//! A row of table `T` lives at `0xF0 <T:u32 BE> 0x01 <pk columns>`, printed as
//! `/Table/<T>/1/<pk>`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pgwire::api::Type;
use serde::{Deserialize, Serialize};

use crate::services::keys;
use crate::services::sql::error::SqlError;

/// First byte of every table key.
pub const TABLE_PREFIX: u8 = 0xF0;
/// The primary index id (the only index).
pub const PRIMARY_INDEX: u8 = 1;

/// A column type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SqlType {
    /// INT, INT8, BIGINT, INTEGER, SMALLINT (stored as 64-bit).
    Int,
    /// FLOAT, FLOAT8, REAL, DOUBLE PRECISION (64-bit).
    Float,
    /// STRING, TEXT, VARCHAR, CHAR.
    String,
    /// BYTES, BYTEA.
    Bytes,
    /// BOOL, BOOLEAN.
    Bool,
    /// TIMESTAMP, TIMESTAMPTZ (microseconds since the epoch, UTC).
    Timestamp,
}

impl SqlType {
    /// Parses a type name as written in CREATE TABLE (CockroachDB and PostgreSQL spellings).
    pub fn parse(name: &str) -> Result<SqlType, SqlError> {
        let upper = name.to_ascii_uppercase();
        let base = upper.split('(').next().unwrap_or("").trim();
        Ok(match base {
            "INT" | "INT8" | "INT4" | "INT2" | "INT64" | "BIGINT" | "INTEGER" | "SMALLINT" => SqlType::Int,
            "FLOAT" | "FLOAT8" | "FLOAT4" | "REAL" | "DOUBLE" | "DOUBLE PRECISION" => SqlType::Float,
            "STRING" | "TEXT" | "VARCHAR" | "CHAR" | "CHARACTER VARYING" | "CHARACTER" => SqlType::String,
            "BYTES" | "BYTEA" | "BLOB" => SqlType::Bytes,
            "BOOL" | "BOOLEAN" => SqlType::Bool,
            "TIMESTAMP" | "TIMESTAMPTZ" | "TIMESTAMP WITHOUT TIME ZONE" | "TIMESTAMP WITH TIME ZONE" => {
                SqlType::Timestamp
            }
            _ => return Err(SqlError::unsupported(format!("type {name} is not supported"))),
        })
    }

    /// The PostgreSQL type sent to clients.
    pub fn pg_type(self) -> Type {
        match self {
            SqlType::Int => Type::INT8,
            SqlType::Float => Type::FLOAT8,
            SqlType::String => Type::TEXT,
            SqlType::Bytes => Type::BYTEA,
            SqlType::Bool => Type::BOOL,
            SqlType::Timestamp => Type::TIMESTAMP,
        }
    }

    /// The name shown by SHOW COLUMNS and errors (CockroachDB's).
    pub fn name(self) -> &'static str {
        match self {
            SqlType::Int => "INT8",
            SqlType::Float => "FLOAT8",
            SqlType::String => "STRING",
            SqlType::Bytes => "BYTES",
            SqlType::Bool => "BOOL",
            SqlType::Timestamp => "TIMESTAMP",
        }
    }
}

/// A SQL value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Value {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A string.
    String(String),
    /// Bytes.
    Bytes(Vec<u8>),
    /// A boolean.
    Bool(bool),
    /// Microseconds since the epoch.
    Timestamp(i64),
}

impl Value {
    /// Whether this is NULL.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Converts the value to `ty`, as assigning it to a column of that type does.
    pub fn coerce(self, ty: SqlType) -> Result<Value, SqlError> {
        let mismatch =
            |v: &Value| SqlError::new("42804", format!("value {} is not of type {}", v.display(), ty.name()));
        Ok(match (self, ty) {
            (Value::Null, _) => Value::Null,
            (v @ Value::Int(_), SqlType::Int) => v,
            (Value::Int(i), SqlType::Float) => Value::Float(i as f64),
            (Value::Float(f), SqlType::Int) if f.fract() == 0.0 && f.abs() < 9.2e18 => Value::Int(f as i64),
            (v @ Value::Float(_), SqlType::Float) => v,
            (v @ Value::String(_), SqlType::String) => v,
            (Value::String(s), SqlType::Int) => Value::Int(
                s.trim().parse().map_err(|_| SqlError::new("22P02", format!("could not parse {s:?} as type int")))?,
            ),
            (Value::String(s), SqlType::Float) => Value::Float(
                s.trim().parse().map_err(|_| SqlError::new("22P02", format!("could not parse {s:?} as type float")))?,
            ),
            (Value::String(s), SqlType::Bool) => Value::Bool(parse_bool(&s)?),
            (Value::String(s), SqlType::Bytes) => Value::Bytes(parse_bytes_literal(&s)),
            (Value::String(s), SqlType::Timestamp) => Value::Timestamp(parse_timestamp(&s)?),
            (v @ Value::Bytes(_), SqlType::Bytes) => v,
            (v @ Value::Bool(_), SqlType::Bool) => v,
            (v @ Value::Timestamp(_), SqlType::Timestamp) => v,
            (Value::Int(i), SqlType::String) => Value::String(i.to_string()),
            (v, _) => return Err(mismatch(&v)),
        })
    }

    /// The value as text, as PostgreSQL prints it.
    pub fn display(&self) -> String {
        match self {
            Value::Null => "NULL".into(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => f.to_string(),
            Value::String(s) => s.clone(),
            Value::Bytes(b) => format!("\\x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
            Value::Bool(b) => if *b { "t" } else { "f" }.into(),
            Value::Timestamp(us) => format_timestamp(*us),
        }
    }

    /// The value as a `SystemTime` (timestamps only).
    pub fn as_system_time(us: i64) -> SystemTime {
        if us >= 0 {
            UNIX_EPOCH + Duration::from_micros(us as u64)
        } else {
            UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
        }
    }

    /// Compares two values for ORDER BY and comparisons; `None` when either is NULL or the
    /// types cannot be compared.
    pub fn compare(&self, other: &Value) -> Option<std::cmp::Ordering> {
        use Value::*;
        match (self, other) {
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Int(a), Float(b)) => (*a as f64).partial_cmp(b),
            (Float(a), Int(b)) => a.partial_cmp(&(*b as f64)),
            (Float(a), Float(b)) => a.partial_cmp(b),
            (String(a), String(b)) => Some(a.cmp(b)),
            (Bytes(a), Bytes(b)) => Some(a.cmp(b)),
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            (Timestamp(a), Timestamp(b)) => Some(a.cmp(b)),
            (Timestamp(a), String(s)) => parse_timestamp(s).ok().map(|b| a.cmp(&b)),
            (String(s), Timestamp(b)) => parse_timestamp(s).ok().map(|a| a.cmp(b)),
            _ => None,
        }
    }

    /// Bytes the value occupies in memory (for the session memory estimate).
    pub fn footprint(&self) -> usize {
        std::mem::size_of::<Value>()
            + match self {
                Value::String(s) => s.len(),
                Value::Bytes(b) => b.len(),
                _ => 0,
            }
    }
}

fn parse_bool(text: &str) -> Result<bool, SqlError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "t" | "true" | "yes" | "on" | "1" => Ok(true),
        "f" | "false" | "no" | "off" | "0" => Ok(false),
        _ => Err(SqlError::new("22P02", format!("could not parse {text:?} as type bool"))),
    }
}

/// Parses a BYTES literal: `\x` hex form, otherwise the UTF-8 bytes of the text.
pub fn parse_bytes_literal(text: &str) -> Vec<u8> {
    if let Some(hex) = text.strip_prefix("\\x") {
        let bytes: Option<Vec<u8>> =
            (0..hex.len()).step_by(2).map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect();
        if let Some(bytes) = bytes {
            return bytes;
        }
    }
    text.as_bytes().to_vec()
}

/// Parses `YYYY-MM-DD[ HH:MM:SS[.ffffff]][Z|+00:00]` (UTC) into microseconds since the epoch.
pub fn parse_timestamp(text: &str) -> Result<i64, SqlError> {
    let bad = || SqlError::new("22007", format!("could not parse {text:?} as type timestamp"));
    let text = text.trim().trim_end_matches('Z').trim_end_matches("+00:00").trim_end_matches("+00");
    let (date, time) = match text.split_once([' ', 'T']) {
        Some((d, t)) => (d, t),
        None => (text, "00:00:00"),
    };
    let mut d = date.split('-').map(|p| p.parse::<i64>().map_err(|_| bad()));
    let (y, m, day) = (d.next().ok_or_else(bad)??, d.next().ok_or_else(bad)??, d.next().ok_or_else(bad)??);
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.split(':').map(|p| p.parse::<i64>().map_err(|_| bad()));
    let (hh, mm) = (t.next().ok_or_else(bad)??, t.next().unwrap_or(Ok(0))?);
    let ss = t.next().unwrap_or(Ok(0))?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    let micros_frac: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(6).collect();
        digits.parse::<i64>().map_err(|_| bad())? * 10i64.pow(6 - digits.len() as u32)
    };
    let days = days_from_civil(y, m, day);
    Ok(((days * 86400 + hh * 3600 + mm * 60 + ss) * 1_000_000) + micros_frac)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats microseconds since the epoch as `YYYY-MM-DD HH:MM:SS[.ffffff]`.
pub fn format_timestamp(us: i64) -> String {
    let secs = us.div_euclid(1_000_000);
    let micros = us.rem_euclid(1_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86400));
    let rem = secs.rem_euclid(86400);
    let base = format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}", rem / 3600, rem % 3600 / 60, rem % 60);
    if micros == 0 { base } else { format!("{base}.{micros:06}").trim_end_matches('0').to_string() }
}

/// The key prefix of table `table_id`'s primary index.
pub fn table_prefix(table_id: u64) -> Vec<u8> {
    let mut key = vec![TABLE_PREFIX];
    key.extend_from_slice(&(table_id as u32).to_be_bytes());
    key.push(PRIMARY_INDEX);
    key
}

/// The span `[start, end)` of everything table `table_id` stores.
pub fn table_span(table_id: u64) -> (Vec<u8>, Vec<u8>) {
    let mut start = vec![TABLE_PREFIX];
    start.extend_from_slice(&(table_id as u32).to_be_bytes());
    let end = crate::services::keys::prefix_end(&start);
    (start, end)
}

/// Appends the order-preserving encoding of `value` to `out`.
pub fn encode_key_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.push(0x00),
        Value::Bool(b) => {
            out.push(0x10);
            out.push(*b as u8);
        }
        Value::Int(i) => {
            out.push(0x20);
            out.extend_from_slice(&((*i as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::Float(f) => {
            out.push(0x30);
            let bits = f.to_bits();
            let ordered = if bits >> 63 == 1 { !bits } else { bits | (1 << 63) };
            out.extend_from_slice(&ordered.to_be_bytes());
        }
        Value::Timestamp(us) => {
            out.push(0x40);
            out.extend_from_slice(&((*us as u64) ^ (1 << 63)).to_be_bytes());
        }
        Value::String(s) => encode_escaped(out, 0x50, s.as_bytes()),
        Value::Bytes(b) => encode_escaped(out, 0x60, b),
    }
}

fn encode_escaped(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    for &b in bytes {
        out.push(b);
        if b == 0x00 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0x00, 0x01]);
}

/// Decodes one key value from the front of `input`, for printing keys.
pub fn decode_key_value(input: &mut &[u8]) -> Option<Value> {
    let (&tag, rest) = input.split_first()?;
    *input = rest;
    let take8 = |input: &mut &[u8]| -> Option<u64> {
        let (bytes, rest) = input.split_first_chunk::<8>()?;
        *input = rest;
        Some(u64::from_be_bytes(*bytes))
    };
    Some(match tag {
        0x00 => Value::Null,
        0x10 => {
            let (&b, rest) = input.split_first()?;
            *input = rest;
            Value::Bool(b != 0)
        }
        0x20 => Value::Int((take8(input)? ^ (1 << 63)) as i64),
        0x30 => {
            let ordered = take8(input)?;
            let bits = if ordered >> 63 == 1 { ordered & !(1 << 63) } else { !ordered };
            Value::Float(f64::from_bits(bits))
        }
        0x40 => Value::Timestamp((take8(input)? ^ (1 << 63)) as i64),
        0x50 | 0x60 => {
            let mut bytes = Vec::new();
            loop {
                let (&b, rest) = input.split_first()?;
                *input = rest;
                if b == 0x00 {
                    let (&next, rest) = input.split_first()?;
                    *input = rest;
                    if next == 0x01 {
                        break;
                    }
                    bytes.push(0x00);
                } else {
                    bytes.push(b);
                }
            }
            if tag == 0x50 { Value::String(String::from_utf8_lossy(&bytes).into_owned()) } else { Value::Bytes(bytes) }
        }
        _ => return None,
    })
}

/// Prints a table key as `/Table/<id>/<index>/<pk>/<pk>`; `None` if it is not a table key.
pub fn pretty_table_key(key: &[u8]) -> Option<String> {
    let rest = key.strip_prefix(&[TABLE_PREFIX])?;
    let (id, mut rest) = rest.split_first_chunk::<4>()?;
    let mut text = format!("/Table/{}", u32::from_be_bytes(*id));
    if let Some((&index, tail)) = rest.split_first() {
        text.push_str(&format!("/{index}"));
        rest = tail;
        while !rest.is_empty() {
            match decode_key_value(&mut rest) {
                Some(Value::String(s)) => text.push_str(&format!("/\"{s}\"")),
                Some(v) => text.push_str(&format!("/{}", v.display())),
                None => {
                    text.push_str("/?");
                    break;
                }
            }
        }
    }
    Some(text)
}

/// The table id a key belongs to, if it is a table key.
pub fn table_id_of_key(key: &[u8]) -> Option<u64> {
    let rest = key.strip_prefix(&[TABLE_PREFIX])?;
    let (id, _) = rest.split_first_chunk::<4>()?;
    Some(u32::from_be_bytes(*id) as u64)
}

/// Prints any key: table keys as `/Table/..`, others as the KV layer prints them.
pub fn pretty_any(key: &[u8]) -> String {
    pretty_table_key(key).unwrap_or_else(|| keys::pretty(key))
}

/// Prints the end of a span: an empty end is the end of the keyspace (`/Max`).
pub fn pretty_any_end(key: &[u8]) -> String {
    if key.is_empty() { keys::pretty_end(key) } else { pretty_any(key) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode_key_value(&mut out, v);
        out
    }

    #[test]
    fn key_encoding_preserves_order() {
        let ints = [i64::MIN, -5, -1, 0, 1, 42, i64::MAX];
        for pair in ints.windows(2) {
            assert!(key(&Value::Int(pair[0])) < key(&Value::Int(pair[1])), "{pair:?}");
        }
        let floats = [f64::NEG_INFINITY, -2.5, -0.0001, 0.0, 1e-9, 3.25, f64::INFINITY];
        for pair in floats.windows(2) {
            assert!(key(&Value::Float(pair[0])) < key(&Value::Float(pair[1])), "{pair:?}");
        }
        let strings = ["", "a", "a\0", "a\0b", "ab", "b"];
        for pair in strings.windows(2) {
            assert!(key(&Value::String(pair[0].into())) < key(&Value::String(pair[1].into())), "{pair:?}");
        }
        // Composite keys: the first column dominates.
        let mut a = key(&Value::String("a".into()));
        a.extend(key(&Value::Int(9)));
        let mut b = key(&Value::String("ab".into()));
        b.extend(key(&Value::Int(1)));
        assert!(a < b);
    }

    #[test]
    fn key_values_round_trip() {
        for v in [
            Value::Int(-7),
            Value::Float(2.5),
            Value::String("x\0y".into()),
            Value::Bytes(vec![0, 255, 0]),
            Value::Bool(true),
            Value::Timestamp(1_700_000_000_000_000),
        ] {
            let bytes = key(&v);
            let mut input = bytes.as_slice();
            assert_eq!(decode_key_value(&mut input), Some(v));
            assert!(input.is_empty());
        }
        let mut k = table_prefix(104);
        encode_key_value(&mut k, &Value::Int(5));
        encode_key_value(&mut k, &Value::String("z".into()));
        assert_eq!(pretty_table_key(&k).unwrap(), "/Table/104/1/5/\"z\"");
        assert_eq!(table_id_of_key(&k), Some(104));
        let (start, end) = table_span(104);
        assert!(start < k && k < end);
    }

    #[test]
    fn timestamps_parse_and_print() {
        let us = parse_timestamp("2024-02-29 13:45:07.25").unwrap();
        assert_eq!(format_timestamp(us), "2024-02-29 13:45:07.25");
        assert_eq!(parse_timestamp("1970-01-01").unwrap(), 0);
        assert_eq!(parse_timestamp("1969-12-31 23:59:59").unwrap(), -1_000_000);
        assert!(parse_timestamp("2024-13-01").is_err());
        assert!(parse_timestamp("yesterday").is_err());
    }

    #[test]
    fn coercion_follows_column_types() {
        assert_eq!(Value::Int(3).coerce(SqlType::Float).unwrap(), Value::Float(3.0));
        assert_eq!(Value::String("12".into()).coerce(SqlType::Int).unwrap(), Value::Int(12));
        assert_eq!(Value::String("true".into()).coerce(SqlType::Bool).unwrap(), Value::Bool(true));
        assert_eq!(Value::String("\\x00ff".into()).coerce(SqlType::Bytes).unwrap(), Value::Bytes(vec![0, 255]));
        assert_eq!(Value::Null.coerce(SqlType::Int).unwrap(), Value::Null);
        assert_eq!(Value::Bool(true).coerce(SqlType::Int).unwrap_err().code, "42804");
        assert_eq!(Value::String("x".into()).coerce(SqlType::Int).unwrap_err().code, "22P02");
        assert_eq!(SqlType::parse("varchar(20)").unwrap(), SqlType::String);
        assert!(SqlType::parse("JSONB").is_err());
    }
}
