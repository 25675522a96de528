//! `POST /v1/chat/completions` and `POST /v1/completions`: the request is checked and
//! tokenized, queued as a [`Job`], and its events are answered as one JSON body or as
//! server-sent events ending in `data: [DONE]`. The two endpoints differ only in how the
//! prompt is made and how answers are shaped ([`Shape`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use distill_student::tokenizer::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::AppState;
use crate::api::{
    AssistantMessage, ChatChoice, ChatChunk, ChatCompletion, ChatRequest, ChoiceLogprobs, ChunkChoice,
    CompletionRequest, Content, Delta, FinishReason, LegacyLogprobs, Prompt, SamplingFields, TextChoice,
    TextCompletion, TokenLogprob, Usage,
};
use crate::error::ApiError;
use crate::scheduler::{Event, Failure, Job};

/// The most alternatives per token, as OpenAI allows.
const MAX_TOP_LOGPROBS: u32 = 20;
/// The most stop strings, as OpenAI allows.
const MAX_STOPS: usize = 4;

/// `POST /v1/chat/completions`.
pub(crate) async fn chat(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let request: ChatRequest = parse(body)?;
        check_model(&state, &request.model)?;
        let top_logprobs = match (request.logprobs, request.top_logprobs) {
            (_, Some(k)) if k > MAX_TOP_LOGPROBS => {
                return Err(ApiError::invalid(
                    Some("top_logprobs"),
                    format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}, not {k}"),
                ));
            }
            (Some(true), k) => Some(k.unwrap_or(0) as usize),
            (_, Some(k)) if k > 0 => {
                return Err(ApiError::invalid(
                    Some("top_logprobs"),
                    "top_logprobs needs logprobs: true",
                ));
            }
            _ => None,
        };
        let messages = messages(request.messages)?;
        let text = state.tokenizer.render_chat(&messages, true).map_err(|e| {
            ApiError::invalid(
                Some("messages"),
                format!("the chat template refused the messages: {e}"),
            )
        })?;
        let prompt = encode(&state, &text, false)?;
        let max_tokens = request.max_completion_tokens.or(request.sampling.max_tokens);
        let shape = Shape::Chat;
        respond(&state, shape, prompt, request.sampling, max_tokens, top_logprobs).await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/completions`.
pub(crate) async fn text(
    State(state): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = async {
        let request: CompletionRequest = parse(body)?;
        check_model(&state, &request.model)?;
        let top_logprobs = match request.logprobs {
            Some(k) if k > MAX_TOP_LOGPROBS => {
                return Err(ApiError::invalid(
                    Some("logprobs"),
                    format!("logprobs must be at most {MAX_TOP_LOGPROBS}, not {k}"),
                ));
            }
            k => k.map(|k| k as usize),
        };
        let text = match request.prompt {
            Prompt::Text(text) => text,
            Prompt::Batch(mut prompts) if prompts.len() == 1 => prompts.remove(0),
            Prompt::Batch(prompts) => {
                return Err(ApiError::invalid(
                    Some("prompt"),
                    format!("one prompt per request, not {}", prompts.len()),
                ));
            }
        };
        let prompt = encode(&state, &text, true)?;
        let max_tokens = request.sampling.max_tokens;
        respond(
            &state,
            Shape::Text,
            prompt,
            request.sampling,
            max_tokens,
            top_logprobs,
        )
        .await
    };
    answer.await.unwrap_or_else(IntoResponse::into_response)
}

/// The body as JSON of type `T`.
fn parse<T: serde::de::DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|rejection| ApiError {
        status: rejection.status(),
        ..ApiError::invalid(None, rejection.body_text())
    })?;
    serde_json::from_slice(&body).map_err(|e| {
        ApiError::invalid(
            None,
            format!("We could not parse the JSON body of your request: {e}"),
        )
    })
}

fn check_model(state: &AppState, model: &str) -> Result<(), ApiError> {
    if model == state.config.served_model_name {
        Ok(())
    } else {
        Err(ApiError::unknown_model(model))
    }
}

/// The conversation as the chat template takes it.
fn messages(messages: Vec<crate::api::ChatMessage>) -> Result<Vec<Message>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "messages must not be empty"));
    }
    messages
        .into_iter()
        .map(|m| {
            let role = match m.role.as_str() {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                other => {
                    return Err(ApiError::invalid(
                        Some("messages"),
                        format!("role `{other}` is not supported (system, developer, user, assistant)"),
                    ));
                }
            };
            let content = match m.content {
                None => String::new(),
                Some(Content::Text(text)) => text,
                Some(Content::Parts(parts)) => parts
                    .into_iter()
                    .map(|part| match (part.kind.as_str(), part.text) {
                        ("text", Some(text)) => Ok(text),
                        (kind, _) => Err(ApiError::invalid(
                            Some("messages"),
                            format!("content parts of type `{kind}` are not supported; only text"),
                        )),
                    })
                    .collect::<Result<Vec<_>, _>>()?
                    .concat(),
            };
            Ok(Message::new(role, content))
        })
        .collect()
}

fn encode(state: &AppState, text: &str, special_tokens: bool) -> Result<Vec<i64>, ApiError> {
    let ids = state
        .tokenizer
        .encode(text, special_tokens)
        .map_err(|e| ApiError::internal(format!("tokenizing the prompt failed: {e}")))?;
    if ids.is_empty() {
        return Err(ApiError::invalid(Some("prompt"), "the prompt has no tokens"));
    }
    Ok(ids.into_iter().map(i64::from).collect())
}

/// Checks the sampling fields, queues the job and answers it.
async fn respond(
    state: &Arc<AppState>,
    shape: Shape,
    prompt: Vec<i64>,
    sampling: SamplingFields,
    max_tokens: Option<u64>,
    top_logprobs: Option<usize>,
) -> Result<Response, ApiError> {
    if let Some(n) = sampling.n.filter(|&n| n != 1) {
        return Err(ApiError::invalid(
            Some("n"),
            format!("n must be 1 (one answer per request), not {n}"),
        ));
    }
    let temperature = sampling.temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            Some("temperature"),
            format!("temperature must be between 0 and 2, not {temperature}"),
        ));
    }
    let top_p = sampling.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            Some("top_p"),
            format!("top_p must be in (0, 1], not {top_p}"),
        ));
    }
    let stop = sampling.stop.map(|s| s.into_vec()).unwrap_or_default();
    if stop.len() > MAX_STOPS {
        return Err(ApiError::invalid(
            Some("stop"),
            format!("at most {MAX_STOPS} stop sequences, not {}", stop.len()),
        ));
    }
    let max_tokens = within_context(state, prompt.len(), max_tokens, shape.prompt_param())?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let prompt_tokens = prompt.len();
    let job = Job {
        prompt,
        max_tokens,
        temperature,
        top_p,
        seed: sampling.seed,
        stop,
        top_logprobs,
        ignore_eos: sampling.ignore_eos.unwrap_or(false),
        deadline: Instant::now() + state.config.request_timeout,
        events: events_tx,
    };
    state
        .scheduler
        .submit(job)
        .map_err(|_| ApiError::busy(state.config.max_queue))?;
    let header = Header {
        id: shape.id(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: state.config.served_model_name.clone(),
        fingerprint: state.fingerprint.clone(),
    };
    let started = Instant::now();
    if sampling.stream.unwrap_or(false) {
        let include_usage = sampling.stream_options.is_some_and(|o| o.include_usage);
        return Ok(stream(
            state.clone(),
            shape,
            header,
            events,
            include_usage,
            prompt_tokens,
            started,
        ));
    }
    let answer = collect(events, state.config.request_timeout.as_secs_f64()).await?;
    state
        .metrics
        .answered(prompt_tokens, started.elapsed().as_secs_f64());
    Ok(axum::Json(shape.complete(&header, answer)).into_response())
}

/// `max_tokens` within the model's context: the rest of the context when not given; an error
/// naming both lengths when the prompt, or the prompt and `max_tokens`, do not fit.
fn within_context(
    state: &AppState,
    prompt: usize,
    max_tokens: Option<u64>,
    param: &'static str,
) -> Result<usize, ApiError> {
    if max_tokens == Some(0) {
        return Err(ApiError::invalid(
            Some("max_tokens"),
            "max_tokens must be at least 1",
        ));
    }
    let context = state.context;
    let what = if param == "messages" { "messages" } else { "prompt" };
    if prompt >= context {
        return Err(ApiError::invalid_with_code(
            param,
            "context_length_exceeded",
            format!(
                "This model's maximum context length is {context} tokens. However, your {what} resulted in {prompt} \
                 tokens. Please reduce the length of the {what}."
            ),
        ));
    }
    match max_tokens {
        None => Ok(context - prompt),
        Some(wanted) => {
            let wanted = usize::try_from(wanted).unwrap_or(usize::MAX);
            if prompt.saturating_add(wanted) > context {
                return Err(ApiError::invalid_with_code(
                    "max_tokens",
                    "context_length_exceeded",
                    format!(
                        "This model's maximum context length is {context} tokens. However, you requested {} \
                         tokens ({prompt} in the {what}, {wanted} in the completion). Please reduce the length \
                         of the {what} or the completion.",
                        prompt.saturating_add(wanted)
                    ),
                ));
            }
            Ok(wanted)
        }
    }
}

/// A whole answer, gathered from its events.
#[derive(Debug, Default)]
struct Answer {
    text: String,
    logprobs: Vec<TokenLogprob>,
    asked_logprobs: bool,
    finish_reason: Option<FinishReason>,
    usage: Usage,
}

async fn collect(
    mut events: mpsc::UnboundedReceiver<Event>,
    timeout_seconds: f64,
) -> Result<Answer, ApiError> {
    let mut answer = Answer::default();
    while let Some(event) = events.recv().await {
        match event {
            Event::Token { text, logprob } => {
                answer.text.push_str(&text);
                if let Some(logprob) = logprob {
                    answer.asked_logprobs = true;
                    answer.logprobs.push(logprob);
                }
            }
            Event::Done { finish_reason, usage } => {
                answer.finish_reason = Some(finish_reason);
                answer.usage = usage;
                return Ok(answer);
            }
            Event::Failed(failure) => return Err(failure_error(failure, timeout_seconds)),
        }
    }
    Err(ApiError::shutting_down())
}

fn failure_error(failure: Failure, timeout_seconds: f64) -> ApiError {
    match failure {
        Failure::Timeout => ApiError::timeout(timeout_seconds),
        Failure::Internal(message) => ApiError::internal(message),
    }
}

/// What every chunk of an answer repeats.
#[derive(Debug, Clone)]
struct Header {
    id: String,
    created: u64,
    model: String,
    fingerprint: String,
}

/// Server-sent events: the answer's chunks as they come, then `[DONE]`. A client that goes
/// away drops the stream, which closes the job's channel: the scheduler frees its slot.
fn stream(
    state: Arc<AppState>,
    shape: Shape,
    header: Header,
    mut events: mpsc::UnboundedReceiver<Event>,
    include_usage: bool,
    prompt_tokens: usize,
    started: Instant,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<SseEvent, Infallible>>(32);
    tokio::spawn(async move {
        let send = |json: String| {
            let tx = tx.clone();
            async move { tx.send(Ok(SseEvent::default().data(json))).await.is_ok() }
        };
        if let Some(first) = shape.first_chunk(&header)
            && !send(first).await
        {
            return;
        }
        let mut offset = 0;
        while let Some(event) = events.recv().await {
            let chunk = match event {
                Event::Token { text, logprob } if text.is_empty() && logprob.is_none() => continue,
                Event::Token { text, logprob } => {
                    let chunk = shape.token_chunk(&header, &text, logprob, offset);
                    offset += text.len();
                    chunk
                }
                Event::Done { finish_reason, usage } => {
                    state
                        .metrics
                        .answered(prompt_tokens, started.elapsed().as_secs_f64());
                    if !send(shape.finish_chunk(&header, finish_reason)).await {
                        return;
                    }
                    if include_usage && !send(shape.usage_chunk(&header, usage)).await {
                        return;
                    }
                    break;
                }
                Event::Failed(failure) => {
                    let error = failure_error(failure, state.config.request_timeout.as_secs_f64());
                    let _ = send(error.body().to_string()).await;
                    break;
                }
            };
            if !send(chunk).await {
                return;
            }
        }
        let _ = send("[DONE]".to_owned()).await;
    });
    Sse::new(ReceiverStream::new(rx)).into_response()
}

/// Which endpoint's shapes.
#[derive(Debug, Clone, Copy)]
enum Shape {
    Chat,
    Text,
}

impl Shape {
    fn id(self) -> String {
        let prefix = match self {
            Shape::Chat => "chatcmpl",
            Shape::Text => "cmpl",
        };
        format!("{prefix}-{:032x}", rand::random::<u128>())
    }

    /// The field that holds the prompt, for errors.
    fn prompt_param(self) -> &'static str {
        match self {
            Shape::Chat => "messages",
            Shape::Text => "prompt",
        }
    }

    /// The whole answer as one body.
    fn complete(self, header: &Header, answer: Answer) -> serde_json::Value {
        let finish_reason = answer.finish_reason.unwrap_or(FinishReason::Stop);
        let value = match self {
            Shape::Chat => serde_json::to_value(ChatCompletion {
                id: header.id.clone(),
                object: "chat.completion",
                created: header.created,
                model: header.model.clone(),
                choices: vec![ChatChoice {
                    index: 0,
                    message: AssistantMessage {
                        role: "assistant",
                        content: answer.text,
                    },
                    logprobs: answer.asked_logprobs.then_some(ChoiceLogprobs {
                        content: answer.logprobs,
                    }),
                    finish_reason,
                }],
                usage: answer.usage,
                system_fingerprint: header.fingerprint.clone(),
            }),
            Shape::Text => serde_json::to_value(TextCompletion {
                id: header.id.clone(),
                object: "text_completion",
                created: header.created,
                model: header.model.clone(),
                choices: vec![TextChoice {
                    index: 0,
                    text: answer.text,
                    logprobs: answer.asked_logprobs.then(|| legacy(&answer.logprobs, 0)),
                    finish_reason: Some(finish_reason),
                }],
                usage: Some(answer.usage),
                system_fingerprint: header.fingerprint.clone(),
            }),
        };
        value.expect("answers serialize")
    }

    /// The chunk before any text (chat's `role`).
    fn first_chunk(self, header: &Header) -> Option<String> {
        match self {
            Shape::Chat => Some(self.chat_chunk(
                header,
                Delta {
                    role: Some("assistant"),
                    content: Some(String::new()),
                },
                None,
                None,
            )),
            Shape::Text => None,
        }
    }

    /// A chunk of new text (and its token's log-probability); `offset` is where the text starts.
    fn token_chunk(
        self,
        header: &Header,
        text: &str,
        logprob: Option<TokenLogprob>,
        offset: usize,
    ) -> String {
        match self {
            Shape::Chat => self.chat_chunk(
                header,
                Delta {
                    role: None,
                    content: Some(text.to_owned()),
                },
                logprob.map(|l| ChoiceLogprobs { content: vec![l] }),
                None,
            ),
            Shape::Text => self.text_chunk(
                header,
                vec![TextChoice {
                    index: 0,
                    text: text.to_owned(),
                    logprobs: logprob.map(|l| legacy(std::slice::from_ref(&l), offset)),
                    finish_reason: None,
                }],
                None,
            ),
        }
    }

    /// The chunk that ends the answer.
    fn finish_chunk(self, header: &Header, reason: FinishReason) -> String {
        match self {
            Shape::Chat => self.chat_chunk(header, Delta::default(), None, Some(reason)),
            Shape::Text => self.text_chunk(
                header,
                vec![TextChoice {
                    index: 0,
                    text: String::new(),
                    logprobs: None,
                    finish_reason: Some(reason),
                }],
                None,
            ),
        }
    }

    /// `stream_options.include_usage`'s last chunk: no choices, the usage.
    fn usage_chunk(self, header: &Header, usage: Usage) -> String {
        match self {
            Shape::Chat => to_json(&ChatChunk {
                id: header.id.clone(),
                object: "chat.completion.chunk",
                created: header.created,
                model: header.model.clone(),
                choices: vec![],
                usage: Some(usage),
                system_fingerprint: header.fingerprint.clone(),
            }),
            Shape::Text => self.text_chunk(header, vec![], Some(usage)),
        }
    }

    fn chat_chunk(
        self,
        header: &Header,
        delta: Delta,
        logprobs: Option<ChoiceLogprobs>,
        finish_reason: Option<FinishReason>,
    ) -> String {
        to_json(&ChatChunk {
            id: header.id.clone(),
            object: "chat.completion.chunk",
            created: header.created,
            model: header.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                logprobs,
                finish_reason,
            }],
            usage: None,
            system_fingerprint: header.fingerprint.clone(),
        })
    }

    fn text_chunk(self, header: &Header, choices: Vec<TextChoice>, usage: Option<Usage>) -> String {
        to_json(&TextCompletion {
            id: header.id.clone(),
            object: "text_completion",
            created: header.created,
            model: header.model.clone(),
            choices,
            usage,
            system_fingerprint: header.fingerprint.clone(),
        })
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).expect("chunks serialize")
}

/// The completions API's log-probabilities for `entries`, the first at byte `offset`.
fn legacy(entries: &[TokenLogprob], mut offset: usize) -> LegacyLogprobs {
    let mut out = LegacyLogprobs::default();
    for entry in entries {
        out.tokens.push(entry.token.clone());
        out.token_logprobs.push(entry.logprob);
        out.top_logprobs.push(
            entry
                .top_logprobs
                .iter()
                .map(|t| (t.token.clone(), serde_json::Value::from(f64::from(t.logprob))))
                .collect(),
        );
        out.text_offset.push(offset);
        offset += entry.token.len();
    }
    out
}
