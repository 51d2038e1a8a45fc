//! One error vocabulary for both front doors: each [`ErrorCode`] maps to an HTTP status and a
//! gRPC code, with a stable machine-readable spelling.

use crate::storage::StoreError;

/// A stable error code, shown to clients as `code` in problem documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed or a value is invalid.
    InvalidRequest,
    /// No credential, or one that is unknown, expired or revoked.
    Unauthenticated,
    /// The caller's role may not perform the operation at all (whatever the tenant).
    Forbidden,
    /// The thing does not exist, or the caller may not see it.
    NotFound,
    /// The request conflicts with what exists (a duplicate name, an agent not connected).
    Conflict,
    /// Too many failed attempts from this client; try again later.
    RateLimited,
    /// A dependency such as the database is down.
    Unavailable,
    /// A bug or an unexpected failure; details are only in the server log.
    Internal,
}

impl ErrorCode {
    /// The stable spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }

    /// The HTTP status for this code.
    pub fn http_status(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            ErrorCode::InvalidRequest => S::BAD_REQUEST,
            ErrorCode::Unauthenticated => S::UNAUTHORIZED,
            ErrorCode::Forbidden => S::FORBIDDEN,
            ErrorCode::NotFound => S::NOT_FOUND,
            ErrorCode::Conflict => S::CONFLICT,
            ErrorCode::RateLimited => S::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => S::SERVICE_UNAVAILABLE,
            ErrorCode::Internal => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC code for this code.
    pub fn grpc_code(self) -> tonic::Code {
        use tonic::Code as C;
        match self {
            ErrorCode::InvalidRequest => C::InvalidArgument,
            ErrorCode::Unauthenticated => C::Unauthenticated,
            ErrorCode::Forbidden => C::PermissionDenied,
            ErrorCode::NotFound => C::NotFound,
            ErrorCode::Conflict => C::FailedPrecondition,
            ErrorCode::RateLimited => C::ResourceExhausted,
            ErrorCode::Unavailable => C::Unavailable,
            ErrorCode::Internal => C::Internal,
        }
    }

    /// The title of problem documents with this code.
    pub fn title(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "The request is not valid",
            ErrorCode::Unauthenticated => "Authentication required",
            ErrorCode::Forbidden => "Forbidden",
            ErrorCode::NotFound => "Not found",
            ErrorCode::Conflict => "Conflict",
            ErrorCode::RateLimited => "Too many requests",
            ErrorCode::Unavailable => "Service unavailable",
            ErrorCode::Internal => "Internal error",
        }
    }
}

/// An error on its way to a client: a code and a message safe to show.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// What kind of error.
    pub code: ErrorCode,
    /// What to tell the client. Never internal details for `Internal` or `Unavailable`.
    pub message: String,
    /// For `RateLimited`: how many seconds to wait, sent as `Retry-After`.
    pub retry_after: Option<u64>,
}

impl Error {
    /// An error with a code and a message for the client.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A malformed request.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    /// A thing that does not exist or is not the caller's.
    pub fn not_found(what: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} does not exist"))
    }

    /// Logs a store error once, here, and returns what the client may see.
    pub fn from_store(e: StoreError, what: impl std::fmt::Display) -> Self {
        match e {
            StoreError::NotFound => Self::not_found(what),
            StoreError::Conflict(_) => {
                Self::new(ErrorCode::Conflict, format!("{what} already exists"))
            }
            StoreError::Open(_) | StoreError::Database(_) => {
                tracing::error!(error = %format!("{e:#}"), "database failure");
                Self::new(
                    ErrorCode::Unavailable,
                    "the database is not available; try again",
                )
            }
            StoreError::Corrupt(_) => {
                tracing::error!(error = %format!("{e:#}"), "corrupt row");
                Self::new(
                    ErrorCode::Internal,
                    "the server could not read its own data; the log says more",
                )
            }
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.code.grpc_code(), e.message)
    }
}
