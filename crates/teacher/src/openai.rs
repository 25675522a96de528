//! The OpenAI and Azure OpenAI teachers.
//!
//! Both build their URL, query and headers from async-openai's `Config` ([`OpenAIConfig`],
//! [`AzureConfig`]); Entra ID adds a cached bearer token per request instead of `api-key`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_openai::config::{AzureConfig, Config, OpenAIConfig};
use azure_core::credentials::TokenCredential;
use distill_data::Message;
use reqwest::header::{AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};

use crate::chat::{MaxTokensField, build_request, parse_response};
use crate::config::{
    AzureAuth, AzureSettings, OpenAiSettings, ProviderSettings, TeacherConfig, is_openai_cloud,
};
use crate::error::{Error, Result};
use crate::http::{Auth, COGNITIVE_SERVICES_SCOPE, TokenCache, Transport};
use crate::teacher::{Completion, GenerationParams, Teacher, TeacherId};

/// Entra tokens are refreshed this long before they expire.
const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(300);

/// Everything needed to call one deployment or model: shared by the teacher and batch mode.
#[derive(Debug)]
pub(crate) struct Endpoint {
    pub(crate) transport: Transport,
    pub(crate) chat_url: String,
    /// `…/files` and `…/batches` live under this (OpenAI: the base URL; Azure: `{endpoint}/openai`).
    pub(crate) api_root: String,
    /// The `url` and `endpoint` that batch input lines and batch creation name.
    pub(crate) batch_endpoint: &'static str,
    pub(crate) model: String,
    pub(crate) provider: &'static str,
    pub(crate) field: MaxTokensField,
}

impl Endpoint {
    pub(crate) async fn complete(
        &self,
        messages: &[Message],
        params: &GenerationParams,
    ) -> Result<Completion> {
        let request = build_request(&self.model, messages, params, self.field);
        let body = serde_json::to_vec(&request).map_err(|source| Error::Encode {
            what: "the request",
            source,
        })?;
        let started = Instant::now();
        let raw = self.transport.post_json(&self.chat_url, body).await?;
        let mut completion = parse_response(&self.chat_url, &raw, params.top_logprobs, |b| {
            self.transport.scrubbed(b)
        })?;
        completion.latency = started.elapsed();
        Ok(completion)
    }
}

/// OpenAI, or any OpenAI-compatible server (vLLM, llama.cpp's server, Ollama).
#[derive(Debug, Clone)]
pub struct OpenAiTeacher {
    pub(crate) endpoint: Arc<Endpoint>,
}

impl OpenAiTeacher {
    /// A teacher for `model` at `settings.base_url`.
    pub fn new(settings: &OpenAiSettings, model: impl Into<String>) -> Result<Self> {
        let model = model.into();
        if model.is_empty() {
            return Err(Error::Config {
                key: "model".into(),
                problem: "is empty".into(),
            });
        }
        // `OpenAIConfig::new()` pre-fills from OPENAI_* variables; every field is set explicitly
        // here so that only the caller's settings count.
        let key = settings
            .api_key
            .as_ref()
            .map(|k| k.expose_secret().to_owned())
            .unwrap_or_default();
        let config = OpenAIConfig::new()
            .with_api_base(settings.base_url.clone())
            .with_api_key(key)
            .with_org_id(settings.organization.clone().unwrap_or_default())
            .with_project_id(settings.project.clone().unwrap_or_default());
        let mut headers = config.headers();
        if settings.api_key.is_none() {
            // Local servers take no key; send no empty `Bearer`.
            headers.remove(AUTHORIZATION);
        }
        let cloud = is_openai_cloud(&settings.base_url);
        let endpoint = Endpoint {
            transport: Transport::new(
                Transport::default_client()?,
                headers,
                owned_query(&config),
                Auth::Headers,
                settings.api_key.iter().cloned().collect(),
            ),
            chat_url: config.url("/chat/completions"),
            api_root: config.api_base().to_owned(),
            batch_endpoint: "/v1/chat/completions",
            model,
            provider: if cloud { "openai" } else { "openai-compatible" },
            field: if cloud {
                MaxTokensField::MaxCompletionTokens
            } else {
                MaxTokensField::MaxTokens
            },
        };
        Ok(OpenAiTeacher {
            endpoint: Arc::new(endpoint),
        })
    }

    /// The model ids the server lists (`GET {base_url}/models`), in its order.
    ///
    /// Parsed leniently (only `data[].id`): llama.cpp's server, for one, omits fields that
    /// async-openai's `Model` requires.
    pub async fn list_models(&self) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct List {
            data: Vec<Entry>,
        }
        #[derive(serde::Deserialize)]
        struct Entry {
            id: String,
        }
        let url = format!("{}/models", self.endpoint.api_root);
        let body = self.endpoint.transport.get(&url).await?;
        let list: List = serde_json::from_slice(&body).map_err(|source| Error::Decode {
            body: self.endpoint.transport.scrubbed(&body),
            url,
            source,
        })?;
        Ok(list.data.into_iter().map(|m| m.id).collect())
    }

    /// Uses `client` for HTTP (proxies, TLS roots, pool sizes).
    pub fn with_http_client(self, client: reqwest::Client) -> Self {
        self.map_endpoint(|e| e.transport.set_client(client))
    }

    /// Chooses the request field for the completion budget.
    pub fn with_max_tokens_field(self, field: MaxTokensField) -> Self {
        self.map_endpoint(|e| e.field = field)
    }

    fn map_endpoint(self, f: impl FnOnce(&mut Endpoint)) -> Self {
        let mut endpoint = Arc::try_unwrap(self.endpoint).unwrap_or_else(|shared| clone_endpoint(&shared));
        f(&mut endpoint);
        OpenAiTeacher {
            endpoint: Arc::new(endpoint),
        }
    }
}

/// Azure OpenAI, with an `api-key` or an Entra ID credential.
#[derive(Debug, Clone)]
pub struct AzureTeacher {
    pub(crate) endpoint: Arc<Endpoint>,
}

impl AzureTeacher {
    /// A teacher for `settings.deployment`, authenticating as `settings.auth` says.
    pub fn new(settings: &AzureSettings) -> Result<Self> {
        let credential: Arc<dyn TokenCredential> = match &settings.auth {
            AzureAuth::ApiKey(key) => return Self::build(settings, Some(key.clone()), None),
            AzureAuth::DeveloperTools => {
                azure_identity::DeveloperToolsCredential::new(None).map_err(cred_error)?
            }
            AzureAuth::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => azure_identity::ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                azure_core::credentials::Secret::new(secret.expose_secret().to_owned()),
                None,
            )
            .map_err(cred_error)?,
            AzureAuth::ManagedIdentity { client_id } => {
                let options = azure_identity::ManagedIdentityCredentialOptions {
                    user_assigned_id: client_id.clone().map(azure_identity::UserAssignedId::ClientId),
                    ..Default::default()
                };
                azure_identity::ManagedIdentityCredential::new(Some(options)).map_err(cred_error)?
            }
            AzureAuth::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => {
                let options = azure_identity::WorkloadIdentityCredentialOptions {
                    tenant_id: Some(tenant_id.clone()),
                    client_id: Some(client_id.clone()),
                    token_file_path: Some(token_file.clone()),
                    ..Default::default()
                };
                azure_identity::WorkloadIdentityCredential::new(Some(options)).map_err(cred_error)?
            }
        };
        Self::build(settings, None, Some(credential))
    }

    /// A teacher that takes Entra ID tokens from `credential`, whatever `settings.auth` says.
    pub fn with_credential(settings: &AzureSettings, credential: Arc<dyn TokenCredential>) -> Result<Self> {
        Self::build(settings, None, Some(credential))
    }

    fn build(
        settings: &AzureSettings,
        key: Option<SecretString>,
        credential: Option<Arc<dyn TokenCredential>>,
    ) -> Result<Self> {
        let config = AzureConfig::new()
            .with_api_base(settings.endpoint.clone())
            .with_deployment_id(settings.deployment.clone())
            .with_api_version(settings.api_version.clone())
            .with_api_key(
                key.as_ref()
                    .map(|k| k.expose_secret().to_owned())
                    .unwrap_or_default(),
            );
        let (headers, auth) = match credential {
            None => (config.headers(), Auth::Headers),
            Some(c) => (
                Default::default(),
                Auth::Entra(Arc::new(TokenCache::new(
                    c,
                    COGNITIVE_SERVICES_SCOPE,
                    TOKEN_REFRESH_MARGIN,
                ))),
            ),
        };
        let endpoint = Endpoint {
            transport: Transport::new(
                Transport::default_client()?,
                headers,
                owned_query(&config),
                auth,
                key.into_iter().collect(),
            ),
            chat_url: config.url("/chat/completions"),
            api_root: format!("{}/openai", config.api_base()),
            batch_endpoint: "/chat/completions",
            model: settings.deployment.clone(),
            provider: "azure",
            field: MaxTokensField::MaxTokens,
        };
        Ok(AzureTeacher {
            endpoint: Arc::new(endpoint),
        })
    }

    /// Uses `client` for HTTP (proxies, TLS roots, pool sizes).
    pub fn with_http_client(self, client: reqwest::Client) -> Self {
        self.map_endpoint(|e| e.transport.set_client(client))
    }

    /// Chooses the request field for the completion budget (reasoning-model deployments need
    /// `max_completion_tokens`).
    pub fn with_max_tokens_field(self, field: MaxTokensField) -> Self {
        self.map_endpoint(|e| e.field = field)
    }

    /// Adds a header to every request.
    pub fn with_header(self, name: HeaderName, value: HeaderValue) -> Self {
        self.map_endpoint(|e| e.transport.insert_header(name, value))
    }

    fn map_endpoint(self, f: impl FnOnce(&mut Endpoint)) -> Self {
        let mut endpoint = Arc::try_unwrap(self.endpoint).unwrap_or_else(|shared| clone_endpoint(&shared));
        f(&mut endpoint);
        AzureTeacher {
            endpoint: Arc::new(endpoint),
        }
    }
}

#[async_trait::async_trait]
impl Teacher for OpenAiTeacher {
    fn id(&self) -> TeacherId {
        TeacherId {
            provider: self.endpoint.provider.into(),
            model: self.endpoint.model.clone(),
        }
    }

    async fn complete(&self, messages: &[Message], params: &GenerationParams) -> Result<Completion> {
        self.endpoint.complete(messages, params).await
    }
}

#[async_trait::async_trait]
impl Teacher for AzureTeacher {
    fn id(&self) -> TeacherId {
        TeacherId {
            provider: self.endpoint.provider.into(),
            model: self.endpoint.model.clone(),
        }
    }

    async fn complete(&self, messages: &[Message], params: &GenerationParams) -> Result<Completion> {
        self.endpoint.complete(messages, params).await
    }
}

/// The model to use on an OpenAI-compatible server when none is configured: the first one it
/// lists (a local llama.cpp, vLLM or Ollama server lists the model it serves). OpenAI's own API
/// lists dozens, so there a model must be named.
pub async fn discover_model(settings: &OpenAiSettings) -> Result<String> {
    let missing = |problem: &str| Error::Config {
        key: "model".into(),
        problem: problem.into(),
    };
    if is_openai_cloud(&settings.base_url) {
        return Err(missing("is required for api.openai.com"));
    }
    let probe = OpenAiTeacher::new(settings, "probe")?;
    probe
        .list_models()
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| missing("is not set, and the server lists no models"))
}

/// Builds the configured teacher. `model` overrides the configuration's (for Azure the
/// deployment is what answers; the model name is only recorded).
pub fn teacher_from_config(config: &TeacherConfig, model: Option<&str>) -> Result<Arc<dyn Teacher>> {
    let model = model.map(str::to_owned).or_else(|| config.model.clone());
    match &config.provider {
        ProviderSettings::OpenAi(s) => {
            let model = model.ok_or_else(|| Error::Config {
                key: "model".into(),
                problem: "is not set".into(),
            })?;
            Ok(Arc::new(OpenAiTeacher::new(s, model)?))
        }
        ProviderSettings::Azure(s) => Ok(Arc::new(AzureTeacher::new(s)?)),
    }
}

fn owned_query(config: &dyn Config) -> Vec<(String, String)> {
    config
        .query()
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn cred_error(source: azure_core::Error) -> Error {
    Error::Credential {
        scope: COGNITIVE_SERVICES_SCOPE.into(),
        source,
    }
}

fn clone_endpoint(e: &Endpoint) -> Endpoint {
    Endpoint {
        transport: e.transport.clone(),
        chat_url: e.chat_url.clone(),
        api_root: e.api_root.clone(),
        batch_endpoint: e.batch_endpoint,
        model: e.model.clone(),
        provider: e.provider,
        field: e.field,
    }
}
