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
use tracing::warn;

use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

/// How long a read waits for its store's first listing before asking the API server.
const SYNC_PATIENCE: Duration = Duration::from_secs(30);

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

async fn ready<K>(store: &Store<K>) -> Option<()>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    match tokio::time::timeout(SYNC_PATIENCE, store.wait_until_ready()).await {
        Ok(Ok(())) => Some(()),
        _ => None,
    }
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
        self.subscribe().filter_map(|event| async move {
            match event {
                watcher::Event::Apply(object) | watcher::Event::InitApply(object) => {
                    Some(Ok(object))
                }
                _ => None,
            }
        })
    }

    /// The objects the watch applies or deletes: another kind's triggers (a deleted class
    /// concerns its Secrets, a deleted Node its Machine).
    pub fn touched(&self) -> impl Stream<Item = Result<K, watcher::Error>> + Send + use<K> {
        self.subscribe().filter_map(|event| async move {
            match event {
                watcher::Event::Apply(object)
                | watcher::Event::InitApply(object)
                | watcher::Event::Delete(object) => Some(Ok(object)),
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
