//! kube's client stack (TLS configuration, certificates, auth and impersonation headers)
//! for a provider kubeconfig, built once per kubeconfig content.
//!
//! Validation (`secret.rs`) must prove a kubeconfig buildable, and the client factory
//! (`kubevirt/kube_spi.rs`) needs the very same stack. So validation builds it here once
//! per content and leaves it for the factory, which takes it instead of building its own:
//! one TLS configuration per Secret version, not one per validation plus one per client.
//! Later validations of that content find it remembered and build nothing.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use kube::Config;
use kube::client::{Body, ClientBuilder, DynBody};
use kube::config::{Kubeconfig, KubeconfigError};
use lru::LruCache;
use sha2::{Digest, Sha256};

/// How many kubeconfigs' clients (and validations) are kept. A sidecar serves one shoot,
/// whose MachineClasses share one or a few provider Secrets; 32 leaves room for rotations
/// while what belongs to kubeconfigs no longer used is dropped.
pub(crate) const KUBECONFIGS_KEPT: NonZeroUsize = NonZeroUsize::new(32).unwrap();

/// SHA-256 of a kubeconfig's content, the key of everything kept per kubeconfig.
pub(crate) type KubeconfigDigest = [u8; 32];

/// kube's `GenericService`, which it does not export: what `ClientBuilder::try_from` makes.
type GenericService =
    tower::util::BoxService<http::Request<Body>, http::Response<Box<DynBody>>, tower::BoxError>;

/// A client short of its request buffer (which needs a runtime) and of the factory's layers.
pub(crate) type ClientStack = ClientBuilder<GenericService>;

/// SHA-256 of the kubeconfig as the client is built from it. Through `serde_json::Value`,
/// whose maps are sorted, so equal content gives equal digests where kube keeps a HashMap
/// (impersonation extras), and YAML that differs only in layout shares one. None if it
/// cannot be serialized; nothing is then kept for it.
pub(crate) fn kubeconfig_digest(kubeconfig: &Kubeconfig) -> Option<KubeconfigDigest> {
    let canonical = serde_json::to_value(kubeconfig).ok()?;
    let mut hasher = Sha256::new();
    serde_json::to_writer(&mut hasher, &canonical).ok()?;
    Some(hasher.finalize().into())
}

/// The client configuration as the SPI uses it, for validation and factory alike, so the
/// stack validation builds is the one the factory can take.
pub(crate) fn client_config(kubeconfig: &Kubeconfig) -> Result<Config, KubeconfigError> {
    let mut config = Config::try_from(kubeconfig.clone())?;
    // No retries inside the client (kube retries 429/503/504 for minutes by default):
    // the driver answers Unavailable and MCM's requeue retries, as with client-go.
    config.default_retry = false;
    Ok(config)
}

/// Kubeconfigs whose stack was built, by digest, least recently used evicted: `Some` the
/// stack while no factory has taken it yet, `None` once one has. Only successes are kept,
/// so a broken kubeconfig is tried (and named) again on every call. A stack no factory
/// takes (`render`, a CreateMachine rejected for its providerSpec) waits to be evicted.
pub(crate) struct ClientStacks {
    validated: Mutex<LruCache<KubeconfigDigest, Option<ClientStack>>>,
    /// Stacks built, failed ones included: what the cache is there to keep low.
    builds: AtomicUsize,
}

impl Default for ClientStacks {
    fn default() -> Self {
        ClientStacks {
            validated: Mutex::new(LruCache::new(KUBECONFIGS_KEPT)),
            builds: AtomicUsize::new(0),
        }
    }
}

/// Counts only: the stacks hold credentials.
impl std::fmt::Debug for ClientStacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientStacks")
            .field("validated", &self.len())
            .field("builds", &self.builds())
            .finish()
    }
}

impl ClientStacks {
    /// The process's own: validation is reached from free functions (the driver's, the fuzz
    /// targets'), so it cannot be handed one; factories use it unless a test gives them theirs.
    pub(crate) fn shared() -> Arc<ClientStacks> {
        static SHARED: LazyLock<Arc<ClientStacks>> = LazyLock::new(Arc::default);
        Arc::clone(&SHARED)
    }

    /// The lock is never held across an await or while building, so a panic cannot leave
    /// the cache half-changed: a poisoned lock is taken over as it is.
    fn locked(&self) -> MutexGuard<'_, LruCache<KubeconfigDigest, Option<ClientStack>>> {
        self.validated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds kube's stack from `config`; `Err(None)` if kube panicked doing so.
    pub(crate) fn build(&self, config: Config) -> Result<ClientStack, Option<kube::Error>> {
        self.builds.fetch_add(1, Ordering::Relaxed);
        match std::panic::catch_unwind(|| ClientBuilder::try_from(config)) {
            Ok(built) => built.map_err(Some),
            Err(_) => Err(None),
        }
    }

    /// Whether the kubeconfig of `digest` was validated (and is kept as recently used).
    pub(crate) fn validated(&self, digest: &KubeconfigDigest) -> bool {
        self.locked().get(digest).is_some()
    }

    /// Remembers a validated kubeconfig with its stack for a factory to take. Validations
    /// racing for a new kubeconfig may each have built one; the first kept stays.
    pub(crate) fn remember(&self, digest: KubeconfigDigest, stack: ClientStack) {
        self.locked().get_or_insert(digest, || Some(stack));
    }

    /// The stack validation built for `digest`, if no factory took it yet.
    pub(crate) fn take(&self, digest: &KubeconfigDigest) -> Option<ClientStack> {
        self.locked().get_mut(digest).and_then(Option::take)
    }

    /// Validated kubeconfigs kept.
    pub(crate) fn len(&self) -> usize {
        self.locked().len()
    }

    pub(crate) fn builds(&self) -> usize {
        self.builds.load(Ordering::Relaxed)
    }
}
