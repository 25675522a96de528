//! Generation throughput against concurrency, and the client's own overhead per request.
//!
//! - `engine_200ms/concurrency/C`: the engine writing `8·C` examples against a local server
//!   that answers every request after a fixed 200 ms. The ideal is `C / 0.2 s` examples/s.
//! - `overhead_0ms/*`: the same code paths against a server that answers at once, so the
//!   time is the client's (plus a loopback round trip to an in-process axum server):
//!   one `Teacher::complete` call, and one engine example with and without an fsync per record.
//!   `teacher_complete_200ms` minus `tokio_sleep_200ms` is the same overhead read against the
//!   200 ms server.
//!
//! Run: `cargo bench -p distill-teacher --bench throughput`. Figures: docs/benchmarks.md.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Call, FaultServer, Reply, prompts};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use distill_data::{Message, SyncPolicy};
use distill_teacher::{
    CancellationToken, Engine, GenerateOptions, GenerationParams, OpenAiSettings, OpenAiTeacher, StopReason,
    Teacher,
};

fn teacher_for(server: &FaultServer) -> Arc<dyn Teacher> {
    let settings = OpenAiSettings {
        base_url: server.base_url(),
        api_key: None,
        organization: None,
        project: None,
    };
    Arc::new(OpenAiTeacher::new(&settings, "bench-model").expect("a teacher"))
}

/// Runs the engine for `n` examples into a fresh file; returns the wall time.
fn run_engine(
    rt: &tokio::runtime::Runtime,
    teacher: &Arc<dyn Teacher>,
    n: usize,
    concurrency: usize,
    sync: SyncPolicy,
) -> Duration {
    let dir = tempfile::tempdir().expect("a temp dir");
    let mut options = GenerateOptions::new(n, dir.path().join("bench.jsonl"));
    options.concurrency = concurrency;
    options.sync = sync;
    let engine = Engine::new(teacher.clone(), options);
    let ps = prompts(n);
    let started = Instant::now();
    let summary = rt
        .block_on(engine.run(ps, CancellationToken::new()))
        .expect("the run succeeds");
    let took = started.elapsed();
    assert_eq!(summary.stop, StopReason::Completed);
    took
}

fn concurrency(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let server = rt.block_on(FaultServer::start_with(
        Duration::from_millis(200),
        false,
        |_: &Call| Reply::Ok,
    ));
    let teacher = teacher_for(&server);
    let mut group = c.benchmark_group("engine_200ms");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(18));
    for conc in [1usize, 2, 4, 8, 16, 32] {
        let n = 8 * conc;
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("concurrency", conc), &conc, |b, &conc| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| run_engine(&rt, &teacher, n, conc, SyncPolicy::EveryRecord))
                    .sum()
            });
        });
    }
    group.finish();
}

fn overhead(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let server = rt.block_on(FaultServer::start_with(Duration::ZERO, false, |_: &Call| {
        Reply::Ok
    }));
    let teacher = teacher_for(&server);
    let mut group = c.benchmark_group("overhead_0ms");
    group.sample_size(30).measurement_time(Duration::from_secs(5));

    let messages = [Message::system("Be brief."), Message::user("question number 1")];
    let params = GenerationParams::default();
    group.throughput(Throughput::Elements(1));
    group.bench_function("teacher_complete", |b| {
        b.iter(|| {
            rt.block_on(teacher.complete(&messages, &params))
                .expect("a completion")
        });
    });

    // Against the 200 ms server: one request, and the timer alone, to read "time − 200 ms"
    // without the loaded machine's timer slack.
    let slow = rt.block_on(FaultServer::start_with(
        Duration::from_millis(200),
        false,
        |_: &Call| Reply::Ok,
    ));
    let slow_teacher = teacher_for(&slow);
    group.bench_function("teacher_complete_200ms", |b| {
        b.iter(|| {
            rt.block_on(slow_teacher.complete(&messages, &params))
                .expect("a completion")
        });
    });
    group.bench_function("tokio_sleep_200ms", |b| {
        b.iter(|| rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await }));
    });

    let n = 64;
    group.throughput(Throughput::Elements(n as u64));
    for (name, sync) in [
        ("engine_example_no_fsync", SyncPolicy::OnClose),
        ("engine_example_fsync", SyncPolicy::EveryRecord),
    ] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_engine(&rt, &teacher, n, 1, sync)).sum());
        });
    }
    group.finish();
}

criterion_group!(benches, concurrency, overhead);
criterion_main!(benches);
