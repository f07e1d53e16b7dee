//! The one error type of the API's handlers, and each domain refusal
//! mapped to its HTTP answer here and nowhere else (as the gateway maps
//! its `Refusal`). Every answer is JSON: `{"error": …}`, with `code` where
//! a client acts on it, `problems` where a bundle did not build.

use axum::response::{IntoResponse, Response};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::Serialize;

use crate::approvals::{ClaimRefused, Refused};
use crate::build::BuildFailure;
use crate::registry::Refusal;
use crate::rollout::InputError;
use crate::store::{CanaryRefusal, RegistryError, ReportError, RevisionError};

/// What a handler answers when it does not answer 200.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
    headers: Vec<(HeaderName, HeaderValue)>,
}

/// A handler's answer.
pub type ApiResult = Result<Response, ApiError>;

impl ApiError {
    /// `status` with `{"error": message}`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: serde_json::json!({"error": message.into()}),
            headers: Vec::new(),
        }
    }

    /// `status` with `{"error": message, "code": code}`.
    pub fn coded(status: StatusCode, message: impl Into<String>, code: &str) -> ApiError {
        ApiError {
            status,
            body: serde_json::json!({"error": message.into(), "code": code}),
            headers: Vec::new(),
        }
    }

    /// `status` with any JSON body.
    pub fn with_body(status: StatusCode, body: serde_json::Value) -> ApiError {
        ApiError {
            status,
            body,
            headers: Vec::new(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// No route answers this method and path.
    pub fn no_route() -> ApiError {
        ApiError::not_found("no such route")
    }

    /// A blocking task of the store that died (a panic).
    pub fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }

    /// The answer carries this header too.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> ApiError {
        self.headers.push((name, value));
        self
    }

    /// A failure that is the store's (its database unreachable), not the
    /// bundle's: 503.
    fn unavailable(e: &BuildFailure) -> Option<ApiError> {
        e.0.iter()
            .find(|p| p.file == crate::store::UNAVAILABLE)
            .map(|p| crate::store::Unavailable(p.message.clone()).into())
    }

    /// A bundle the build refused, its problems as `file`, `path` and
    /// `message` (the governance routes).
    pub fn problems(e: &BuildFailure) -> ApiError {
        if let Some(u) = Self::unavailable(e) {
            return u;
        }
        ApiError::with_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({
                "error": "refused",
                "problems": e.0.iter().map(|p| serde_json::json!({"file": p.file, "path": p.path, "message": p.message})).collect::<Vec<_>>(),
            }),
        )
    }

    /// A bundle the build refused, its problems as one line each (the
    /// org's publish, rollback and kill switch); `error` says what.
    pub fn problem_lines(error: &str, e: &BuildFailure) -> ApiError {
        if let Some(u) = Self::unavailable(e) {
            return u;
        }
        ApiError::with_body(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({"error": error, "problems": e.0.iter().map(|p| p.to_string()).collect::<Vec<_>>()}),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = json(self.status, &self.body);
        for (k, v) in self.headers {
            r.headers_mut().insert(k, v);
        }
        r
    }
}

/// `status` with `v` as JSON, its keys in order at every level (as the
/// API has always answered).
pub fn json(status: StatusCode, v: &impl Serialize) -> Response {
    let body = serde_json::to_value(v)
        .and_then(|v| serde_json::to_vec(&v))
        .unwrap_or_default();
    (
        status,
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// 200 with `v` as JSON.
pub fn ok(v: &impl Serialize) -> ApiResult {
    Ok(json(StatusCode::OK, v))
}

impl From<crate::store::Unavailable> for ApiError {
    fn from(e: crate::store::Unavailable) -> ApiError {
        ApiError::coded(
            StatusCode::SERVICE_UNAVAILABLE,
            e.to_string(),
            "store_unavailable",
        )
    }
}

impl From<CanaryRefusal> for ApiError {
    fn from(e: CanaryRefusal) -> ApiError {
        ApiError::coded(
            StatusCode::from_u16(e.status()).unwrap_or(StatusCode::CONFLICT),
            e.to_string(),
            e.code(),
        )
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> ApiError {
        let status = match &r {
            Refusal::Forbidden(_) => StatusCode::FORBIDDEN,
            Refusal::Conflict(_) | Refusal::Changed(_) => StatusCode::CONFLICT,
            Refusal::Invalid(_) => StatusCode::BAD_REQUEST,
            Refusal::NotFound(_) => StatusCode::NOT_FOUND,
        };
        ApiError::coded(status, r.to_string(), r.code())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        match e {
            RegistryError::Refused(r) => r.into(),
            RegistryError::Build(b) => ApiError::problems(&b),
            RegistryError::Unavailable(u) => u.into(),
        }
    }
}

impl From<ClaimRefused> for ApiError {
    fn from(e: ClaimRefused) -> ApiError {
        let status = match e {
            ClaimRefused::TooMany | ClaimRefused::Full => StatusCode::TOO_MANY_REQUESTS,
            ClaimRefused::Malformed(_)
            | ClaimRefused::DigestMismatch
            | ClaimRefused::TooLarge(_) => StatusCode::BAD_REQUEST,
            ClaimRefused::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<Refused> for ApiError {
    fn from(e: Refused) -> ApiError {
        let status = match e {
            Refused::NotFound => StatusCode::NOT_FOUND,
            Refused::SelfApproval | Refused::NotTheirs => StatusCode::FORBIDDEN,
            Refused::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::CONFLICT,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<InputError> for ApiError {
    fn from(e: InputError) -> ApiError {
        ApiError::bad_request(e.to_string())
    }
}

impl From<ReportError> for ApiError {
    fn from(e: ReportError) -> ApiError {
        match e {
            ReportError::Unavailable(u) => u.into(),
            e => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        }
    }
}

impl From<RevisionError> for ApiError {
    fn from(e: RevisionError) -> ApiError {
        ApiError::not_found(e.to_string())
    }
}
