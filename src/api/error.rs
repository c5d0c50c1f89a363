//! The answers of the Job Artifacts API when a request cannot be served, as GitLab gives them: a
//! status and a JSON body `{"message": "404 Not found"}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No credentials where they are needed, or credentials that are wrong, expired, revoked, or
    /// the token of a job that is not running.
    #[error("401 Unauthorized")]
    Unauthorized,
    /// Authenticated, but the role in the project is too low for the request.
    #[error("403 Forbidden")]
    Forbidden,
    /// The project, job, ref, artifact or file does not exist, has expired or was deleted; also
    /// a project the caller may not see (GitLab does not tell such a project exists).
    #[error("404 {0}")]
    NotFound(&'static str),
    /// A malformed request: an invalid path inside the archive, a missing parameter.
    #[error("400 {0}")]
    BadRequest(String),
    /// The database or the store failed; the cause is logged, not sent.
    #[error("500 Internal Server Error")]
    Internal(#[source] crate::error::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl<E: Into<crate::error::Error>> From<E> for ApiError {
    fn from(e: E) -> ApiError {
        ApiError::Internal(e.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = %e, "API request failed");
        }
        let body = serde_json::json!({ "message": self.to_string() });
        (self.status(), axum::Json(body)).into_response()
    }
}
