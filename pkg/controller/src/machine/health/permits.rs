//! One replacement at a time per MachineDeployment: the permit MCM's permitGiver hands
//! out (one per deployment) before it counts the deployment's replacements and fails a
//! machine, so two workers cannot both see "none in progress" and fail two machines.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::OwnedMutexGuard;

/// How long a reconcile waits for the permit before retrying (MCM's lockAcquireTimeout).
pub const PERMIT_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct ReplacementPermits {
    // One entry per MachineDeployment name, as MCM keeps them; deployments are few.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl ReplacementPermits {
    /// The deployment's permit, held until the guard drops; `None` after `timeout`.
    pub async fn acquire(
        &self,
        deployment: &str,
        timeout: Duration,
    ) -> Option<OwnedMutexGuard<()>> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            locks.entry(deployment.to_owned()).or_default().clone()
        };
        tokio::time::timeout(timeout, lock.lock_owned()).await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_permit_makes_the_next_wait_and_time_out_per_deployment() {
        let permits = ReplacementPermits::default();
        let held = permits.acquire("pool-a", PERMIT_TIMEOUT).await;
        assert!(held.is_some());
        assert!(
            permits
                .acquire("pool-a", Duration::from_millis(20))
                .await
                .is_none()
        );
        assert!(
            permits
                .acquire("pool-b", Duration::from_millis(20))
                .await
                .is_some()
        );
        drop(held);
        assert!(
            permits
                .acquire("pool-a", Duration::from_millis(20))
                .await
                .is_some()
        );
    }
}
