//! SQL errors: a SQLSTATE and a message, as PostgreSQL clients expect. Node errors map to
//! SQLSTATEs in one place ([`From<Error>`]).

use crate::services::error::Error;

/// 40001: the statement conflicted with a concurrent one and may be retried as a whole.
pub const SERIALIZATION_FAILURE: &str = "40001";

/// An error answered to a SQL client; the session stays usable.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlError {
    /// The SQLSTATE code.
    pub code: &'static str,
    /// The message.
    pub message: String,
}

impl SqlError {
    /// An error with `code`.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// 0A000: outside the dialect.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new("0A000", message)
    }

    /// 42601: syntax error.
    pub fn syntax(message: impl Into<String>) -> Self {
        Self::new("42601", message)
    }

    /// 42P01: the table does not exist.
    pub fn undefined_table(name: &str) -> Self {
        Self::new("42P01", format!("relation \"{name}\" does not exist"))
    }

    /// 42703: the column does not exist.
    pub fn undefined_column(name: &str) -> Self {
        Self::new("42703", format!("column \"{name}\" does not exist"))
    }

    /// 42501: not allowed.
    pub fn insufficient_privilege(message: impl Into<String>) -> Self {
        Self::new("42501", message)
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl From<Error> for SqlError {
    fn from(err: Error) -> Self {
        let code = match &err {
            Error::InvalidArgument(_) => "22023",
            Error::NotFound(_) => "42704",
            Error::AlreadyExists(_) => "42710",
            Error::FailedPrecondition(_) => "55000",
            Error::ConditionFailed { .. } => SERIALIZATION_FAILURE,
            // The statement may be retried: nothing or everything of it was applied.
            Error::NotLeaseholder { .. } | Error::RangeKeyMismatch(_) | Error::Unavailable(_) => SERIALIZATION_FAILURE,
            // The write may or may not have been applied.
            Error::DeadlineExceeded(_) => "40003",
            Error::Unauthenticated(_) => "28000",
            Error::PermissionDenied(_) => "42501",
            Error::Unsupported(_) => "0A000",
            Error::Internal(_) => "XX000",
        };
        let message = match &err {
            Error::Internal(detail) => {
                tracing::error!(detail = %detail, "internal error in SQL statement");
                "internal error".to_string()
            }
            other => other.to_string(),
        };
        SqlError { code, message }
    }
}
