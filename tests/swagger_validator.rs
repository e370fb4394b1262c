//! Unit tests of the Swagger response validator (`tests/common/swagger.rs`) on literal JSON,
//! against CockroachDB's real spec.

#[path = "common/swagger.rs"]
mod swagger;

use serde_json::{Value, json};
use swagger::{load_spec, response_definition, validate};

/// Asserts that validation fails and that some message starts with `path: `; returns the errors.
fn expect_error_at(definition: &str, body: &Value, path: &str) -> Vec<String> {
    let errors = validate(&load_spec(), definition, body).expect_err("validation should fail");
    assert!(errors.iter().any(|e| e.starts_with(&format!("{path}: "))), "no error at {path}; errors: {errors:#?}");
    errors
}

fn node_status() -> Value {
    json!({
        "node_id": 1,
        "address": {"network_field": "tcp", "address_field": "127.0.0.1:26257"},
        "sql_address": {"network_field": "tcp", "address_field": "127.0.0.1:26257"},
        "attrs": {"attrs": []},
        "locality": {"tiers": [{"key": "region", "value": "us-east1"}]},
        "ServerVersion": {"major": 24, "minor": 1, "patch": 0, "internal": 0},
        "build_tag": "v24.1.0",
        "started_at": 1_700_000_000_000_000_000_i64,
        "updated_at": 1_700_000_010_000_000_000_i64,
        "cluster_name": "",
        "metrics": {"sys.cpu.user.percent": 0.25, "sys.goroutines": 42},
        "total_system_memory": 17_179_869_184_i64,
        "num_cpus": 8,
        "liveness_status": 3
    })
}

#[test]
fn valid_nodes_response_passes() {
    let body = json!({"nodes": [node_status(), {"node_id": 2, "locality": {"tiers": []}}], "next": 0});
    assert_eq!(validate(&load_spec(), "nodesResponse", &body), Ok(()));
}

#[test]
fn nested_mismatch_names_the_full_path() {
    let mut node = node_status();
    node["locality"]["tiers"][0]["value"] = json!(7);
    let body = json!({"nodes": [node]});
    let errors = expect_error_at("nodesResponse", &body, "$.nodes[0].locality.tiers[0].value");
    assert_eq!(errors.len(), 1, "{errors:#?}");
}

#[test]
fn node_id_as_string_fails_naming_the_path() {
    let mut node = node_status();
    node["node_id"] = json!("1");
    let errors = expect_error_at("nodeStatus", &node, "$.node_id");
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].contains("expected integer") && errors[0].contains("string"), "{errors:#?}");
}

#[test]
fn float_where_integer_required_fails() {
    let mut node = node_status();
    node["started_at"] = json!(1.5);
    expect_error_at("nodeStatus", &node, "$.started_at");
    // A float with no fractional part is still not a JSON integer.
    node["started_at"] = serde_json::from_str("1.0").unwrap();
    expect_error_at("nodeStatus", &node, "$.started_at");
}

#[test]
fn number_accepts_integers_and_floats_but_not_strings() {
    let spec = load_spec();
    let ok = json!({"metrics": {"a": 1, "b": 2.5, "c": -3}});
    assert_eq!(validate(&spec, "nodeStatus", &ok), Ok(()));
    expect_error_at("nodeStatus", &json!({"metrics": {"a": "1"}}), "$.metrics.a");
}

#[test]
fn int32_out_of_range_fails() {
    expect_error_at("nodeStatus", &json!({"node_id": 4_294_967_296_i64}), "$.node_id");
}

#[test]
fn session_with_base64_id_passes() {
    let session = json!({
        "id": "AAECAw==",
        "node_id": 1,
        "username": "root",
        "client_address": "127.0.0.1:54321",
        "application_name": "psql",
        "start": "2024-01-01T00:00:00Z",
        "alloc_bytes": 0,
        "max_alloc_bytes": 10240,
        "last_active_query": "SELECT 1",
        "active_queries": [{
            "id": "17a1b2c3d4e5f6000000000000000001",
            "txn_id": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
            "sql": "SELECT 1",
            "start": "2024-01-01T00:00:00Z",
            "is_distributed": false,
            "phase": 1,
            "progress": 0
        }],
        "active_txn": {"id": "P6hfZFcXRWKz/CyWP2avpg==", "num_statements_executed": 1, "implicit": true}
    });
    assert_eq!(validate(&load_spec(), "Session", &session), Ok(()));
}

#[test]
fn byte_fields_accept_byte_arrays_and_reject_other_shapes() {
    let spec = load_spec();
    assert_eq!(validate(&spec, "Session", &json!({"id": [0, 1, 2, 255]})), Ok(()));
    expect_error_at("Session", &json!({"id": [0, 256]}), "$.id[1]");
    expect_error_at("Session", &json!({"id": "not base64!"}), "$.id");
    expect_error_at("Session", &json!({"id": 123}), "$.id");
    expect_error_at("TxnInfo", &json!({"id": "3fa85f64-5717-4562-b3fc-2c963f66afaZ"}), "$.id");
}

#[test]
fn list_sessions_with_empty_arrays_passes() {
    let spec = load_spec();
    let body = json!({"sessions": [], "errors": []});
    assert_eq!(validate(&spec, "listSessionsResp", &body), Ok(()));
    // Go writes nil slices as null.
    assert_eq!(validate(&spec, "listSessionsResp", &json!({"sessions": null, "errors": null})), Ok(()));
    expect_error_at("listSessionsResp", &json!({"sessions": {}}), "$.sessions");
}

#[test]
fn null_top_level_body_fails() {
    let errors = validate(&load_spec(), "listSessionsResp", &Value::Null).expect_err("null body");
    assert!(errors[0].starts_with("$: "), "{errors:#?}");
    expect_error_at("loginResponse", &json!([]), "$");
}

#[test]
fn map_values_and_ref_chains_are_validated() {
    let spec = load_spec();
    let range_info = json!({
        "span": {"start_key": "/Min", "end_key": "/Max"},
        "desc": {"range_id": 1, "start_key": "", "end_key": "//8=", "store_id": 1, "queries_per_second": 0.5},
        "source_node_id": 1,
        "source_store_id": 1,
        "lease_history": [{
            "replica": {"node_id": 1, "store_id": 1, "replica_id": 1, "type": 0},
            "start": {"wall_time": 1_700_000_000_000_000_000_i64, "logical": 0},
            "sequence": 1,
            "epoch": 1
        }],
        "stats": {"queries_per_second": 1.5, "writes_per_second": 0},
        "problems": {"unavailable": false},
        "quiescent": false,
        "ticking": true
    });
    let body = json!({"responses_by_node_id": {"1": {"range_info": range_info, "error": ""}}});
    assert_eq!(validate(&spec, "rangeResponse", &body), Ok(()));

    let mut bad = body.clone();
    bad["responses_by_node_id"]["1"]["range_info"]["source_node_id"] = json!("1");
    // `start` is a ClockTimestamp, a bare $ref to Timestamp.
    bad["responses_by_node_id"]["1"]["range_info"]["lease_history"][0]["start"]["wall_time"] = json!(true);
    let errors = expect_error_at("rangeResponse", &bad, r#"$.responses_by_node_id["1"].range_info.source_node_id"#);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with(r#"$.responses_by_node_id["1"].range_info.lease_history[0].start.wall_time: "#)),
        "{errors:#?}"
    );
    assert_eq!(errors.len(), 2, "{errors:#?}");
}

#[test]
fn unknown_definition_is_an_error() {
    let errors = validate(&load_spec(), "noSuchDefinition", &json!({})).expect_err("unknown definition");
    assert!(errors[0].contains("noSuchDefinition"), "{errors:#?}");
}

#[test]
fn response_definitions_of_the_served_endpoints() {
    let spec = load_spec();
    assert_eq!(response_definition(&spec, "/nodes/", "get").as_deref(), Some("nodesResponse"));
    assert_eq!(response_definition(&spec, "/nodes/", "GET").as_deref(), Some("nodesResponse"));
    assert_eq!(response_definition(&spec, "/nodes/{node_id}/ranges/", "get").as_deref(), Some("nodeRangesResponse"));
    assert_eq!(response_definition(&spec, "/ranges/hot/", "get").as_deref(), Some("hotRangesResponse"));
    assert_eq!(response_definition(&spec, "/ranges/{range_id}/", "get").as_deref(), Some("rangeResponse"));
    assert_eq!(response_definition(&spec, "/sessions/", "get").as_deref(), Some("listSessionsResp"));
    assert_eq!(response_definition(&spec, "/login/", "post").as_deref(), Some("loginResponse"));
    assert_eq!(response_definition(&spec, "/logout/", "post").as_deref(), Some("logoutResponse"));
    // /health/ documents no body; wrong method or path has no definition.
    assert_eq!(response_definition(&spec, "/health/", "get"), None);
    assert_eq!(response_definition(&spec, "/nodes/", "post"), None);
    assert_eq!(response_definition(&spec, "/nope/", "get"), None);
}

#[test]
fn every_referenced_definition_resolves() {
    // Validating an empty object against each served definition must succeed (nothing is
    // required), which also proves each name exists in the spec.
    let spec = load_spec();
    for name in ["nodesResponse", "nodeRangesResponse", "hotRangesResponse", "rangeResponse", "listSessionsResp"] {
        assert_eq!(validate(&spec, name, &json!({})), Ok(()), "{name}");
    }
}
