//! Leader election on the Lease `machine-controller` in `--namespace`, as MCM does it:
//! only the holder reconciles, and losing the lease ends the process (a fresh start
//! re-syncs from the API rather than racing a new leader).

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::info;

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
    let (mut leading, _task) = manager.watch().await;
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
    use std::time::Duration;

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
