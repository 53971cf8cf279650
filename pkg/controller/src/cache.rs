//! The informers: one watch per resource (Machines, MachineClasses and Secrets of
//! `--namespace`, Nodes of the target cluster), each feeding a reflector store that every
//! controller reads, and handing its events to every controller that reacts to them. MCM
//! reads the same objects from its informers' listers; reading them through the API server
//! instead spent the `--kube-api-qps` budget several times per reconcile.
//!
//! A store is updated before its event is handed on, so a reconcile triggered by an event
//! reads at least that event's state.

use std::fmt::Debug;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::channel::mpsc;
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

/// How long a read waits for its store's first listing before asking the API server.
const SYNC_PATIENCE: Duration = Duration::from_secs(30);

/// How often a read waiting for a store's first listing looks again (see [`ready`]).
const READY_POLL: Duration = Duration::from_millis(50);

/// The stores the reconciles read. `nodes` is `None` without a target cluster.
#[derive(Clone)]
pub struct Caches {
    pub machines: Store<Machine>,
    pub classes: Store<MachineClass>,
    pub secrets: Store<Secret>,
    pub nodes: Option<Store<Node>>,
}

/// A store's object, once the store has listed; `None` means "ask the API server": the
/// store did not list in time, or its watch has ended.
pub async fn cached<K>(store: &Store<K>, name: &str, namespace: Option<&str>) -> Option<Option<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    ready(store).await?;
    let mut reference = ObjectRef::new(name);
    if let Some(namespace) = namespace {
        reference = reference.within(namespace);
    }
    Some(store.get(&reference).map(|object| (*object).clone()))
}

/// All of a store's objects once it has listed (see [`cached`]).
pub async fn cached_all<K>(store: &Store<K>) -> Option<Vec<Arc<K>>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    ready(store).await?;
    Some(store.state())
}

/// Waits for the store's first listing, up to [`SYNC_PATIENCE`]. kube's readiness future
/// wakes only the last task that polled it (a oneshot channel keeps one waker), and the
/// controllers' own waits compete with these: so it is polled again every
/// [`READY_POLL`] rather than relied on to wake every waiter.
async fn ready<K>(store: &Store<K>) -> Option<()>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let started = tokio::time::Instant::now();
    while started.elapsed() < SYNC_PATIENCE {
        match tokio::time::timeout(READY_POLL, store.wait_until_ready()).await {
            Ok(Ok(())) => return Some(()),
            Ok(Err(_writer_dropped)) => return None,
            Err(_not_yet) => {}
        }
    }
    None
}

/// One watch: its store, and its events for each subscriber.
///
/// Each subscriber has a queue of its own without bound: a controller whose workers are
/// all busy stops reading its triggers for a while, and a bounded queue would then hold
/// back the watch, the store and every other subscriber with it (until the first listing
/// is stored, for ever). The queues hold what the busy controller has yet to read.
pub struct Informer<K: Resource<DynamicType = ()> + Clone + 'static> {
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    subscribers: Mutex<Vec<mpsc::UnboundedSender<watcher::Event<K>>>>,
    api: Api<K>,
    strip: fn(&mut K),
}

impl<K> Informer<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// `strip` drops what no reconcile reads, before the object is stored.
    pub fn new(api: Api<K>, strip: fn(&mut K)) -> Self {
        let (store, writer) = reflector::store();
        Informer {
            store,
            writer,
            subscribers: Mutex::new(Vec::new()),
            api,
            strip,
        }
    }

    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// The watch's events, from its start, for one consumer.
    pub fn subscribe(&self) -> impl Stream<Item = watcher::Event<K>> + Send + use<K> {
        let (sender, receiver) = mpsc::unbounded();
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(sender);
        receiver
    }

    /// The objects the watch applies (added, changed, listed): a controller's triggers.
    pub fn applied(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + use<K> {
        self.objects(false)
    }

    /// The objects the watch applies or deletes: another kind's triggers (a deleted class
    /// concerns its Secrets, a deleted Node its Machine).
    pub fn touched(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + use<K> {
        self.objects(true)
    }

    fn objects(
        &self,
        with_deleted: bool,
    ) -> impl Stream<Item = Result<K, watcher::Error>> + Send + use<K> {
        self.subscribe().filter_map(move |event| async move {
            match event {
                watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                    Some(Ok(object))
                }
                watcher::Event::Delete(object) if with_deleted => Some(Ok(object)),
                _ => None,
            }
        })
    }

    /// Runs the watch until the process ends; errors are logged and retried with backoff.
    pub async fn run(self) {
        let subscribers = self
            .subscribers
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        let kind = K::kind(&()).into_owned();
        let events = watcher(self.api, watcher::Config::default())
            .default_backoff()
            .modify(self.strip);
        reflector::reflector(self.writer, events)
            .for_each(|event| {
                match event {
                    Ok(event) => {
                        if matches!(event, watcher::Event::InitDone) {
                            info!(kind, "watch listed");
                        }
                        for subscriber in &subscribers {
                            // Fails only once the consumer is gone, when the process ends.
                            let _ = subscriber.unbounded_send(event.clone());
                        }
                    }
                    Err(error) => warn!(kind, "watch failed, retried: {error}"),
                }
                std::future::ready(())
            })
            .await;
    }
}

/// Managed fields are bookkeeping of the API server's field ownership; nothing reads them.
pub fn strip_managed_fields<K: ResourceExt>(object: &mut K) {
    object.managed_fields_mut().clear();
}

/// A Node's image list is most of its size and nothing here reads it.
pub fn strip_node(node: &mut Node) {
    strip_managed_fields(node);
    if let Some(status) = node.status.as_mut() {
        status.images = None;
    }
}

/// The four informers of the sidecar.
pub struct Informers {
    pub machines: Informer<Machine>,
    pub classes: Informer<MachineClass>,
    pub secrets: Informer<Secret>,
    pub nodes: Option<Informer<Node>>,
}

impl Informers {
    pub fn new(
        machines: Api<Machine>,
        classes: Api<MachineClass>,
        secrets: Api<Secret>,
        nodes: Option<Api<Node>>,
    ) -> Self {
        Informers {
            machines: Informer::new(machines, strip_managed_fields),
            classes: Informer::new(classes, strip_managed_fields),
            secrets: Informer::new(secrets, strip_managed_fields),
            nodes: nodes.map(|nodes| Informer::new(nodes, strip_node)),
        }
    }

    pub fn caches(&self) -> Caches {
        Caches {
            machines: self.machines.store(),
            classes: self.classes.store(),
            secrets: self.secrets.store(),
            nodes: self.nodes.as_ref().map(Informer::store),
        }
    }

    /// Runs every watch; returns only if all of them end.
    pub async fn run(self) {
        let nodes = async move {
            match self.nodes {
                Some(nodes) => nodes.run().await,
                None => std::future::pending().await,
            }
        };
        tokio::join!(
            self.machines.run(),
            self.classes.run(),
            self.secrets.run(),
            nodes
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    /// Three reconciles wait for the Secret store's first listing at once; each is answered
    /// from the store once it lists, not after [`SYNC_PATIENCE`] from the API server.
    #[tokio::test(start_paused = true)]
    async fn every_read_waiting_for_the_first_listing_is_answered_when_it_comes() {
        let (store, mut writer) = reflector::store::<Secret>();
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let started = tokio::time::Instant::now();
                    let found = cached(&store, "cloud", Some("shoot--a")).await;
                    (found, started.elapsed())
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut secret = Secret::default();
        secret.metadata.name = Some("cloud".into());
        secret.metadata.namespace = Some("shoot--a".into());
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitApply(secret));
        writer.apply_watcher_event(&Event::InitDone);
        for reader in readers {
            let (found, waited) = reader.await.expect("reader");
            let found = found.expect("answered from the store").expect("listed");
            assert_eq!(found.metadata.name.as_deref(), Some("cloud"));
            assert!(waited < Duration::from_secs(2), "{waited:?}");
        }
    }

    #[test]
    fn nodes_are_stored_without_their_images_and_managed_fields() {
        let mut node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "managedFields": [{"manager": "kubelet"}]},
            "status": {"images": [{"names": ["registry/image:1"], "sizeBytes": 1}],
                       "volumesAttached": [{"name": "v", "devicePath": ""}]},
        }))
        .expect("a node");
        strip_node(&mut node);
        assert!(node.metadata.managed_fields.is_none_or(|f| f.is_empty()));
        let status = node.status.expect("status");
        assert!(status.images.is_none());
        // The drain reads attached volumes: they stay.
        assert_eq!(status.volumes_attached.map(|v| v.len()), Some(1));
    }
}
