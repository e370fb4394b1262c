//! Go `encoding/json` compatibility: CockroachDB's bodies are written by Go, so integral
//! floats have no `.0`, byte strings are standard base64, `time.Time` is RFC 3339 with
//! nanoseconds, and zero values of `omitempty` fields are left out.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Serialize, Serializer};

/// A float written the way Go writes it (`12`, not `12.0`; NaN and infinities as `0`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct GoFloat(pub f64);

impl utoipa::PartialSchema for GoFloat {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
        ObjectBuilder::new()
            .schema_type(Type::Number)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Double)))
            .description(Some("A float written the way Go writes it: integral values without a fraction."))
            .into()
    }
}

impl utoipa::ToSchema for GoFloat {}

impl Serialize for GoFloat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let v = if self.0.is_finite() { self.0 } else { 0.0 };
        if v.fract() == 0.0 && v.abs() < 1e15 {
            serializer.serialize_i64(v as i64)
        } else {
            serializer.serialize_f64(v)
        }
    }
}

/// Standard base64 of bytes (Go's `[]byte`).
pub fn base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// RFC 3339 with nanoseconds, UTC (Go's `time.Time`).
pub fn rfc3339(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let sub = nanos.rem_euclid(1_000_000_000) as u32;
    chrono::DateTime::<chrono::Utc>::from_timestamp(secs, sub)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".into())
}

/// A formatted UUID from 16 bytes (other lengths: plain hex).
pub fn uuid(bytes: &[u8]) -> String {
    let hex = hex(bytes);
    if hex.len() != 32 {
        return hex;
    }
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `skip_serializing_if` for an `omitempty` integer.
pub fn is_zero(v: &i32) -> bool {
    *v == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_go() {
        assert_eq!(serde_json::to_string(&GoFloat(12.0)).unwrap(), "12");
        assert_eq!(serde_json::to_string(&GoFloat(1.5)).unwrap(), "1.5");
        assert_eq!(serde_json::to_string(&GoFloat(f64::NAN)).unwrap(), "0");
    }

    #[test]
    fn times_and_ids_print_like_go() {
        assert_eq!(rfc3339(1_714_558_272_123_456_000), "2024-05-01T10:11:12.123456Z");
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(uuid(&[0x11; 16]), "11111111-1111-1111-1111-111111111111");
        assert_eq!(base64(&[0, 1, 2, 3]), "AAECAw==");
        assert_eq!(hex(&[0, 0xab]), "00ab");
    }
}
