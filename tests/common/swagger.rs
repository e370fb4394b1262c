//! A small, dependency-free (apart from `serde_json`) validator that checks a JSON response body
//! against a definition in CockroachDB's Swagger 2.0 spec (`crdb-swagger-spec.json`), so the
//! integration tests can assert that `ranged`'s Cluster API answers with the shapes a
//! CockroachDB client expects.
//!
//! Only what the spec actually uses is supported: `$ref`, `allOf`, `type`
//! (object/array/string/integer/number/boolean), `properties`, `additionalProperties`, `items`,
//! `enum`, and integer `format` ranges. The spec marks no field `required` and Go's
//! `encoding/json` omits or nulls fields freely, so missing properties, extra properties and a
//! `null` property, array or object are accepted; only a `null` top-level body is rejected.
//!
//! Why the `uint8` rule exists: go-swagger renders a Go `[]byte` as
//! `{"type":"array","items":{"type":"integer","format":"uint8"}}`, but Go's `encoding/json`
//! serializes `[]byte` as a standard base64 string, and CockroachDB's `uuid.UUID` (declared as
//! the `UUID` definition, a `[16]byte`) marshals itself as its canonical text form. The spec
//! is therefore wrong for `Session.id`, `rangeDescriptorInfo.start_key`/`end_key`, `UUID` and
//! `Key`: such a schema is read here as `type: string` (standard base64 or a UUID string), and
//! an array of integers 0..=255 is still accepted for completeness.
#![allow(dead_code)]

use serde_json::Value;

/// Maximum number of schemas entered along one path; guards against a cyclic `$ref`.
const MAX_DEPTH: usize = 128;

/// Reads the Swagger spec from `$RANGED_SWAGGER_SPEC`, or from `../shared/crdb-swagger-spec.json`
/// relative to the crate root.
pub fn load_spec() -> Value {
    // The spec lives in the workplace's shared folder beside the checkout (or wherever
    // RANGED_SWAGGER_SPEC points); a clone elsewhere finds it at the workplace's fixed path.
    let candidates = [
        std::env::var("RANGED_SWAGGER_SPEC").ok(),
        Some(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/crdb-swagger-spec.json").to_string()),
        Some("/work/shared/crdb-swagger-spec.json".to_string()),
    ];
    let path = candidates
        .into_iter()
        .flatten()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| panic!("crdb-swagger-spec.json not found: set RANGED_SWAGGER_SPEC to its path"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read swagger spec {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parse swagger spec {path}: {e}"))
}

/// The definition name referenced (`$ref: "#/definitions/X"`) by the 200 response schema of
/// `path` (e.g. `"/nodes/"`) for `method` (case-insensitive), or `None` when there is none.
pub fn response_definition(spec: &Value, path: &str, method: &str) -> Option<String> {
    let reference =
        spec.get("paths")?.get(path)?.get(method.to_ascii_lowercase())?.pointer("/responses/200/schema/$ref")?;
    reference.as_str()?.strip_prefix("#/definitions/").map(str::to_string)
}

/// Validates `body` against the spec's definition `definition`. Returns every mismatch as
/// `"json.path: message"` (paths start at `$`, e.g. `$.nodes[0].node_id`).
pub fn validate(spec: &Value, definition: &str, body: &Value) -> Result<(), Vec<String>> {
    let Some(schema) = spec.get("definitions").and_then(|d| d.get(definition)) else {
        return Err(vec![format!("$: unknown definition `{definition}`")]);
    };
    if body.is_null() {
        return Err(vec![format!("$: body is null, expected `{definition}`")]);
    }
    let mut validator = Validator { spec, errors: Vec::new() };
    validator.check(schema, body, "$", false, 0);
    if validator.errors.is_empty() { Ok(()) } else { Err(validator.errors) }
}

struct Validator<'a> {
    spec: &'a Value,
    errors: Vec<String>,
}

impl<'a> Validator<'a> {
    fn error(&mut self, path: &str, message: impl std::fmt::Display) {
        self.errors.push(format!("{path}: {message}"));
    }

    /// The target of a `"#/definitions/X"` reference.
    fn lookup(&self, reference: &str) -> Option<&'a Value> {
        let name = reference.strip_prefix("#/definitions/")?;
        self.spec.get("definitions")?.get(name)
    }

    /// Follows `$ref` chains (e.g. `ClockTimestamp` -> `Timestamp`) to a concrete schema.
    fn resolve(&self, mut schema: &'a Value) -> Option<&'a Value> {
        for _ in 0..MAX_DEPTH {
            match schema.get("$ref").and_then(Value::as_str) {
                Some(reference) => schema = self.lookup(reference)?,
                None => return Some(schema),
            }
        }
        None
    }

    /// Whether `schema` is go-swagger's rendering of a Go `[]byte` (see the module docs).
    fn is_byte_array(&self, schema: &'a Value) -> bool {
        if schema.get("type").and_then(Value::as_str) != Some("array") {
            return false;
        }
        let Some(items) = schema.get("items").and_then(|i| self.resolve(i)) else { return false };
        items.get("type").and_then(Value::as_str) == Some("integer")
            && items.get("format").and_then(Value::as_str) == Some("uint8")
    }

    /// `null_ok` is true where Go may emit `null` for any type (a property or map value).
    fn check(&mut self, schema: &'a Value, value: &Value, path: &str, null_ok: bool, depth: usize) {
        if depth > MAX_DEPTH {
            self.error(path, "schema nesting too deep (cyclic $ref?)");
            return;
        }
        if let Some(reference) = schema.get("$ref") {
            // In Swagger 2.0 the siblings of `$ref` (title, description) are ignored.
            match reference.as_str().and_then(|r| self.lookup(r)) {
                Some(target) => self.check(target, value, path, null_ok, depth + 1),
                None => self.error(path, format_args!("unresolvable $ref {reference}")),
            }
            return;
        }
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.check(part, value, path, null_ok, depth + 1);
            }
        }
        let ty = schema.get("type").and_then(Value::as_str);
        if value.is_null() {
            if !(null_ok || matches!(ty, None | Some("object") | Some("array"))) {
                self.error(path, format_args!("expected {}, got null", ty.unwrap_or("a value")));
            }
            return;
        }
        if self.is_byte_array(schema) {
            self.check_bytes(value, path);
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(value)
        {
            self.error(path, format_args!("{} is not one of {}", brief(value), Value::Array(allowed.clone())));
        }
        match ty {
            Some("object") => {
                if value.is_object() {
                    self.check_object(schema, value, path, depth);
                } else {
                    self.mismatch(path, "object", value);
                }
            }
            Some("array") => match value.as_array() {
                Some(elements) => {
                    if let Some(items) = schema.get("items") {
                        for (i, element) in elements.iter().enumerate() {
                            self.check(items, element, &format!("{path}[{i}]"), false, depth + 1);
                        }
                    }
                }
                None => self.mismatch(path, "array", value),
            },
            Some("string") => {
                if !value.is_string() {
                    self.mismatch(path, "string", value);
                }
            }
            Some("integer") => self.check_integer(schema, value, path),
            Some("number") => {
                if !value.is_number() {
                    self.mismatch(path, "number", value);
                }
            }
            Some("boolean") => {
                if !value.is_boolean() {
                    self.mismatch(path, "boolean", value);
                }
            }
            Some(other) => self.error(path, format_args!("unsupported schema type `{other}`")),
            // No `type`: only what is stated is checked (e.g. bare `properties`).
            None => {
                if value.is_object() {
                    self.check_object(schema, value, path, depth);
                }
            }
        }
    }

    fn check_object(&mut self, schema: &'a Value, value: &Value, path: &str, depth: usize) {
        let Some(object) = value.as_object() else { return };
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (key, field) in object {
            let field_schema = properties.and_then(|p| p.get(key)).or(additional);
            if let Some(field_schema) = field_schema {
                self.check(field_schema, field, &child_path(path, key), true, depth + 1);
            }
        }
    }

    fn check_integer(&mut self, schema: &Value, value: &Value, path: &str) {
        // `as_i64`/`as_u64` are `None` for floats, so `1.5` and `1.0` are both rejected.
        let Some(n) = value.as_i64().map(i128::from).or_else(|| value.as_u64().map(i128::from)) else {
            self.mismatch(path, "integer", value);
            return;
        };
        let format = schema.get("format").and_then(Value::as_str).unwrap_or("");
        let range = match format {
            "int32" => Some((i128::from(i32::MIN), i128::from(i32::MAX))),
            "int64" => Some((i128::from(i64::MIN), i128::from(i64::MAX))),
            "uint8" => Some((0, i128::from(u8::MAX))),
            "uint32" => Some((0, i128::from(u32::MAX))),
            "uint64" => Some((0, i128::from(u64::MAX))),
            _ => None,
        };
        if let Some((min, max)) = range
            && !(min..=max).contains(&n)
        {
            self.error(path, format_args!("{n} is out of range for {format}"));
        }
    }

    /// A Go `[]byte` / `uuid.UUID`: a standard base64 or UUID string, or an array of bytes.
    fn check_bytes(&mut self, value: &Value, path: &str) {
        match value {
            Value::String(s) => {
                if !is_standard_base64(s) && !is_uuid(s) {
                    self.error(
                        path,
                        format_args!("expected a base64 or UUID string (Go []byte), got {}", brief(value)),
                    );
                }
            }
            Value::Array(elements) => {
                for (i, element) in elements.iter().enumerate() {
                    if element.as_u64().is_none_or(|b| b > 255) {
                        self.error(
                            &format!("{path}[{i}]"),
                            format_args!("expected a byte 0..=255, got {}", brief(element)),
                        );
                    }
                }
            }
            _ => self.mismatch(path, "base64 string (Go []byte)", value),
        }
    }

    fn mismatch(&mut self, path: &str, expected: &str, value: &Value) {
        self.error(path, format_args!("expected {expected}, got {} {}", json_type(value), brief(value)));
    }
}

fn child_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain { format!("{path}.{key}") } else { format!("{path}[{}]", Value::String(key.to_string())) }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The value as compact JSON, cut to a readable length.
fn brief(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() <= 60 { text } else { format!("{}...", text.chars().take(57).collect::<String>()) }
}

/// Standard alphabet with `=` padding, as Go's `encoding/json` writes `[]byte`.
fn is_standard_base64(s: &str) -> bool {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return false;
    }
    let body = s.trim_end_matches('=');
    bytes.len() - body.len() <= 2 && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

/// Canonical 8-4-4-4-12 hex form.
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}
