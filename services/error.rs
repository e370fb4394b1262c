//! The one error vocabulary of a node. Every failure a caller can act on has a kind here;
//! [`Error::code`] and [`Error::http_status`] are the one table that maps kinds to gRPC codes
//! and HTTP statuses. Internal details stay in logs; callers see a short message.

use tonic::Code;

/// Result alias used across the services.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error a node operation can return.
#[derive(Debug, Clone, thiserror::Error, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Error {
    /// The request itself is malformed (bad key, bad flag value, unknown metric).
    #[error("{0}")]
    InvalidArgument(String),
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The thing to create exists already (a second `init`, a duplicate user).
    #[error("{0}")]
    AlreadyExists(String),
    /// The system is not in a state where the request can run (not initialised, wrong cluster).
    #[error("{0}")]
    FailedPrecondition(String),
    /// A conditional put found another value; the whole batch was aborted.
    #[error("unexpected value at key {key}")]
    ConditionFailed {
        /// Index of the failed operation in its batch.
        op_index: usize,
        /// The printable key.
        key: String,
        /// The value found, absent if the key did not exist.
        actual: Option<Vec<u8>>,
    },
    /// This node does not hold the lease; `leader` is the leaseholder if known. Safe to retry
    /// elsewhere: nothing was proposed.
    #[error("not leaseholder{}", .leader.map(|id| format!(" (leaseholder is node {id})")).unwrap_or_default())]
    NotLeaseholder {
        /// The current leaseholder, when known.
        leader: Option<u64>,
    },
    /// The batch reached a Raft group that does not hold all of its keys (the sender's view
    /// of the groups' spans was out of date, e.g. across a split). Nothing was applied: safe
    /// to route again.
    #[error("range key mismatch: {0}")]
    RangeKeyMismatch(String),
    /// A node or quorum cannot be reached now; retrying later may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The deadline passed; the outcome of a write may be unknown.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// Missing or bad credentials.
    #[error("{0}")]
    Unauthenticated(String),
    /// Valid credentials without the right to do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// Outside what ranged implements.
    #[error("{0}")]
    Unsupported(String),
    /// A bug or a storage failure; the message is for logs.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Metadata key marking a NotLeaseholder status, so the caller can retry without ambiguity.
pub const NOT_LEASEHOLDER_METADATA: &str = "ranged-not-leaseholder";
/// Metadata key marking a RangeKeyMismatch status, which is as safe to retry.
pub const RANGE_KEY_MISMATCH_METADATA: &str = "ranged-range-key-mismatch";

impl Error {
    /// The gRPC code of this error kind: the one table of the crate.
    pub fn code(&self) -> Code {
        match self {
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::FailedPrecondition(_) | Error::ConditionFailed { .. } => Code::FailedPrecondition,
            Error::NotLeaseholder { .. } | Error::RangeKeyMismatch(_) | Error::Unavailable(_) => Code::Unavailable,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::Unsupported(_) => Code::Unimplemented,
            Error::Internal(_) => Code::Internal,
        }
    }

    /// The HTTP status of this error kind, beside its gRPC code. A node that cannot serve now
    /// (not initialized, no leaseholder, unreachable, too slow) is a 503: the request may
    /// succeed later or elsewhere, unlike a 500.
    pub fn http_status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Error::InvalidArgument(_) => S::BAD_REQUEST,
            Error::NotFound(_) => S::NOT_FOUND,
            Error::AlreadyExists(_) | Error::ConditionFailed { .. } => S::CONFLICT,
            Error::FailedPrecondition(_)
            | Error::NotLeaseholder { .. }
            | Error::RangeKeyMismatch(_)
            | Error::Unavailable(_)
            | Error::DeadlineExceeded(_) => S::SERVICE_UNAVAILABLE,
            Error::Unauthenticated(_) => S::UNAUTHORIZED,
            Error::PermissionDenied(_) => S::FORBIDDEN,
            Error::Unsupported(_) => S::NOT_IMPLEMENTED,
            Error::Internal(_) => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The text a caller outside this process may see: internal details become "internal
    /// error" (they stay in logs), everything else is the error's own message.
    pub fn public_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// Shorthand for an internal error from anything displayable.
    pub fn internal(err: impl std::fmt::Display) -> Self {
        Error::Internal(err.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        match &err {
            Error::Internal(detail) => {
                // Internals stay in the log; the caller gets a stable message.
                tracing::error!(detail = %detail, "internal error");
                tonic::Status::new(code, "internal error")
            }
            Error::NotLeaseholder { leader } => {
                let mut status = tonic::Status::new(code, err.to_string());
                let value = leader.map(|id| id.to_string()).unwrap_or_default();
                if let Ok(value) = value.parse() {
                    status.metadata_mut().insert(NOT_LEASEHOLDER_METADATA, value);
                }
                status
            }
            Error::RangeKeyMismatch(detail) => {
                let mut status = tonic::Status::new(code, detail.clone());
                status
                    .metadata_mut()
                    .insert(RANGE_KEY_MISMATCH_METADATA, tonic::metadata::MetadataValue::from_static("1"));
                status
            }
            Error::ConditionFailed { op_index, actual, .. } => {
                let details = serde_json::to_vec(&(op_index, actual)).unwrap_or_default();
                tonic::Status::with_details(code, err.to_string(), details.into())
            }
            _ => tonic::Status::new(code, err.to_string()),
        }
    }
}

impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        let message = status.message().to_string();
        match status.code() {
            Code::InvalidArgument | Code::OutOfRange => Error::InvalidArgument(message),
            Code::NotFound => Error::NotFound(message),
            Code::AlreadyExists => Error::AlreadyExists(message),
            Code::FailedPrecondition => match serde_json::from_slice::<(usize, Option<Vec<u8>>)>(status.details()) {
                Ok((op_index, actual)) => Error::ConditionFailed {
                    op_index,
                    key: message.trim_start_matches("unexpected value at key ").to_string(),
                    actual,
                },
                Err(_) => Error::FailedPrecondition(message),
            },
            Code::Unavailable if status.metadata().contains_key(RANGE_KEY_MISMATCH_METADATA) => {
                Error::RangeKeyMismatch(message)
            }
            Code::Unavailable => match status.metadata().get(NOT_LEASEHOLDER_METADATA) {
                Some(value) => Error::NotLeaseholder { leader: value.to_str().ok().and_then(|v| v.parse().ok()) },
                None => Error::Unavailable(message),
            },
            Code::DeadlineExceeded | Code::Cancelled => Error::DeadlineExceeded(message),
            Code::Unauthenticated => Error::Unauthenticated(message),
            Code::PermissionDenied => Error::PermissionDenied(message),
            Code::Unimplemented => Error::Unsupported(message),
            // Including a call that failed in this side's transport (a connection reset, an
            // h2 error, the peer gone mid-call): its outcome is unknown, a write may have
            // applied, so it must not become Unavailable, which SQL reports as 40001 (retry:
            // nothing happened). Mapped to Unavailable once, the nemesis's bank saw two
            // transfers reported failed that had applied.
            _ => Error::Internal(message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trip_keeps_kinds() {
        let cases = [
            Error::InvalidArgument("bad".into()),
            Error::AlreadyExists("twice".into()),
            Error::NotLeaseholder { leader: Some(3) },
            Error::NotLeaseholder { leader: None },
            Error::RangeKeyMismatch("not all in Raft group 7's span".into()),
            Error::Unavailable("down".into()),
            Error::ConditionFailed { op_index: 2, key: "\"k\"".into(), actual: Some(b"v".to_vec()) },
        ];
        for err in cases {
            let back = Error::from(tonic::Status::from(err.clone()));
            assert_eq!(back, err);
        }
    }

    #[test]
    fn internal_details_are_hidden_from_callers() {
        let status = tonic::Status::from(Error::Internal("disk path /secret failed".into()));
        assert_eq!(status.code(), Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
