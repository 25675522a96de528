//! The retry policy: exponential backoff with full jitter, overridden by the server's own
//! wait hints (`retry-after-ms`, `Retry-After`, `x-ratelimit-reset-*`).
//!
//! async-openai's built-in retry honours only an integer `Retry-After`, so this crate sends
//! requests itself and this policy is the only one in force. The generation engine and batch
//! mode both make their attempts through [`RetryPolicy::attempt`], so that they retry alike.

use std::future::Future;
use std::time::Duration;

use rand::Rng;
use reqwest::header::HeaderMap;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorClass, Result};

/// How often and how long to retry transient failures.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per prompt, including the first (at least 1).
    pub max_attempts: u32,
    /// The backoff ceiling before the first retry; it doubles each retry.
    pub initial_backoff: Duration,
    /// The largest backoff ceiling.
    pub max_backoff: Duration,
    /// The longest server-requested wait that is honoured as given; longer hints are clamped
    /// to this, so a bogus header cannot stall a run for hours.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry).
    ///
    /// With a server hint, waits the hint plus up to 10% jitter (so that concurrent requests
    /// that got the same hint do not return in lockstep). Without one, waits a uniformly random
    /// time in `[0, min(max_backoff, initial_backoff * 2^(retry-1))]` ("full jitter").
    pub fn delay(&self, retry: u32, hint: Option<Duration>, rng: &mut impl Rng) -> Duration {
        if let Some(hint) = hint {
            let hint = hint.min(self.max_retry_after);
            let jitter = rng.random_range(0.0..=0.1) * hint.as_secs_f64();
            return hint + Duration::from_secs_f64(jitter);
        }
        let exp = retry.saturating_sub(1).min(30);
        let ceiling = self
            .initial_backoff
            .saturating_mul(1u32 << exp)
            .min(self.max_backoff);
        Duration::from_secs_f64(rng.random_range(0.0..=1.0) * ceiling.as_secs_f64())
    }
}

/// How a series of attempts ended.
#[derive(Debug)]
pub(crate) enum Attempts<T> {
    /// An attempt succeeded.
    Done(T),
    /// The last attempt failed with an error that a retry cannot help, or it was the last one
    /// allowed.
    Failed {
        /// The last error.
        error: Error,
        /// Attempts made.
        attempts: u32,
    },
    /// Cancelled before an attempt was made, or while waiting to retry.
    Cancelled,
}

/// A retry about to be waited for, as reported to the caller.
#[derive(Debug)]
pub(crate) struct Retry<'a> {
    /// The attempt that failed (1 for the first).
    pub(crate) attempt: u32,
    /// The wait before the next attempt.
    pub(crate) delay: Duration,
    /// Why it failed.
    pub(crate) error: &'a Error,
}

impl RetryPolicy {
    /// Calls `attempt` until it succeeds, fails with an error that is not
    /// [transient](ErrorClass::Transient), `max_attempts` are spent, or `cancel` fires (no
    /// retry starts after that). `attempt` returns `None` when it saw the cancellation before
    /// it could send anything. `on_retry` hears of each retry before its wait.
    pub(crate) async fn attempt<T, F, Fut>(
        &self,
        cancel: &CancellationToken,
        mut attempt: F,
        mut on_retry: impl FnMut(Retry<'_>),
    ) -> Attempts<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<Result<T>>>,
    {
        let mut made = 0u32;
        loop {
            made += 1;
            let error = match attempt().await {
                None => return Attempts::Cancelled,
                Some(Ok(value)) => return Attempts::Done(value),
                Some(Err(e)) => e,
            };
            let hint = match error.class() {
                ErrorClass::Transient { retry_after } if made < self.max_attempts => retry_after,
                _ => {
                    return Attempts::Failed {
                        error,
                        attempts: made,
                    };
                }
            };
            if cancel.is_cancelled() {
                return Attempts::Cancelled;
            }
            let delay = self.delay(made, hint, &mut rand::rng());
            on_retry(Retry {
                attempt: made,
                delay,
                error: &error,
            });
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return Attempts::Cancelled,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// `request`'s result, or [`Error::Timeout`] when it takes longer than `limit`.
pub(crate) async fn within<T>(limit: Duration, request: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(limit, request)
        .await
        .unwrap_or(Err(Error::Timeout(limit)))
}

/// The server's requested wait, from the response headers.
///
/// Precedence: `retry-after-ms` (Azure OpenAI, milliseconds), then `Retry-After` (seconds or
/// an HTTP date), then the `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` pair
/// (OpenAI's durations like `1s`, `6m0s`, `20ms`): of those, the ones whose matching
/// `x-ratelimit-remaining-*` is 0 if any are, else the larger of the two.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    if let Some(ms) = text("retry-after-ms").and_then(|v| v.parse::<f64>().ok())
        && ms.is_finite()
        && ms >= 0.0
    {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<f64>()
            && secs.is_finite()
            && secs >= 0.0
        {
            return Some(Duration::from_secs_f64(secs));
        }
        if let Some(wait) = http_date_from_now(v) {
            return Some(wait);
        }
    }
    let exhausted = |dim: &str| text(&format!("x-ratelimit-remaining-{dim}")) == Some("0");
    let reset = |dim: &str| text(&format!("x-ratelimit-reset-{dim}")).and_then(parse_go_duration);
    let (requests, tokens) = (reset("requests"), reset("tokens"));
    let chosen: Vec<Duration> = match (exhausted("requests"), exhausted("tokens")) {
        (false, false) => [requests, tokens].into_iter().flatten().collect(),
        (r, t) => [requests.filter(|_| r), tokens.filter(|_| t)]
            .into_iter()
            .flatten()
            .collect(),
    };
    chosen.into_iter().max()
}

/// Parses Go-style durations as OpenAI sends them: `1s`, `6m0s`, `1h2m3.5s`, `20ms`, `0.5s`.
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let value: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    (total.is_finite() && total >= 0.0).then(|| Duration::from_secs_f64(total))
}

/// Seconds from now until an IMF-fixdate such as `Wed, 21 Oct 2015 07:28:00 GMT`; zero if it
/// is in the past.
fn http_date_from_now(v: &str) -> Option<Duration> {
    let at = parse_imf_fixdate(v)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs() as i64;
    Some(Duration::from_secs((at - now).max(0) as u64))
}

fn parse_imf_fixdate(v: &str) -> Option<i64> {
    // "Wed, 21 Oct 2015 07:28:00 GMT"
    let mut parts = v.split_whitespace();
    let _weekday = parts.next()?;
    let day: i64 = parts.next()?.parse().ok()?;
    let month = match parts.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use reqwest::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_go_duration("6m0s"), Some(Duration::from_secs(360)));
        assert_eq!(parse_go_duration("20ms"), Some(Duration::from_millis(20)));
        assert_eq!(
            parse_go_duration("1h2m3.5s"),
            Some(Duration::from_secs_f64(3723.5))
        );
        assert_eq!(parse_go_duration("0.5s"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration(""), None);
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("s"), None);
        assert_eq!(parse_go_duration("3parsecs"), None);
    }

    #[test]
    fn header_precedence() {
        let h = headers(&[("retry-after-ms", "1500"), ("retry-after", "9")]);
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
        let h = headers(&[("retry-after", "2")]);
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let h = headers(&[("retry-after", "garbage")]);
        assert_eq!(retry_after(&h), None);
        let h = headers(&[("retry-after-ms", "-5"), ("retry-after", "3")]);
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn ratelimit_reset_picks_the_exhausted_dimension() {
        let h = headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-remaining-tokens", "5000"),
            ("x-ratelimit-reset-tokens", "1m"),
        ]);
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        let h = headers(&[
            ("x-ratelimit-reset-requests", "2s"),
            ("x-ratelimit-reset-tokens", "250ms"),
        ]);
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
    }

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_imf_fixdate("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1_445_412_480)
        );
        assert_eq!(parse_imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_imf_fixdate("Wed, 21 Foo 2015 07:28:00 GMT"), None);
        let h = headers(&[("retry-after", "Thu, 01 Jan 1970 00:00:00 GMT")]);
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_up_to_the_cap_with_the_hint() {
        let mut delays = Vec::new();
        let ended = policy()
            .attempt(
                &CancellationToken::new(),
                || async { Some(Err::<(), _>(Error::Timeout(Duration::from_secs(1)))) },
                |r| delays.push((r.attempt, r.delay)),
            )
            .await;
        assert!(matches!(ended, Attempts::Failed { attempts: 3, .. }), "{ended:?}");
        assert_eq!(delays.iter().map(|d| d.0).collect::<Vec<_>>(), [1, 2]);
        let mut n = 0;
        let ended = policy()
            .attempt(
                &CancellationToken::new(),
                || {
                    n += 1;
                    let answer = if n < 3 {
                        Err(Error::Timeout(Duration::ZERO))
                    } else {
                        Ok(n)
                    };
                    async move { Some(answer) }
                },
                |_| {},
            )
            .await;
        assert!(matches!(ended, Attempts::Done(3)), "{ended:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn permanent_errors_and_cancellation_stop_at_once() {
        let mut calls = 0;
        let ended = policy()
            .attempt(
                &CancellationToken::new(),
                || {
                    calls += 1;
                    async { Some(Err::<(), _>(Error::Options("bad".into()))) }
                },
                |_| panic!("a permanent error is not retried"),
            )
            .await;
        assert!(matches!(ended, Attempts::Failed { attempts: 1, .. }));
        assert_eq!(calls, 1);
        let cancel = CancellationToken::new();
        cancel.cancel();
        let ended = policy()
            .attempt(
                &cancel,
                || async { Some(Err::<(), _>(Error::Timeout(Duration::ZERO))) },
                |_| panic!("no retry starts after cancellation"),
            )
            .await;
        assert!(matches!(ended, Attempts::Cancelled));
        let ended = policy()
            .attempt(&cancel, || async { None::<Result<()>> }, |_| {})
            .await;
        assert!(matches!(ended, Attempts::Cancelled));
    }

    #[test]
    fn backoff_is_bounded_and_grows() {
        let p = RetryPolicy::default();
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for retry in 1..40 {
            let ceiling = p
                .initial_backoff
                .saturating_mul(1 << (retry - 1).min(30))
                .min(p.max_backoff);
            let d = p.delay(retry, None, &mut rng);
            assert!(d <= ceiling, "retry {retry}: {d:?} > {ceiling:?}");
        }
        // Honoured hints are at least the hint and at most 10% over; huge hints are clamped.
        let d = p.delay(1, Some(Duration::from_secs(3)), &mut rng);
        assert!(d >= Duration::from_secs(3) && d <= Duration::from_secs_f64(3.3));
        let d = p.delay(1, Some(Duration::from_secs(100_000)), &mut rng);
        assert!(d <= p.max_retry_after.mul_f64(1.1));
    }
}
