//! Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the
//! status OpenAI would send, so that clients raise their usual exceptions.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// An error answer.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// One line for the user.
    pub message: String,
    /// OpenAI's error type (`invalid_request_error`, …).
    pub kind: &'static str,
    /// The request field at fault.
    pub param: Option<&'static str>,
    /// A machine-readable code (`model_not_found`, `context_length_exceeded`, …).
    pub code: Option<&'static str>,
    /// Seconds after which to retry (429).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// 400: a malformed body or an invalid parameter.
    pub fn invalid(param: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            kind: "invalid_request_error",
            param,
            code: None,
            retry_after: None,
        }
    }

    /// 400 with a code.
    pub fn invalid_with_code(param: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code: Some(code),
            ..Self::invalid(Some(param), message)
        }
    }

    /// 404: a model this server does not serve.
    pub fn unknown_model(model: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            code: Some("model_not_found"),
            ..Self::invalid(
                Some("model"),
                format!("The model `{model}` does not exist or you do not have access to it."),
            )
        }
    }

    /// 404: no such route.
    pub fn not_found(path: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            ..Self::invalid(None, format!("Invalid URL ({path})"))
        }
    }

    /// 405: the route exists, the method does not.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        Self {
            status: StatusCode::METHOD_NOT_ALLOWED,
            ..Self::invalid(None, format!("{method} is not allowed on {path}"))
        }
    }

    /// 401: a missing or wrong API key.
    pub fn unauthorized(given: bool) -> Self {
        let message = if given {
            "Incorrect API key provided."
        } else {
            "You didn't provide an API key. Send it in the Authorization header: `Authorization: Bearer KEY`."
        };
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: Some("invalid_api_key"),
            ..Self::invalid(None, message)
        }
    }

    /// 429: the queue is full.
    pub fn busy(max_queue: usize) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            kind: "server_busy",
            code: Some("rate_limit_exceeded"),
            retry_after: Some(1),
            ..Self::invalid(
                None,
                format!("The server is busy ({max_queue} requests are waiting); retry shortly."),
            )
        }
    }

    /// 504: the request ran past its deadline.
    pub fn timeout(seconds: f64) -> Self {
        Self {
            status: StatusCode::GATEWAY_TIMEOUT,
            kind: "timeout",
            ..Self::invalid(
                None,
                format!("The request took longer than its deadline of {seconds:.0} s."),
            )
        }
    }

    /// 500: the model failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "server_error",
            ..Self::invalid(None, message)
        }
    }

    /// 503: the server is shutting down.
    pub fn shutting_down() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            kind: "server_error",
            ..Self::invalid(None, "The server is shutting down.")
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
