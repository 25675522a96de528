//! A client-side limiter on requests per minute and tokens per minute.
//!
//! Two token buckets refill continuously at `limit / 60` per second. Each bucket holds at
//! most [`RateLimits::burst`] of a minute's allowance, so a fresh run does not fire a whole
//! minute's quota in its first second (providers enforce limits over short windows too).
//! A request that needs more tokens than a bucket can hold waits for a full bucket and then
//! takes the bucket into debt, so an oversized request delays later ones but never deadlocks.
//!
//! Token needs are estimates made before the request (prompt characters / 4 plus the
//! completion budget, as OpenAI itself counts `max_tokens` against the limit); [`Permit::settle`]
//! corrects the bucket with the billed usage afterwards.

use std::sync::Arc;
use std::time::Duration;

use std::sync::Mutex;
use tokio::time::Instant;

/// Per-minute limits; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimits {
    /// Requests per minute.
    pub requests_per_minute: Option<u32>,
    /// Tokens (prompt plus completion) per minute.
    pub tokens_per_minute: Option<u32>,
    /// The largest burst, as a fraction of a minute's allowance (0 < burst <= 1).
    pub burst: f64,
}

impl Default for RateLimits {
    fn default() -> Self {
        RateLimits {
            requests_per_minute: None,
            tokens_per_minute: None,
            burst: 0.1,
        }
    }
}

#[derive(Debug)]
struct Bucket {
    rate_per_sec: f64,
    capacity: f64,
    level: f64,
}

impl Bucket {
    fn new(per_minute: u32, burst: f64) -> Self {
        let capacity = (f64::from(per_minute) * burst).max(1.0);
        Bucket {
            rate_per_sec: f64::from(per_minute) / 60.0,
            capacity,
            level: capacity,
        }
    }

    fn refill(&mut self, elapsed: Duration) {
        self.level = (self.level + self.rate_per_sec * elapsed.as_secs_f64()).min(self.capacity);
    }

    /// How long until `need` (clamped to capacity) is available.
    fn wait_for(&self, need: f64) -> Duration {
        let need = need.min(self.capacity);
        if self.level >= need {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((need - self.level) / self.rate_per_sec)
        }
    }
}

#[derive(Debug)]
struct State {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    last: Instant,
}

/// Shared limiter; clone it freely.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    /// Waiters hold this (a fair, FIFO mutex) while they wait, so admission is first come,
    /// first served.
    queue: Arc<tokio::sync::Mutex<()>>,
    /// The buckets, locked only briefly, so settlements land while someone waits.
    state: Arc<Mutex<State>>,
}

/// Proof that a request was admitted, with the token estimate it was charged.
#[derive(Debug)]
#[must_use = "settle the permit with the billed usage"]
pub struct Permit {
    limiter: RateLimiter,
    estimated_tokens: u64,
}

impl RateLimiter {
    /// A limiter enforcing `limits`.
    pub fn new(limits: RateLimits) -> Self {
        let burst = if limits.burst.is_finite() && limits.burst > 0.0 {
            limits.burst.min(1.0)
        } else {
            0.1
        };
        let state = State {
            requests: limits
                .requests_per_minute
                .filter(|&n| n > 0)
                .map(|n| Bucket::new(n, burst)),
            tokens: limits
                .tokens_per_minute
                .filter(|&n| n > 0)
                .map(|n| Bucket::new(n, burst)),
            last: Instant::now(),
        };
        RateLimiter {
            queue: Arc::new(tokio::sync::Mutex::new(())),
            state: Arc::new(Mutex::new(state)),
        }
    }

    /// Waits until one request using about `estimated_tokens` fits both limits, then charges it.
    ///
    /// Callers queue on a fair mutex, so admission is first come, first served.
    pub async fn acquire(&self, estimated_tokens: u64) -> Permit {
        let _turn = self.queue.lock().await;
        loop {
            let wait = self.try_take(estimated_tokens);
            if wait.is_zero() {
                return Permit {
                    limiter: self.clone(),
                    estimated_tokens,
                };
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes one request's worth if it fits now; otherwise returns how long to wait.
    fn try_take(&self, estimated_tokens: u64) -> Duration {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let state = &mut *guard;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(state.last);
        state.last = now;
        for b in [&mut state.requests, &mut state.tokens].into_iter().flatten() {
            b.refill(elapsed);
        }
        let wait = [
            state.requests.as_ref().map(|b| b.wait_for(1.0)),
            state.tokens.as_ref().map(|b| b.wait_for(estimated_tokens as f64)),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(Duration::ZERO);
        if wait.is_zero() {
            if let Some(b) = &mut state.requests {
                b.level -= 1.0;
            }
            if let Some(b) = &mut state.tokens {
                b.level -= estimated_tokens as f64;
            }
        }
        wait
    }

    fn adjust_tokens(&self, delta: f64) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = &mut state.tokens {
            b.level = (b.level + delta).min(b.capacity);
        }
    }
}

impl Permit {
    /// Replaces the estimate with the billed token count (`None`: keep the estimate).
    pub fn settle(self, billed_tokens: Option<u64>) {
        if let Some(billed) = billed_tokens {
            let delta = self.estimated_tokens as f64 - billed as f64;
            if delta != 0.0 {
                self.limiter.adjust_tokens(delta);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn requests_per_minute_is_enforced() {
        let limiter = RateLimiter::new(RateLimits {
            requests_per_minute: Some(600),
            burst: 0.01,
            ..Default::default()
        });
        // 600/min = 10/s with a burst of 6 requests.
        let start = Instant::now();
        for _ in 0..66 {
            limiter.acquire(0).await.settle(None);
        }
        let took = start.elapsed();
        // 6 immediately, then 60 more at 10/s.
        assert!(
            took >= Duration::from_millis(5_990) && took <= Duration::from_millis(6_100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_per_minute_with_settlement() {
        let limiter = RateLimiter::new(RateLimits {
            tokens_per_minute: Some(60_000),
            burst: 0.1,
            ..Default::default()
        });
        // Capacity 6,000 tokens, refill 1,000/s.
        let start = Instant::now();
        limiter.acquire(6_000).await.settle(Some(1_000)); // 5,000 refunded
        limiter.acquire(5_000).await.settle(None);
        assert!(start.elapsed() < Duration::from_millis(10));
        limiter.acquire(2_000).await.settle(None);
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(1_990) && took <= Duration::from_millis(2_100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn oversized_request_does_not_deadlock() {
        let limiter = RateLimiter::new(RateLimits {
            tokens_per_minute: Some(600),
            ..Default::default()
        });
        // Capacity 60; a 1,000-token request goes through when the bucket is full.
        limiter.acquire(1_000).await.settle(None);
        let start = Instant::now();
        limiter.acquire(10).await.settle(None);
        // Debt of 940 tokens plus 10 more at 10 tokens/s.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_secs(94) && took <= Duration::from_secs(96),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limiter = RateLimiter::new(RateLimits::default());
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire(1_000_000).await.settle(Some(5));
        }
        // Paused time only moves when something sleeps: any wait would show here.
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
