//! Leader election on the Lease `machine-controller` in `--namespace`, as MCM does it:
//! only the holder reconciles, and losing the lease ends the process (a fresh start
//! re-syncs from the API rather than racing a new leader).

use std::time::Duration;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::runtime::options::Options;

pub const LEASE_NAME: &str = "machine-controller";

/// Lease duration and renewal grace in whole seconds, as the lease manager wants them:
/// the lease is renewed `grace` seconds before it expires (MCM: duration - renew deadline).
pub fn lease_timing(options: &Options) -> (u64, u64) {
    let duration = options
        .leader_election
        .leader_elect_lease_duration
        .as_secs()
        .max(2);
    let renew = options
        .leader_election
        .leader_elect_renew_deadline
        .as_secs();
    let grace = duration.saturating_sub(renew).clamp(1, duration - 1);
    (duration, grace)
}

fn identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "machine-controller".to_owned());
    format!("{host}_{:08x}", rand::random::<u32>())
}

/// One step of keeping the lease: whether this process holds it after the step.
/// [`kube_lease_manager::LeaseManager`] in production, a script in tests.
#[async_trait::async_trait]
pub trait LeaseLock: Send + Sync + 'static {
    async fn changed(&self) -> Result<bool, String>;
}

#[async_trait::async_trait]
impl LeaseLock for kube_lease_manager::LeaseManager {
    async fn changed(&self) -> Result<bool, String> {
        kube_lease_manager::LeaseManager::changed(self)
            .await
            .map_err(|error| error.to_string())
    }
}

/// Keeps the lease as client-go's leader election does: a failed request is retried every
/// `retry` (`--leader-elect-retry-period`), and a leader that cannot renew for `deadline`
/// (`--leader-elect-renew-deadline`) reports the loss. The lease manager alone would
/// give up leadership at the first failed request. Ends when the receiver is gone or
/// leadership is lost.
pub async fn keep_lease(
    lock: impl LeaseLock,
    leading: watch::Sender<bool>,
    retry: Duration,
    deadline: Duration,
) {
    let mut failing_since: Option<Instant> = None;
    loop {
        match lock.changed().await {
            Ok(holds) => {
                failing_since = None;
                let was_leading = leading.send_replace(holds);
                if was_leading && !holds {
                    return;
                }
            }
            Err(error) => {
                let since = *failing_since.get_or_insert_with(Instant::now);
                if *leading.borrow() && since.elapsed() >= deadline {
                    warn!("lease not renewed within {deadline:?}: {error}");
                    leading.send_replace(false);
                    return;
                }
                warn!("lease request failed, retrying in {retry:?}: {error}");
                tokio::time::sleep(retry).await;
            }
        }
        if leading.is_closed() {
            return;
        }
    }
}

/// Waits until this process holds the lease; the receiver then reports losing it.
pub async fn acquire(
    client: Client,
    options: &Options,
) -> Result<watch::Receiver<bool>, kube_lease_manager::LeaseManagerError> {
    let (duration, grace) = lease_timing(options);
    let identity = identity();
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(options.clusters.namespace.clone())
        .with_identity(identity.clone())
        .with_duration(duration)
        .with_grace(grace)
        .build()
        .await?;
    let (sender, mut leading) = watch::channel(false);
    let election = &options.leader_election;
    tokio::spawn(keep_lease(
        manager,
        sender,
        election.leader_elect_retry_period,
        election.leader_elect_renew_deadline,
    ));
    info!(%identity, lease = LEASE_NAME, namespace = %options.clusters.namespace, "waiting for leadership");
    while !*leading.borrow_and_update() {
        if leading.changed().await.is_err() {
            break;
        }
    }
    info!(%identity, "leadership acquired");
    Ok(leading)
}

/// Resolves when leadership is lost.
pub async fn lost(mut leading: watch::Receiver<bool>) {
    loop {
        if !*leading.borrow_and_update() {
            return;
        }
        if leading.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Answers from a script; each answer takes `step` of (paused) time, as a renewal does.
    struct Script {
        answers: Mutex<VecDeque<Result<bool, String>>>,
        step: Duration,
    }

    #[async_trait::async_trait]
    impl LeaseLock for Script {
        async fn changed(&self) -> Result<bool, String> {
            tokio::time::sleep(self.step).await;
            let next = self.answers.lock().unwrap().pop_front();
            // An exhausted script holds still, as a lease nobody contends.
            match next {
                Some(answer) => answer,
                None => std::future::pending().await,
            }
        }
    }

    fn script(answers: Vec<Result<bool, String>>) -> Script {
        Script {
            answers: Mutex::new(answers.into()),
            step: Duration::from_secs(1),
        }
    }

    const RETRY: Duration = Duration::from_secs(2);
    const DEADLINE: Duration = Duration::from_secs(10);

    #[tokio::test(start_paused = true)]
    async fn a_failed_renewal_is_retried_within_the_renew_deadline() {
        let failure = || Err("connection refused".to_owned());
        // Acquired, then three failures (about 9 s), then renewed: still the leader.
        let lock = script(vec![Ok(true), failure(), failure(), failure(), Ok(true)]);
        let (sender, receiver) = watch::channel(false);
        let task = tokio::spawn(keep_lease(lock, sender, RETRY, DEADLINE));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(*receiver.borrow());
        assert!(!task.is_finished());
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_that_cannot_renew_for_the_deadline_loses_the_lease() {
        let mut answers = vec![Ok(true)];
        answers.extend((0..10).map(|_| Err("timeout".to_owned())));
        let (sender, mut receiver) = watch::channel(false);
        let started = Instant::now();
        let task = tokio::spawn(keep_lease(script(answers), sender, RETRY, DEADLINE));
        receiver.wait_for(|leading| *leading).await.unwrap();
        let _ = receiver.wait_for(|leading| !*leading).await;
        task.await.unwrap();
        // First failure at 2 s, then one every 3 s (retry + request): the deadline is
        // passed on the fifth failure, 14 s after the start.
        assert_eq!(started.elapsed(), Duration::from_secs(14));
    }

    #[tokio::test(start_paused = true)]
    async fn a_candidate_keeps_retrying_and_losing_the_lease_ends_the_loop() {
        let mut answers: Vec<Result<bool, String>> =
            (0..20).map(|_| Err("forbidden".to_owned())).collect();
        answers.extend([Ok(true), Ok(false)]);
        let (sender, receiver) = watch::channel(false);
        keep_lease(script(answers), sender, RETRY, DEADLINE).await;
        assert!(!*receiver.borrow());
    }

    #[test]
    fn lease_timing_follows_flags_and_never_panics_the_manager() {
        let options = Options::default();
        assert_eq!(lease_timing(&options), (15, 5));
        let mut options = Options::default();
        options.leader_election.leader_elect_renew_deadline =
            options.leader_election.leader_elect_lease_duration;
        assert_eq!(lease_timing(&options), (15, 1));
        options.leader_election.leader_elect_lease_duration = Duration::from_millis(500);
        let (duration, grace) = lease_timing(&options);
        assert!(grace > 0 && grace < duration);
    }
}
