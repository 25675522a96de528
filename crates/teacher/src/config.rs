//! Teacher configuration: from environment variables (the lab manual's names) or from a TOML
//! file that plays the role of the manual's `config/config.py`.
//!
//! The library never reads the process environment: callers pass a lookup function, e.g.
//! `|k| std::env::var(k).ok()`. Secrets are [`SecretString`]s, redacted in `Debug`, and no
//! error message ever contains one.
//!
//! | setting | variable | TOML |
//! |---|---|---|
//! | OpenAI key | `OPENAI_API_KEY` | `openai.api_key` |
//! | OpenAI base URL | `OPENAI_BASE_URL` | `openai.base_url` |
//! | organization / project | `OPENAI_ORG_ID` / `OPENAI_PROJECT_ID` | `openai.organization` / `openai.project` |
//! | Azure endpoint | `AZURE_OPENAI_ENDPOINT` | `azure.endpoint` |
//! | Azure key | `AZURE_OPENAI_API_KEY` | `azure.api_key` |
//! | Azure api-version | `AZURE_OPENAI_API_VERSION` | `azure.api_version` |
//! | Azure deployment | `AZURE_OPENAI_DEPLOYMENT_NAME` | `azure.deployment` |
//! | Azure auth method | `AZURE_OPENAI_AUTH` | `azure.auth` |
//! | Entra tenant / client / secret | `AZURE_TENANT_ID` / `AZURE_CLIENT_ID` / `AZURE_CLIENT_SECRET` | `azure.tenant_id` / `azure.client_id` / `azure.client_secret` |
//! | workload identity token file | `AZURE_FEDERATED_TOKEN_FILE` | `azure.token_file` |
//!
//! `azure.auth` is one of `api-key` (the default when a key is set), `developer-tools` (Azure
//! CLI, then azd; the default otherwise), `client-secret`, `managed-identity` and
//! `workload-identity`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use reqwest::header::HeaderValue;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::engine::GenerateOptions;
use crate::error::{Error, Result};
use crate::pricing::{Price, PriceTable};
use crate::teacher::GenerationParams;

/// OpenAI's public API.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
/// The Azure OpenAI api-version used when none is configured (the GA version with logprobs).
pub const DEFAULT_AZURE_API_VERSION: &str = "2024-10-21";

/// Which service answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// OpenAI, or any OpenAI-compatible server (vLLM, llama.cpp, Ollama).
    OpenAi,
    /// Azure OpenAI.
    Azure,
}

/// Settings for OpenAI and OpenAI-compatible servers.
#[derive(Debug, Clone)]
pub struct OpenAiSettings {
    /// Base URL including `/v1`, e.g. `http://127.0.0.1:8089/v1`.
    pub base_url: String,
    /// The API key; optional for local servers.
    pub api_key: Option<SecretString>,
    /// `OpenAI-Organization` header.
    pub organization: Option<String>,
    /// `OpenAI-Project` header.
    pub project: Option<String>,
}

/// How to authenticate to Azure OpenAI.
#[derive(Debug, Clone)]
pub enum AzureAuth {
    /// The `api-key` header.
    ApiKey(SecretString),
    /// Entra ID through the Azure CLI, then the Azure Developer CLI.
    DeveloperTools,
    /// Entra ID through a service principal's client secret.
    ClientSecret {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The client secret.
        secret: SecretString,
    },
    /// Entra ID through the host's managed identity (system-assigned unless a client id is given).
    ManagedIdentity {
        /// A user-assigned identity's client id.
        client_id: Option<String>,
    },
    /// Entra ID through Kubernetes workload identity federation.
    WorkloadIdentity {
        /// Directory (tenant) id.
        tenant_id: String,
        /// Application (client) id.
        client_id: String,
        /// The projected service account token file.
        token_file: PathBuf,
    },
}

/// Settings for Azure OpenAI.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    /// Resource endpoint, e.g. `https://my-resource.openai.azure.com`.
    pub endpoint: String,
    /// The deployment name.
    pub deployment: String,
    /// The `api-version` query parameter.
    pub api_version: String,
    /// Authentication.
    pub auth: AzureAuth,
}

/// Provider-specific settings.
#[derive(Debug, Clone)]
pub enum ProviderSettings {
    /// OpenAI or OpenAI-compatible.
    OpenAi(OpenAiSettings),
    /// Azure OpenAI.
    Azure(AzureSettings),
}

/// Optional generation defaults from the `[generation]` table; command-line flags win.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationSettings {
    /// Sampling temperature.
    pub temperature: Option<f32>,
    /// Completion token budget.
    pub max_tokens: Option<u32>,
    /// Sampling seed.
    pub seed: Option<i64>,
    /// Alternatives per token (0 to 20).
    pub top_logprobs: Option<u8>,
    /// Requests in flight.
    pub concurrency: Option<usize>,
    /// Client-side request limit.
    pub requests_per_minute: Option<u32>,
    /// Client-side token limit.
    pub tokens_per_minute: Option<u32>,
    /// Per-request timeout in seconds.
    pub timeout_secs: Option<f64>,
    /// Attempts per prompt, including the first.
    pub max_attempts: Option<u32>,
}

impl GenerationSettings {
    /// These settings, with `fallback`'s where these have none: command-line flags over a
    /// file's `[generation]` table, say.
    pub fn or(&self, fallback: &GenerationSettings) -> GenerationSettings {
        GenerationSettings {
            temperature: self.temperature.or(fallback.temperature),
            max_tokens: self.max_tokens.or(fallback.max_tokens),
            seed: self.seed.or(fallback.seed),
            top_logprobs: self.top_logprobs.or(fallback.top_logprobs),
            concurrency: self.concurrency.or(fallback.concurrency),
            requests_per_minute: self.requests_per_minute.or(fallback.requests_per_minute),
            tokens_per_minute: self.tokens_per_minute.or(fallback.tokens_per_minute),
            timeout_secs: self.timeout_secs.or(fallback.timeout_secs),
            max_attempts: self.max_attempts.or(fallback.max_attempts),
        }
    }

    /// The sampling parameters: [`GenerationParams::default`] with these settings on top.
    pub fn params(&self) -> GenerationParams {
        let defaults = GenerationParams::default();
        GenerationParams {
            temperature: self.temperature.or(defaults.temperature),
            max_tokens: self.max_tokens.or(defaults.max_tokens),
            seed: self.seed.or(defaults.seed),
            top_logprobs: self.top_logprobs.unwrap_or(defaults.top_logprobs),
            ..defaults
        }
    }

    /// Engine options for `num_examples` examples into `output`: [`GenerateOptions::new`]'s
    /// defaults with these settings on top. A timeout that is not a positive number of seconds
    /// is an error.
    pub fn generate_options(
        &self,
        num_examples: usize,
        output: impl Into<PathBuf>,
    ) -> Result<GenerateOptions> {
        let mut options = GenerateOptions::new(num_examples, output);
        options.params = self.params();
        if let Some(n) = self.concurrency {
            options.concurrency = n;
        }
        options.limits.requests_per_minute = self.requests_per_minute;
        options.limits.tokens_per_minute = self.tokens_per_minute;
        if let Some(t) = self.timeout_secs {
            options.request_timeout = Duration::try_from_secs_f64(t)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    config_error(
                        "timeout_secs",
                        format!("must be a positive number of seconds, not {t}"),
                    )
                })?;
        }
        if let Some(n) = self.max_attempts {
            options.retry.max_attempts = n;
        }
        Ok(options)
    }
}

/// A resolved teacher configuration.
#[derive(Debug, Clone)]
pub struct TeacherConfig {
    /// Provider and its settings.
    pub provider: ProviderSettings,
    /// The model name (for Azure, defaults to the deployment).
    pub model: Option<String>,
    /// Generation defaults.
    pub generation: GenerationSettings,
    /// Prices: the built-in table with the file's `[prices]` entries on top.
    pub prices: PriceTable,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    provider: Option<String>,
    model: Option<String>,
    #[serde(default)]
    openai: RawOpenAi,
    #[serde(default)]
    azure: RawAzure,
    #[serde(default)]
    generation: GenerationSettings,
    #[serde(default)]
    prices: std::collections::BTreeMap<String, Price>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOpenAi {
    base_url: Option<String>,
    api_key: Option<SecretString>,
    organization: Option<String>,
    project: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAzure {
    endpoint: Option<String>,
    deployment: Option<String>,
    api_version: Option<String>,
    auth: Option<String>,
    api_key: Option<SecretString>,
    tenant_id: Option<String>,
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    token_file: Option<PathBuf>,
}

impl RawFile {
    fn from_vars(vars: &dyn Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| vars(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let secret = |k: &str| get(k).map(SecretString::from);
        RawFile {
            provider: None,
            model: None,
            openai: RawOpenAi {
                base_url: get("OPENAI_BASE_URL"),
                api_key: secret("OPENAI_API_KEY"),
                organization: get("OPENAI_ORG_ID"),
                project: get("OPENAI_PROJECT_ID"),
            },
            azure: RawAzure {
                endpoint: get("AZURE_OPENAI_ENDPOINT"),
                deployment: get("AZURE_OPENAI_DEPLOYMENT_NAME"),
                api_version: get("AZURE_OPENAI_API_VERSION"),
                auth: get("AZURE_OPENAI_AUTH"),
                api_key: secret("AZURE_OPENAI_API_KEY"),
                tenant_id: get("AZURE_TENANT_ID"),
                client_id: get("AZURE_CLIENT_ID"),
                client_secret: secret("AZURE_CLIENT_SECRET"),
                token_file: get("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from),
            },
            generation: GenerationSettings::default(),
            prices: Default::default(),
        }
    }

    /// Fills every unset field of `self` from `other`.
    fn or(self, other: RawFile) -> RawFile {
        let (a, b) = (self.openai, other.openai);
        let (x, y) = (self.azure, other.azure);
        RawFile {
            provider: self.provider.or(other.provider),
            model: self.model.or(other.model),
            openai: RawOpenAi {
                base_url: a.base_url.or(b.base_url),
                api_key: a.api_key.or(b.api_key),
                organization: a.organization.or(b.organization),
                project: a.project.or(b.project),
            },
            azure: RawAzure {
                endpoint: x.endpoint.or(y.endpoint),
                deployment: x.deployment.or(y.deployment),
                api_version: x.api_version.or(y.api_version),
                auth: x.auth.or(y.auth),
                api_key: x.api_key.or(y.api_key),
                tenant_id: x.tenant_id.or(y.tenant_id),
                client_id: x.client_id.or(y.client_id),
                client_secret: x.client_secret.or(y.client_secret),
                token_file: x.token_file.or(y.token_file),
            },
            generation: self.generation,
            prices: self.prices,
        }
    }
}

impl TeacherConfig {
    /// Reads the configuration from environment-style variables.
    pub fn from_vars(provider: Provider, vars: impl Fn(&str) -> Option<String>) -> Result<Self> {
        Self::resolve(RawFile::from_vars(&vars), Some(provider))
    }

    /// Parses a TOML configuration; the provider is its `provider` key (default `openai`).
    pub fn from_toml(text: &str) -> Result<Self> {
        Self::resolve(parse_toml(text, None)?, None)
    }

    /// Parses a TOML configuration and fills what it leaves unset from `vars`, so that keys
    /// can stay in the environment while the file holds everything else. `provider`, when
    /// given, overrides the file's.
    pub fn from_toml_with_vars(
        text: &str,
        provider: Option<Provider>,
        vars: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        Self::resolve(parse_toml(text, None)?.or(RawFile::from_vars(&vars)), provider)
    }

    /// Reads a TOML file; errors name the file, line and column.
    pub fn from_toml_file(
        path: &Path,
        provider: Option<Provider>,
        vars: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::resolve(
            parse_toml(&text, Some(path))?.or(RawFile::from_vars(&vars)),
            provider,
        )
    }

    /// Points the teacher at another server: the OpenAI base URL, or the Azure endpoint.
    pub fn set_base_url(&mut self, url: &str) -> Result<()> {
        match &mut self.provider {
            ProviderSettings::OpenAi(s) => s.base_url = checked_url("base_url", url)?,
            ProviderSettings::Azure(s) => s.endpoint = checked_url("endpoint", url)?,
        }
        Ok(())
    }

    /// Which provider this configures.
    pub fn provider_kind(&self) -> Provider {
        match self.provider {
            ProviderSettings::OpenAi(_) => Provider::OpenAi,
            ProviderSettings::Azure(_) => Provider::Azure,
        }
    }

    fn resolve(raw: RawFile, provider: Option<Provider>) -> Result<Self> {
        let provider = match (provider, raw.provider.as_deref()) {
            (Some(p), _) => p,
            (None, None | Some("openai")) => Provider::OpenAi,
            (None, Some("azure")) => Provider::Azure,
            (None, Some(other)) => {
                return Err(config_error(
                    "provider",
                    format!("`{other}` is not one of openai, azure"),
                ));
            }
        };
        let settings = match provider {
            Provider::OpenAi => ProviderSettings::OpenAi(resolve_openai(raw.openai)?),
            Provider::Azure => ProviderSettings::Azure(resolve_azure(raw.azure)?),
        };
        let mut prices = PriceTable::default();
        for (model, price) in raw.prices {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(price.input_per_mtok) || !ok(price.output_per_mtok) {
                return Err(config_error(
                    &format!("prices.{model}"),
                    "prices must be finite and >= 0".into(),
                ));
            }
            prices.insert(model, price);
        }
        Ok(TeacherConfig {
            provider: settings,
            model: raw.model,
            generation: raw.generation,
            prices,
        })
    }
}

fn resolve_openai(raw: RawOpenAi) -> Result<OpenAiSettings> {
    let base_url = checked_url(
        "OPENAI_BASE_URL",
        raw.base_url.as_deref().unwrap_or(OPENAI_BASE_URL),
    )?;
    if raw.api_key.is_none() && is_openai_cloud(&base_url) {
        return Err(config_error(
            "OPENAI_API_KEY",
            "is not set (required for api.openai.com)".into(),
        ));
    }
    if let Some(key) = &raw.api_key {
        check_header_secret("OPENAI_API_KEY", key)?;
    }
    for (name, v) in [
        ("OPENAI_ORG_ID", &raw.organization),
        ("OPENAI_PROJECT_ID", &raw.project),
    ] {
        if let Some(v) = v
            && HeaderValue::from_str(v).is_err()
        {
            return Err(config_error(
                name,
                "contains characters not allowed in an HTTP header".into(),
            ));
        }
    }
    Ok(OpenAiSettings {
        base_url,
        api_key: raw.api_key,
        organization: raw.organization,
        project: raw.project,
    })
}

fn resolve_azure(raw: RawAzure) -> Result<AzureSettings> {
    let endpoint = raw
        .endpoint
        .ok_or_else(|| config_error("AZURE_OPENAI_ENDPOINT", "is not set".into()))
        .and_then(|e| checked_url("AZURE_OPENAI_ENDPOINT", &e))?;
    let deployment = raw
        .deployment
        .ok_or_else(|| config_error("AZURE_OPENAI_DEPLOYMENT_NAME", "is not set".into()))?;
    if deployment.is_empty()
        || !deployment
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(config_error(
            "AZURE_OPENAI_DEPLOYMENT_NAME",
            format!("`{deployment}` is not a valid deployment name (letters, digits, - _ .)"),
        ));
    }
    let api_version = raw
        .api_version
        .unwrap_or_else(|| DEFAULT_AZURE_API_VERSION.to_owned());
    let need = |v: Option<String>, key: &str, method: &str| {
        v.ok_or_else(|| config_error(key, format!("is required for the {method} auth method")))
    };
    let method = raw.auth.as_deref().unwrap_or(if raw.api_key.is_some() {
        "api-key"
    } else {
        "developer-tools"
    });
    let auth = match method {
        "api-key" => {
            let key = raw
                .api_key
                .ok_or_else(|| config_error("AZURE_OPENAI_API_KEY", "is not set".into()))?;
            check_header_secret("AZURE_OPENAI_API_KEY", &key)?;
            AzureAuth::ApiKey(key)
        }
        "developer-tools" => AzureAuth::DeveloperTools,
        "client-secret" => AzureAuth::ClientSecret {
            tenant_id: need(raw.tenant_id, "AZURE_TENANT_ID", method)?,
            client_id: need(raw.client_id, "AZURE_CLIENT_ID", method)?,
            secret: raw.client_secret.ok_or_else(|| {
                config_error(
                    "AZURE_CLIENT_SECRET",
                    format!("is required for the {method} auth method"),
                )
            })?,
        },
        "managed-identity" => AzureAuth::ManagedIdentity {
            client_id: raw.client_id,
        },
        "workload-identity" => AzureAuth::WorkloadIdentity {
            tenant_id: need(raw.tenant_id, "AZURE_TENANT_ID", method)?,
            client_id: need(raw.client_id, "AZURE_CLIENT_ID", method)?,
            token_file: raw.token_file.ok_or_else(|| {
                config_error(
                    "AZURE_FEDERATED_TOKEN_FILE",
                    format!("is required for the {method} auth method"),
                )
            })?,
        },
        other => {
            return Err(config_error(
                "AZURE_OPENAI_AUTH",
                format!(
                    "`{other}` is not one of api-key, developer-tools, client-secret, managed-identity, workload-identity"
                ),
            ));
        }
    };
    Ok(AzureSettings {
        endpoint,
        deployment,
        api_version,
        auth,
    })
}

fn parse_toml(text: &str, path: Option<&Path>) -> Result<RawFile> {
    toml::from_str(text).map_err(|source| {
        let offset = source.span().map(|s| s.start).unwrap_or(0).min(text.len());
        // Bytes, not `&str`: a span need not fall on a character boundary.
        let before = &text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&before[line_start..]).chars().count() + 1;
        Error::Toml {
            path: path.map(Path::to_owned),
            line,
            column,
            source: Box::new(source),
        }
    })
}

/// An http(s) URL without a trailing slash.
fn checked_url(key: &str, url: &str) -> Result<String> {
    let parsed = Url::parse(url).map_err(|e| config_error(key, format!("`{url}` is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(config_error(
            key,
            format!("`{url}` must be an http or https URL with a host"),
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

pub(crate) fn is_openai_cloud(base_url: &str) -> bool {
    Url::parse(base_url)
        .ok()
        .and_then(|u| u.host_str().map(|h| h == "api.openai.com"))
        .unwrap_or(false)
}

fn check_header_secret(key: &str, secret: &SecretString) -> Result<()> {
    if secret.expose_secret().is_empty() || HeaderValue::from_str(secret.expose_secret()).is_err() {
        return Err(config_error(
            key,
            "is empty or contains characters not allowed in an HTTP header".into(),
        ));
    }
    Ok(())
}

fn config_error(key: &str, problem: String) -> Error {
    Error::Config {
        key: key.to_owned(),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_over_the_file_over_the_library_defaults() {
        let file = GenerationSettings {
            temperature: Some(0.2),
            max_tokens: Some(64),
            concurrency: Some(3),
            timeout_secs: Some(30.0),
            ..Default::default()
        };
        let flags = GenerationSettings {
            max_tokens: Some(16),
            top_logprobs: Some(5),
            ..Default::default()
        };
        let merged = flags.or(&file);
        let options = merged.generate_options(10, "out.jsonl").unwrap();
        assert_eq!(options.params.max_tokens, Some(16), "a flag wins over the file");
        assert_eq!(
            options.params.temperature,
            Some(0.2),
            "the file fills what flags leave"
        );
        assert_eq!(options.params.top_logprobs, 5);
        assert_eq!(options.params.seed, GenerationParams::default().seed);
        assert_eq!(options.concurrency, 3);
        assert_eq!(options.request_timeout, Duration::from_secs(30));
        let defaults = GenerateOptions::new(10, "out.jsonl");
        assert_eq!(
            options.retry.max_attempts, defaults.retry.max_attempts,
            "the library default stays"
        );
        for t in [0.0, -1.0, f64::NAN, 1e20] {
            let bad = GenerationSettings {
                timeout_secs: Some(t),
                ..Default::default()
            };
            let err = bad.generate_options(1, "o.jsonl").unwrap_err();
            assert!(err.to_string().contains("timeout_secs"), "{t}: {err}");
        }
    }

    use std::collections::HashMap;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn openai_from_vars() {
        let c =
            TeacherConfig::from_vars(Provider::OpenAi, vars(&[("OPENAI_API_KEY", "sk-test-123\n")])).unwrap();
        let ProviderSettings::OpenAi(s) = &c.provider else {
            panic!("not openai")
        };
        assert_eq!(s.base_url, OPENAI_BASE_URL);
        assert_eq!(s.api_key.as_ref().unwrap().expose_secret(), "sk-test-123");
        assert!(!format!("{c:?}").contains("sk-test-123"));

        let err = TeacherConfig::from_vars(Provider::OpenAi, vars(&[])).unwrap_err();
        assert!(err.to_string().contains("OPENAI_API_KEY"), "{err}");
        // A local server needs no key.
        let c = TeacherConfig::from_vars(
            Provider::OpenAi,
            vars(&[("OPENAI_BASE_URL", "http://127.0.0.1:8089/v1/")]),
        )
        .unwrap();
        let ProviderSettings::OpenAi(s) = &c.provider else {
            panic!("not openai")
        };
        assert_eq!(s.base_url, "http://127.0.0.1:8089/v1");
    }

    #[test]
    fn azure_from_vars_picks_auth() {
        let base = [
            ("AZURE_OPENAI_ENDPOINT", "https://res.openai.azure.com"),
            ("AZURE_OPENAI_DEPLOYMENT_NAME", "gpt-4o"),
        ];
        let mut with_key = base.to_vec();
        with_key.push(("AZURE_OPENAI_API_KEY", "azkey-secret"));
        let c = TeacherConfig::from_vars(Provider::Azure, vars(&with_key)).unwrap();
        let ProviderSettings::Azure(s) = &c.provider else {
            panic!("not azure")
        };
        assert!(matches!(s.auth, AzureAuth::ApiKey(_)));
        assert_eq!(s.api_version, DEFAULT_AZURE_API_VERSION);
        assert!(!format!("{c:?}").contains("azkey-secret"));

        let c = TeacherConfig::from_vars(Provider::Azure, vars(&base)).unwrap();
        let ProviderSettings::Azure(s) = &c.provider else {
            panic!("not azure")
        };
        assert!(matches!(s.auth, AzureAuth::DeveloperTools));

        let mut sp = base.to_vec();
        sp.extend([
            ("AZURE_OPENAI_AUTH", "client-secret"),
            ("AZURE_TENANT_ID", "t"),
            ("AZURE_CLIENT_ID", "c"),
        ]);
        let err = TeacherConfig::from_vars(Provider::Azure, vars(&sp)).unwrap_err();
        assert!(err.to_string().contains("AZURE_CLIENT_SECRET"), "{err}");
        sp.push(("AZURE_CLIENT_SECRET", "shh-very-secret"));
        let c = TeacherConfig::from_vars(Provider::Azure, vars(&sp)).unwrap();
        assert!(!format!("{c:?}").contains("shh-very-secret"));

        let err =
            TeacherConfig::from_vars(Provider::Azure, vars(&[("AZURE_OPENAI_ENDPOINT", "x")])).unwrap_err();
        assert!(err.to_string().contains("AZURE_OPENAI_ENDPOINT"), "{err}");
    }

    #[test]
    fn bad_key_is_reported_without_its_value() {
        let err = TeacherConfig::from_vars(Provider::OpenAi, vars(&[("OPENAI_API_KEY", "sk-bad\u{7f}key")]))
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("OPENAI_API_KEY") && !msg.contains("sk-bad"), "{msg}");
    }

    #[test]
    fn toml_with_env_fallback_and_prices() {
        let text = r#"
provider = "azure"
model = "gpt-4o"

[azure]
endpoint = "https://res.openai.azure.com"
deployment = "gpt4o-prod"
api_version = "2025-01-01-preview"

[generation]
temperature = 0.2
top_logprobs = 5

[prices."gpt-4o"]
input_per_mtok = 5.0
output_per_mtok = 15.0
"#;
        let c =
            TeacherConfig::from_toml_with_vars(text, None, vars(&[("AZURE_OPENAI_API_KEY", "k1")])).unwrap();
        let ProviderSettings::Azure(s) = &c.provider else {
            panic!("not azure")
        };
        assert_eq!(s.deployment, "gpt4o-prod");
        assert_eq!(s.api_version, "2025-01-01-preview");
        assert!(matches!(&s.auth, AzureAuth::ApiKey(k) if k.expose_secret() == "k1"));
        assert_eq!(c.generation.top_logprobs, Some(5));
        assert_eq!(c.prices.get("gpt-4o").unwrap().input_per_mtok, 5.0);
        assert_eq!(c.prices.get("gpt-4o-mini").unwrap().input_per_mtok, 0.15);
    }

    #[test]
    fn toml_errors_name_line_and_column() {
        let text = "provider = \"openai\"\n[openai]\nbase_url = \"http://x/v1\"\napi_kee = \"k\"\n";
        let err = TeacherConfig::from_toml(text).unwrap_err();
        match &err {
            Error::Toml { line, .. } => assert_eq!(*line, 4, "{err}"),
            other => panic!("unexpected {other:?}"),
        }
        let err = TeacherConfig::from_toml("provider = \"vertex\"").unwrap_err();
        assert!(err.to_string().contains("vertex"));
    }
}
