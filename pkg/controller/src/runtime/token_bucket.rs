//! `--kube-api-qps`/`--kube-api-burst` as client-go applies them: a token bucket that
//! holds `burst` tokens, refills at `qps` per second and starts full; every request,
//! watches included, takes one token or waits for it.
//!
//! The bucket is governor's GCRA (the same schedule as a token bucket), read on tokio's
//! clock so that waiting is a tokio sleep and tests can run on a paused clock.

use std::future::Future;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tower::{Layer, Service};

/// Time since the bucket was made, on tokio's clock.
#[derive(Debug, Clone)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl Clock for TokioClock {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(self.origin.elapsed())
    }
}

type Bucket = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// The layer for a client: one bucket shared by every request of that client.
#[derive(Clone)]
pub struct TokenBucketLayer {
    bucket: Arc<Bucket>,
    clock: TokioClock,
}

impl TokenBucketLayer {
    /// A non-positive or non-finite `qps` counts as client-go's smallest useful rate (one
    /// per second), a zero `burst` as one.
    pub fn new(qps: f32, burst: u32) -> Self {
        let qps = if qps.is_finite() && qps > 0.0 {
            f64::from(qps)
        } else {
            1.0
        };
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        // One token every 1/qps; at least a nanosecond, which governor requires.
        let period = Duration::from_secs_f64(1.0 / qps).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        let clock = TokioClock {
            origin: tokio::time::Instant::now(),
        };
        TokenBucketLayer {
            bucket: Arc::new(RateLimiter::direct_with_clock(quota, clock.clone())),
            clock,
        }
    }

    /// Waits until the bucket has a token and takes it.
    async fn take(bucket: Arc<Bucket>, clock: TokioClock) {
        while let Err(not_until) = bucket.check() {
            let wait = not_until.earliest_possible().duration_since(clock.now());
            tokio::time::sleep(Duration::from(wait)).await;
        }
    }
}

impl<S> Layer<S> for TokenBucketLayer {
    type Service = TokenBucket<S>;

    fn layer(&self, inner: S) -> TokenBucket<S> {
        TokenBucket {
            inner,
            layer: self.clone(),
            waiting: None,
            holds_token: false,
        }
    }
}

/// A service that is ready only once it holds a token; `call` spends it.
pub struct TokenBucket<S> {
    inner: S,
    layer: TokenBucketLayer,
    waiting: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    holds_token: bool,
}

impl<S, Request> Service<Request> for TokenBucket<S>
where
    S: Service<Request>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        if !self.holds_token {
            let layer = &self.layer;
            let waiting = self.waiting.get_or_insert_with(|| {
                Box::pin(TokenBucketLayer::take(
                    layer.bucket.clone(),
                    layer.clock.clone(),
                ))
            });
            ready!(waiting.as_mut().poll(cx));
            self.waiting = None;
            self.holds_token = true;
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> S::Future {
        self.holds_token = false;
        self.inner.call(request)
    }
}
