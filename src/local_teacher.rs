//! A model on this machine as a [`Teacher`]: the lab's offline default, and
//! `distill generate --provider local`.
//!
//! The model lives on one worker thread. Requests that arrive together (the engine keeps
//! `concurrency` of them in flight) are decoded together as one left-padded batch on the CPU
//! decoder, so the engine's guarantees (resume without duplicates, the failures file, progress)
//! hold unchanged while the model reads each weight once for the whole batch.
//!
//! Log-probabilities come from one teacher-forced forward pass over each prompt and its answer
//! alone, so the stored soft labels of an example do not depend on which other prompts shared
//! its batch: a resumed run writes the same bytes as an uninterrupted one.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use distill_data::{FinishReason, Message, Usage};
use distill_student::tch;
use distill_student::train::data::TEACHER_VOCAB_HASH_KEY;
use distill_student::{GenerationConfig, Precision, Pretrained, generate};
use distill_teacher::{Choice, Completion, GenerationParams, Teacher, TeacherId};

/// How the local teacher batches and decodes.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalTeacherOptions {
    /// The most requests decoded together.
    pub max_batch: usize,
    /// How long the worker waits for more requests to join a batch once one has arrived.
    pub gather: Duration,
    /// Weights for decoding. f32 keeps the stored log-probabilities exact.
    pub precision: Precision,
}

impl Default for LocalTeacherOptions {
    fn default() -> Self {
        LocalTeacherOptions {
            max_batch: 8,
            gather: Duration::from_millis(20),
            precision: Precision::F32,
        }
    }
}

/// A local model (GGUF file or HF directory) answering chat prompts in-process.
pub struct LocalTeacher {
    id: TeacherId,
    vocab_hash: String,
    jobs: Mutex<Option<mpsc::Sender<Job>>>,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for LocalTeacher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalTeacher")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// One request waiting for the worker.
struct Job {
    messages: Vec<Message>,
    params: GenerationParams,
    received: Instant,
    reply: tokio::sync::oneshot::Sender<Result<Completion, distill_student::Error>>,
}

impl LocalTeacher {
    /// Loads `path` (a `.gguf` file or an HF directory) on a worker thread and returns once the
    /// model is ready. `name` is the model name recorded in the dataset.
    pub fn load(path: &Path, name: &str, options: LocalTeacherOptions) -> crate::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (jobs_tx, jobs_rx) = mpsc::channel::<Job>();
        let path: PathBuf = path.to_owned();
        let worker = std::thread::Builder::new()
            .name("local-teacher".into())
            .spawn(move || {
                let mut model = match Pretrained::load(&path, tch::Device::Cpu) {
                    Ok(model) => model,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                model.prepare_for_generation(options.precision);
                let _ = ready_tx.send(Ok(model.tokenizer.vocab_hash().to_owned()));
                serve(&model, &jobs_rx, &options);
            })
            .map_err(crate::error::io("<local teacher thread>"))?;
        let vocab_hash = match ready_rx.recv() {
            Ok(result) => result?,
            Err(_) => {
                return Err(crate::Error::Input(
                    "the local teacher's worker thread ended while loading its model".into(),
                ));
            }
        };
        Ok(LocalTeacher {
            id: TeacherId {
                provider: "local".into(),
                model: name.to_owned(),
            },
            vocab_hash,
            jobs: Mutex::new(Some(jobs_tx)),
            worker: Mutex::new(Some(worker)),
        })
    }

    /// The teacher tokenizer's vocabulary hash, recorded in every example.
    pub fn vocab_hash(&self) -> &str {
        &self.vocab_hash
    }
}

impl Drop for LocalTeacher {
    fn drop(&mut self) {
        // Closing the channel ends the worker's loop; joining frees the model before we return.
        self.jobs.get_mut().map(Option::take).ok();
        if let Ok(worker) = self.worker.get_mut()
            && let Some(worker) = worker.take()
        {
            let _ = worker.join();
        }
    }
}

#[async_trait::async_trait]
impl Teacher for LocalTeacher {
    fn id(&self) -> TeacherId {
        self.id.clone()
    }

    async fn complete(
        &self,
        messages: &[Message],
        params: &GenerationParams,
    ) -> distill_teacher::Result<Completion> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let job = Job {
            messages: messages.to_vec(),
            params: params.clone(),
            received: Instant::now(),
            reply,
        };
        let sent = match self.jobs.lock() {
            Ok(jobs) => jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok()),
            Err(_) => false,
        };
        let failed = |source: Box<dyn std::error::Error + Send + Sync>| distill_teacher::Error::Local {
            model: self.id.model.clone(),
            source,
        };
        if !sent {
            return Err(failed("the model's worker thread has stopped".into()));
        }
        match answer.await {
            Ok(Ok(completion)) => Ok(completion),
            Ok(Err(e)) => Err(failed(Box::new(e))),
            Err(_) => Err(failed("the model's worker thread stopped mid-request".into())),
        }
    }

    fn example_metadata(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut metadata = serde_json::Map::new();
        metadata.insert(TEACHER_VOCAB_HASH_KEY.into(), self.vocab_hash.clone().into());
        metadata
    }
}

/// The worker's loop: gather requests into batches of equal decoding settings and answer them.
fn serve(model: &Pretrained, jobs: &mpsc::Receiver<Job>, options: &LocalTeacherOptions) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        let deadline = Instant::now() + options.gather;
        while batch.len() < options.max_batch.max(1) {
            let wait = deadline.saturating_duration_since(Instant::now());
            match jobs.recv_timeout(wait) {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        while !batch.is_empty() {
            let key = decoding_key(&batch[0].params);
            let (same, rest): (Vec<Job>, Vec<Job>) = batch
                .into_iter()
                .partition(|job| decoding_key(&job.params) == key);
            answer_batch(model, same);
            batch = rest;
        }
    }
}

/// Requests decode together only when they share these settings.
fn decoding_key(params: &GenerationParams) -> (u32, u32, i64) {
    (
        params.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        params.temperature.unwrap_or(0.0).to_bits(),
        params.seed.unwrap_or(0),
    )
}

/// What a request without `max_tokens` gets.
const DEFAULT_MAX_TOKENS: u32 = 512;

fn answer_batch(model: &Pretrained, jobs: Vec<Job>) {
    let mut prompts = Vec::with_capacity(jobs.len());
    let mut ready = Vec::with_capacity(jobs.len());
    for job in jobs {
        match prompt_ids(model, &job.messages) {
            Ok(ids) => {
                prompts.push(ids);
                ready.push(job);
            }
            Err(e) => {
                let _ = job.reply.send(Err(e));
            }
        }
    }
    if ready.is_empty() {
        return;
    }
    let params = &ready[0].params;
    let max_new_tokens = params.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS) as usize;
    let config = GenerationConfig {
        temperature: f64::from(params.temperature.unwrap_or(0.0)),
        seed: params.seed.unwrap_or(0),
        // An answer must not depend on which prompts shared its batch (resume repeats a run).
        batch_invariant: true,
        ..model.generation_config(max_new_tokens)
    };
    let answers = match generate(&model.model.model, &prompts, &config, &mut |_, _| {}) {
        Ok(answers) => answers,
        Err(e) => {
            // One bad prompt must not fail the others: answer each alone.
            if ready.len() > 1 {
                tracing::debug!("batch of {} failed ({e}); answering one by one", ready.len());
                for job in ready {
                    answer_batch(model, vec![job]);
                }
            } else if let Some(job) = ready.pop() {
                let _ = job.reply.send(Err(e));
            }
            return;
        }
    };
    for ((job, prompt), answer) in ready.into_iter().zip(prompts).zip(answers) {
        let completion = completion(model, &job, &prompt, &answer, max_new_tokens);
        let _ = job.reply.send(completion);
    }
}

fn prompt_ids(model: &Pretrained, messages: &[Message]) -> distill_student::Result<Vec<i64>> {
    model.prompt_ids(&messages.iter().map(Into::into).collect::<Vec<_>>())
}

fn completion(
    model: &Pretrained,
    job: &Job,
    prompt: &[i64],
    answer: &[i64],
    max_new_tokens: usize,
) -> distill_student::Result<Completion> {
    let ids: Vec<u32> = answer.iter().map(|&t| t as u32).collect();
    let text = model.tokenizer.decode(&ids, true)?;
    let top_k = usize::from(job.params.top_logprobs);
    let logprobs = if top_k > 0 && !answer.is_empty() {
        Some(model.score(prompt, answer, top_k)?)
    } else {
        None
    };
    let finish_reason = if answer.len() < max_new_tokens {
        FinishReason::Stop
    } else {
        FinishReason::Length
    };
    Ok(Completion {
        choices: vec![Choice {
            text,
            finish_reason: Some(finish_reason),
            logprobs,
            content_filter_results: None,
        }],
        usage: Some(Usage {
            prompt_tokens: prompt.len() as u64,
            completion_tokens: answer.len() as u64,
        }),
        latency: job.received.elapsed(),
        model: String::new(),
        created: None,
        prompt_filter_results: None,
    })
}
