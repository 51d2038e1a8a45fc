//! RFC 9457 problem documents, and extractors whose rejections become problem documents.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

use crate::error::{Error, ErrorCode};

/// A problem document (RFC 9457), the body of every error response.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({
    "type": "urn:wbhealth:problem:not_found",
    "title": "Not found",
    "status": 404,
    "detail": "tenant 0193a8f2-6c1e-7d4b-9a51-3f0e8c2b1d77 does not exist",
    "code": "not_found"
}))]
pub struct Problem {
    /// A URI naming the kind of problem: `urn:wbhealth:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this case, and how to fix it.
    pub detail: String,
    /// A stable machine-readable code.
    pub code: String,
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.code.http_status();
        let retry_after = self.retry_after;
        let problem = Problem {
            kind: format!("urn:wbhealth:problem:{}", self.code.as_str()),
            title: self.code.title().to_owned(),
            status: status.as_u16(),
            detail: self.message,
            code: self.code.as_str().to_owned(),
        };
        let mut response = (status, axum::Json(problem)).into_response();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        if self.code == ErrorCode::Unauthenticated {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// A JSON body whose rejection is a problem document.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Json(value)),
            Err(rejection) => Err(Error::invalid(rejection.body_text())),
        }
    }
}

/// Path parameters whose rejection is a problem document.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(rejection) => Err(Error::invalid(rejection.body_text())),
        }
    }
}

/// Query parameters whose rejection is a problem document.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Query(value)),
            Err(rejection) => Err(Error::invalid(rejection.body_text())),
        }
    }
}

/// The answer for a path no route serves.
pub async fn no_route() -> Error {
    Error::new(
        ErrorCode::NotFound,
        "no such route; the API is described at /api/v1/openapi.json",
    )
}

/// The answer for a route that does not take this method.
pub async fn wrong_method() -> Response {
    let mut response =
        Error::invalid("this route does not take this HTTP method; see /api/v1/openapi.json")
            .into_response();
    *response.status_mut() = http::StatusCode::METHOD_NOT_ALLOWED;
    response
}
