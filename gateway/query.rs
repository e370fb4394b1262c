//! The query-string extractor of the handlers' typed queries.

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::gateway::error::ApiError;

/// A query string read into `T` with a repeated key's last value winning, as a map of strings
/// reads it: serde's derive alone would answer a repeated key with a 400. `T`'s fields are
/// `Option<String>`, so the handlers parse the values and word the errors themselves. The
/// query types deny unknown keys (a 400 naming the key and the expected ones): CockroachDB
/// ignores them, but the document lists every parameter, and a misspelt `limt=10` that
/// silently returns everything is the kind of surprise the strict `limit` parsing removes.
pub struct TypedQuery<T>(pub T);

/// The query of an endpoint that takes no parameters.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for TypedQuery<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let object = pairs.into_iter().map(|(key, value)| (key, serde_json::Value::String(value))).collect();
        serde_json::from_value(serde_json::Value::Object(object))
            .map(TypedQuery)
            .map_err(|err| ApiError::bad_request(err.to_string()).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        limit: Option<String>,
        start: Option<String>,
    }

    async fn extract(uri: &str) -> Result<Sample, Response> {
        let (mut parts, ()) = axum::http::Request::builder().uri(uri).body(()).unwrap().into_parts();
        TypedQuery::<Sample>::from_request_parts(&mut parts, &()).await.map(|TypedQuery(q)| q)
    }

    #[tokio::test]
    async fn repeated_keys_keep_the_last_value_and_unknown_keys_are_refused() {
        let q = extract("/x?limit=1&limit=2").await.unwrap();
        assert_eq!(q, Sample { limit: Some("2".into()), start: None });
        let refused = extract("/x?limit=1&other=3").await.unwrap_err();
        assert_eq!(refused.status(), axum::http::StatusCode::BAD_REQUEST);
        let q = extract("/x?start=").await.unwrap();
        assert_eq!(q, Sample { limit: None, start: Some(String::new()) });
    }
}
