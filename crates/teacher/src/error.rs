//! The crate's error type, and how the generation engine classifies each error.

use std::path::PathBuf;
use std::time::Duration;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors from teacher clients, the generation engine and batch mode.
///
/// HTTP errors keep the status, the provider's error code and the response body (with any
/// configured secret scrubbed out); decode errors keep the raw body.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server answered with a non-success status.
    #[error("{url}: HTTP {status}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Api {
        /// The request URL (without query string).
        url: String,
        /// The HTTP status code.
        status: u16,
        /// The provider's machine-readable error code, e.g. `insufficient_quota`.
        code: Option<String>,
        /// The provider's message, or the start of the body when it has none.
        message: String,
        /// The response body, truncated to a few KiB.
        body: String,
        /// How long the server asked us to wait (`retry-after-ms`, `Retry-After`,
        /// `x-ratelimit-reset-*`), when it said.
        retry_after: Option<Duration>,
    },
    /// No complete response arrived within the per-request timeout.
    #[error("request timed out after {0:?}")]
    Timeout(Duration),
    /// The request could not be sent, or the connection broke while reading the answer.
    #[error("{url}: could not complete the request")]
    Transport {
        /// The request URL (without query string).
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The server answered 2xx with a body that is not the expected JSON.
    #[error("{url}: malformed response body: {}", excerpt(body))]
    Decode {
        /// The request URL (without query string).
        url: String,
        /// The raw body, truncated to a few KiB.
        body: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The response parsed but lacks something we need (for example it has no choices).
    #[error("{url}: unexpected response: {problem}")]
    Protocol {
        /// The request URL (without query string).
        url: String,
        /// What is missing or wrong.
        problem: String,
    },
    /// An Entra ID credential could not produce a token.
    #[error("could not get an Entra ID token for {scope}")]
    Credential {
        /// The token scope requested.
        scope: String,
        /// The credential's error.
        #[source]
        source: azure_core::Error,
    },
    /// A configuration value is missing or invalid. Never contains a secret's value.
    #[error("configuration: {key}: {problem}")]
    Config {
        /// The setting (environment variable name or TOML key).
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A TOML configuration file does not parse.
    #[error("{}:{line}:{column}: invalid configuration", path.as_deref().map(|p| p.display().to_string()).unwrap_or_else(|| "<config>".into()))]
    Toml {
        /// The file, when read from one.
        path: Option<PathBuf>,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's error (boxed: it is large).
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A file could not be read or written.
    #[error("{}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file this crate keeps beside the dataset (the batch state file) does not parse.
    #[error("{}: cannot parse", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// Something could not be encoded as JSON (a request, a batch, a record).
    #[error("cannot encode {what} as JSON")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// Reading or writing the dataset failed.
    #[error(transparent)]
    Data(#[from] distill_data::Error),
    /// The engine's options are inconsistent.
    #[error("invalid generation options: {0}")]
    Options(String),
    /// A batch ended in a state we cannot collect results from.
    #[error("batch {batch_id} ended as {status}: {detail}")]
    Batch {
        /// The batch id.
        batch_id: String,
        /// Its final status.
        status: String,
        /// The errors the provider reported, joined.
        detail: String,
    },
    /// One request inside a batch failed with an error other than an HTTP status, as the
    /// batch's output or error file reports it.
    #[error("{code}: {message}")]
    BatchRequest {
        /// The provider's error code.
        code: String,
        /// The provider's message.
        message: String,
    },
    /// The HTTP client could not be built (for example, no TLS backend could be initialised).
    #[error("cannot build the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// A request or writer task panicked or was aborted.
    #[error("a generation task failed")]
    Task(#[source] tokio::task::JoinError),
    /// The operation was cancelled by the caller before it finished.
    #[error("cancelled")]
    Cancelled,
    /// A teacher that runs in this process (a local model) failed on this request.
    #[error("the local teacher {model} failed")]
    Local {
        /// The model.
        model: String,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The run stopped because an error made every further request pointless
    /// (bad credentials, exhausted quota); the dataset is resumable.
    #[error("generation stopped after a fatal error on prompt {id}")]
    Fatal {
        /// The prompt that hit the error.
        id: String,
        /// The error.
        #[source]
        source: Box<Error>,
    },
}

/// What the engine should do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Worth retrying: rate limits, 5xx, timeouts, broken connections, malformed bodies.
    /// Carries the server's requested delay, when it gave one.
    Transient {
        /// The server's requested delay.
        retry_after: Option<Duration>,
    },
    /// This request will never succeed (for example 400 Bad Request); other prompts may.
    Permanent,
    /// No request will succeed until someone intervenes (401, 403, 404, exhausted quota).
    Fatal,
}

impl Error {
    /// Classifies the error for retrying.
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::Api {
                status,
                code,
                retry_after,
                ..
            } => {
                let code = code.as_deref().unwrap_or("");
                if code == "insufficient_quota" || code == "billing_hard_limit_reached" {
                    return ErrorClass::Fatal;
                }
                match *status {
                    // Bad credentials, or a model/deployment that does not exist: every request fails.
                    401 | 403 | 404 => ErrorClass::Fatal,
                    408 | 409 | 429 => ErrorClass::Transient {
                        retry_after: *retry_after,
                    },
                    s if s >= 500 => ErrorClass::Transient {
                        retry_after: *retry_after,
                    },
                    _ => ErrorClass::Permanent,
                }
            }
            Error::Timeout(_) | Error::Transport { .. } | Error::Decode { .. } => {
                ErrorClass::Transient { retry_after: None }
            }
            // An identity endpoint can blip; a misconfigured credential fails every retry and
            // the engine's retry cap bounds the cost.
            Error::Credential { .. } => ErrorClass::Transient { retry_after: None },
            Error::Fatal { .. } => ErrorClass::Fatal,
            _ => ErrorClass::Permanent,
        }
    }

    /// A short, single-line reason for the failures file and progress events.
    pub fn reason(&self) -> String {
        match self {
            Error::Api {
                status,
                code,
                message,
                ..
            } => match code {
                Some(c) => format!("HTTP {status} ({c}): {}", excerpt(message)),
                None => format!("HTTP {status}: {}", excerpt(message)),
            },
            Error::Transport { source, .. } => {
                let kind = if source.is_connect() {
                    "connection failed"
                } else {
                    "connection error"
                };
                format!("{kind}: {source}")
            }
            other => excerpt(&other.to_string()).into_owned(),
        }
    }
}

/// At most 200 characters of `s`, on one line.
pub(crate) fn excerpt(s: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 200;
    let one_line = !s.contains(['\n', '\r']);
    if s.len() <= MAX && one_line {
        return s.into();
    }
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: Option<&str>) -> Error {
        Error::Api {
            url: "http://x/v1/chat/completions".into(),
            status,
            code: code.map(Into::into),
            message: "m".into(),
            body: String::new(),
            retry_after: Some(Duration::from_millis(7)),
        }
    }

    #[test]
    fn classifies_http_statuses() {
        assert_eq!(
            api(429, None).class(),
            ErrorClass::Transient {
                retry_after: Some(Duration::from_millis(7))
            }
        );
        assert_eq!(
            api(503, None).class(),
            ErrorClass::Transient {
                retry_after: Some(Duration::from_millis(7))
            }
        );
        assert_eq!(api(429, Some("insufficient_quota")).class(), ErrorClass::Fatal);
        assert_eq!(api(401, None).class(), ErrorClass::Fatal);
        assert_eq!(api(400, None).class(), ErrorClass::Permanent);
        assert_eq!(api(404, None).class(), ErrorClass::Fatal);
        assert_eq!(api(422, None).class(), ErrorClass::Permanent);
        assert_eq!(
            Error::Timeout(Duration::from_secs(1)).class(),
            ErrorClass::Transient { retry_after: None }
        );
    }

    #[test]
    fn excerpt_is_one_bounded_line() {
        let long = "a\n".repeat(500);
        let e = excerpt(&long);
        assert!(!e.contains('\n'));
        assert!(e.chars().count() <= 201);
        assert_eq!(excerpt("short"), "short");
    }
}
