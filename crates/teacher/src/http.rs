//! One HTTP attempt: authentication, sending, reading the whole body, and turning a failure
//! into an [`Error`] that keeps the status, the provider's error code, the body and the
//! server's wait hint.
//!
//! Requests are built from async-openai's `Config` (URL, query, headers) and its request and
//! response types, but sent here rather than through `async_openai::Client`: the engine needs
//! every attempt's status and headers (`retry-after-ms`, `x-ratelimit-reset-*`) and the raw
//! body of malformed answers, and it must be the only retry policy in force.

use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::{AccessToken, TokenCredential};
use azure_core::time::OffsetDateTime;
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::retry::retry_after;

/// Bodies kept in errors are cut to this many bytes.
const BODY_KEEP: usize = 4096;

/// The Entra ID scope for Azure OpenAI.
pub const COGNITIVE_SERVICES_SCOPE: &str = "https://cognitiveservices.azure.com/.default";

/// Entra ID tokens, fetched from a credential and reused until shortly before they expire.
pub(crate) struct TokenCache {
    credential: Arc<dyn TokenCredential>,
    scope: String,
    margin: Duration,
    cached: tokio::sync::Mutex<Option<AccessToken>>,
    /// The latest tokens, for scrubbing error bodies synchronously.
    recent: std::sync::Mutex<Vec<SecretString>>,
}

impl std::fmt::Debug for TokenCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenCache")
            .field("credential", &self.credential)
            .field("scope", &self.scope)
            .finish()
    }
}

impl TokenCache {
    /// Tokens are refreshed `margin` before `expires_on`.
    pub(crate) fn new(credential: Arc<dyn TokenCredential>, scope: &str, margin: Duration) -> Self {
        TokenCache {
            credential,
            scope: scope.to_owned(),
            margin,
            cached: tokio::sync::Mutex::new(None),
            recent: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A valid bearer header value. Concurrent callers wait for one refresh instead of each
    /// asking the credential (the Azure CLI credential takes seconds per call).
    async fn header(&self) -> Result<HeaderValue> {
        let mut cached = self.cached.lock().await;
        let fresh_until = OffsetDateTime::now_utc() + self.margin;
        let usable = cached.as_ref().is_some_and(|t| t.expires_on > fresh_until);
        if !usable {
            let token = self
                .credential
                .get_token(&[self.scope.as_str()], None)
                .await
                .map_err(|source| Error::Credential {
                    scope: self.scope.clone(),
                    source,
                })?;
            tracing::debug!(expires_on = %token.expires_on, "fetched an Entra ID token");
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.len() >= 4 {
                recent.remove(0);
            }
            recent.push(SecretString::from(token.token.secret().to_owned()));
            *cached = Some(token);
        }
        let token = cached.as_ref().map(|t| t.token.secret()).unwrap_or_default();
        let mut value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| Error::Protocol {
            url: self.scope.clone(),
            problem: "the credential returned a token that is not a valid header value".into(),
        })?;
        value.set_sensitive(true);
        Ok(value)
    }
}

/// How requests authenticate.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// Fixed headers (OpenAI `Authorization: Bearer`, Azure `api-key`), from async-openai's `Config`.
    Headers,
    /// An Entra ID bearer token, added per request.
    Entra(Arc<TokenCache>),
}

/// Sends requests for one endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    client: reqwest::Client,
    headers: HeaderMap,
    query: Vec<(String, String)>,
    auth: Auth,
    /// Secret values scrubbed from any response body kept in an error.
    scrub: Vec<SecretString>,
}

impl Transport {
    /// `headers` come from an async-openai `Config`; credential headers are marked sensitive
    /// so they print as `Sensitive` even in the HTTP client's own debug output.
    pub(crate) fn new(
        client: reqwest::Client,
        mut headers: HeaderMap,
        query: Vec<(String, String)>,
        auth: Auth,
        scrub: Vec<SecretString>,
    ) -> Self {
        for (name, value) in headers.iter_mut() {
            if name == AUTHORIZATION || name.as_str() == "api-key" {
                value.set_sensitive(true);
            }
        }
        Transport {
            client,
            headers,
            query,
            auth,
            scrub,
        }
    }

    /// The default HTTP client: connection timeout only; request deadlines belong to the caller.
    pub(crate) fn default_client() -> Result<reqwest::Client> {
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(Error::HttpClient)
    }

    pub(crate) fn set_client(&mut self, client: reqwest::Client) {
        self.client = client;
    }

    /// Adds a header to every request (for example `x-ms-client-request-id` in tests).
    pub(crate) fn insert_header(&mut self, name: HeaderName, value: HeaderValue) {
        self.headers.insert(name, value);
    }

    /// POSTs a JSON body.
    pub(crate) async fn post_json(&self, url: &str, body: Vec<u8>) -> Result<Bytes> {
        let req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        self.send(url, req).await
    }

    /// POSTs a multipart form.
    pub(crate) async fn post_multipart(&self, url: &str, form: reqwest::multipart::Form) -> Result<Bytes> {
        self.send(url, self.client.post(url).multipart(form)).await
    }

    /// GETs a resource.
    pub(crate) async fn get(&self, url: &str) -> Result<Bytes> {
        self.send(url, self.client.get(url)).await
    }

    async fn send(&self, url: &str, req: reqwest::RequestBuilder) -> Result<Bytes> {
        let mut req = req.headers(self.headers.clone()).query(&self.query);
        if let Auth::Entra(cache) = &self.auth {
            req = req.header(AUTHORIZATION, cache.header().await?);
        }
        let transport = |source| Error::Transport {
            url: url.to_owned(),
            source,
        };
        let response = req.send().await.map_err(transport)?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(transport)?;
        tracing::trace!(%url, status = status.as_u16(), bytes = body.len(), "response");
        if status.is_success() {
            return Ok(body);
        }
        Err(self.api_error(url, status.as_u16(), &headers, &body))
    }

    fn api_error(&self, url: &str, status: u16, headers: &HeaderMap, body: &[u8]) -> Error {
        #[derive(Deserialize)]
        struct Envelope {
            error: Option<ErrorBody>,
        }
        #[derive(Deserialize)]
        struct ErrorBody {
            message: Option<String>,
            code: Option<serde_json::Value>,
            #[serde(rename = "type")]
            kind: Option<String>,
        }
        let parsed = serde_json::from_slice::<Envelope>(body)
            .ok()
            .and_then(|e| e.error);
        // OpenAI puts `insufficient_quota` in `code`; some proxies only in `type`.
        let code = parsed.as_ref().and_then(|e| match &e.code {
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => None,
        });
        let code = code.or_else(|| {
            parsed
                .as_ref()
                .and_then(|e| e.kind.clone())
                .filter(|k| k == "insufficient_quota")
        });
        let body = self.scrubbed(body);
        let message = parsed
            .and_then(|e| e.message)
            .map(|m| self.scrubbed(m.as_bytes()))
            .unwrap_or_else(|| crate::error::excerpt(&body).into_owned());
        Error::Api {
            url: url.to_owned(),
            status,
            code,
            message,
            body,
            retry_after: retry_after(headers),
        }
    }

    /// The body as text, cut to [`BODY_KEEP`] bytes, with configured secrets replaced.
    pub(crate) fn scrubbed(&self, body: &[u8]) -> String {
        let cut = &body[..body.len().min(BODY_KEEP)];
        let mut text = String::from_utf8_lossy(cut).into_owned();
        let mut scrub = |secret: &SecretString| {
            let s = secret.expose_secret();
            if s.len() >= 4 && text.contains(s) {
                text = text.replace(s, "[REDACTED]");
            }
        };
        self.scrub.iter().for_each(&mut scrub);
        if let Auth::Entra(cache) = &self.auth {
            cache
                .recent
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .for_each(&mut scrub);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrubs_secrets_and_truncates() {
        let t = Transport::new(
            Transport::default_client().unwrap(),
            HeaderMap::new(),
            vec![],
            Auth::Headers,
            vec![SecretString::from("sk-live-abcdef")],
        );
        let body = format!(
            "{{\"error\":{{\"message\":\"bad key sk-live-abcdef\"}},\"pad\":\"{}\"}}",
            "x".repeat(10_000)
        );
        let s = t.scrubbed(body.as_bytes());
        assert!(!s.contains("sk-live-abcdef"));
        assert!(s.contains("[REDACTED]"));
        assert!(s.len() <= BODY_KEEP + 16);
        let e = t.api_error("http://x", 401, &HeaderMap::new(), body.as_bytes());
        let Error::Api { message, status, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(*status, 401);
        assert_eq!(message, "bad key [REDACTED]");
    }

    #[test]
    fn reads_quota_code_from_type() {
        let t = Transport::new(
            Transport::default_client().unwrap(),
            HeaderMap::new(),
            vec![],
            Auth::Headers,
            vec![],
        );
        let body = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":null}}"#;
        let e = t.api_error("http://x", 429, &HeaderMap::new(), body);
        assert_eq!(e.class(), crate::ErrorClass::Fatal);
    }
}
