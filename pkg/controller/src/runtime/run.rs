//! The sidecar: clients, the HTTP endpoint, leader election, then the machine,
//! machine class and secret controllers and the safety loops, until one of them stops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Secret};
use kube::ResourceExt;
use kube::runtime::controller::{Action, Config as ControllerConfig};
use kube::runtime::{Controller, watcher};
use tracing::{debug, error, info, warn};

use mcm_provider_kubevirt::Driver;
use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::cache::{Informer, Informers};
use crate::context::Context;
use crate::error::{Outcome, ReconcileError, Requeue};
use crate::machine::reconcile_machine;
use crate::machine_class::reconcile_machine_class;
use crate::node_lifecycle::{delete_machine_of_deleted_node, release_unmanaged_nodes};
use crate::runtime::clients::{ClientError, client, configs, ensure_reachable};
use crate::runtime::driver_metrics::InstrumentedDriver;
use crate::runtime::metrics::Metrics;
use crate::runtime::options::Options;
use crate::safety::{ApiServerWatch, collect_orphans};
use crate::secrets::reconcile_secret;
use crate::triggers::{
    ClassTriggers, class_of_machine, machines_of_class, machines_of_node, secrets_of_class,
};

/// How long start-up waits for an API server before giving up (MCM polls for 10s).
const STARTUP_PATIENCE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("leader election: {0}")]
    LeaderElection(String),
    #[error("http endpoint on {address}: {source}")]
    Http {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("leader election lost")]
    LeadershipLost,
    #[error("{0} stopped")]
    Stopped(&'static str),
}

/// The controllers: metric label and the kind their log lines name.
#[derive(Clone, Copy)]
enum Reconciler {
    Machine,
    MachineClass,
    Secret,
}

impl Reconciler {
    fn label(self) -> &'static str {
        match self {
            Reconciler::Machine => "machine",
            Reconciler::MachineClass => "machineclass",
            Reconciler::Secret => "secret",
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Reconciler::Machine => "Machine",
            Reconciler::MachineClass => "MachineClass",
            Reconciler::Secret => "Secret",
        }
    }
}

/// Logs a reconcile's end and counts it by controller, outcome and error variant.
/// Secrets that are in line are not logged: every Secret of the namespace is reconciled.
fn record(
    ctx: &Context,
    reconciler: Reconciler,
    name: &str,
    result: &Result<Requeue, ReconcileError>,
) {
    let outcome = Outcome::of(result, &ctx.options);
    let kind = reconciler.kind();
    match result {
        Ok(_) if matches!(reconciler, Reconciler::Secret) => {
            debug!(kind, name, after = ?outcome.after, "{}", outcome.reason)
        }
        Ok(_) => info!(kind, name, after = ?outcome.after, "{}", outcome.reason),
        Err(error) => {
            warn!(kind, name, after = ?outcome.after, error = error.kind(), "{}", outcome.reason)
        }
    }
    ctx.metrics.reconciled(
        reconciler.label(),
        result.as_ref().err().map(ReconcileError::kind),
    );
}

/// Success requeues when the reconcile asked to.
fn requeue(requeue: Requeue) -> Action {
    Action::requeue(requeue.after)
}

/// kube-runtime's error policy: the retry MCM gives the failure.
fn error_policy<K>(_: Arc<K>, error: &ReconcileError, ctx: Arc<Context>) -> Action {
    Action::requeue(error.retry_after(&ctx.options))
}

/// Builds the clients and checks both API servers, failing with the server named.
pub async fn connect(
    options: &Options,
    driver: Arc<dyn Driver>,
    metrics: Arc<Metrics>,
) -> Result<Context, RunError> {
    let (control_config, target_config) = configs(options).await?;
    let control_url = control_config.cluster_url.to_string();
    let control = client(
        "--control-kubeconfig",
        "control",
        control_config,
        options,
        metrics.clone(),
    )?;
    ensure_reachable("control cluster", &control, &control_url, STARTUP_PATIENCE).await?;
    let target = match target_config {
        Some(config) => {
            let url = config.cluster_url.to_string();
            let target = client(
                "--target-kubeconfig",
                "target",
                config,
                options,
                metrics.clone(),
            )?;
            ensure_reachable("target cluster", &target, &url, STARTUP_PATIENCE).await?;
            Some(target)
        }
        None => None,
    };
    let driver: Arc<dyn Driver> = Arc::new(InstrumentedDriver::new(driver, metrics.clone()));
    let ctx = Context::new(control, target, driver, options.clone(), metrics);
    if let Err(error) = ctx
        .machines()
        .list(&kube::api::ListParams::default().limit(1))
        .await
    {
        return Err(ClientError::MissingResource {
            what: "control cluster",
            url: control_url,
            resource: "machines.machine.sapcloud.io/v1alpha1",
            detail: error.to_string(),
        }
        .into());
    }
    Ok(ctx)
}

/// Runs the sidecar until a controller stops or leadership is lost.
pub async fn run(options: Options, driver: Arc<dyn Driver>) -> Result<(), RunError> {
    run_with_metrics(options, driver, Arc::new(Metrics::new())).await
}

/// [`run`] with the metrics the driver reports its provider requests to (see
/// [`Metrics`]' `ApiCallObserver`), which must be the ones `/metrics` serves.
pub async fn run_with_metrics(
    options: Options,
    driver: Arc<dyn Driver>,
    metrics: Arc<Metrics>,
) -> Result<(), RunError> {
    let ctx = connect(&options, driver, metrics).await?;
    let namespace = options.clusters.namespace.clone();
    let informers = Informers::new(
        ctx.machines(),
        ctx.machine_classes(),
        ctx.secrets_in(&namespace),
        ctx.nodes(),
    );
    let caches = informers.caches();
    let ctx = Arc::new(ctx.with_caches(caches.clone()));

    let address = SocketAddr::new(options.server.address, options.server.port);
    let router = crate::runtime::http::router(ctx.clone(), Some(caches.machines.clone()));
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|source| RunError::Http { address, source })?;
    info!(%address, "serving /healthz and /metrics");
    let http = tokio::spawn(async move { axum::serve(listener, router).await });

    let leadership = if options.leader_election.leader_elect {
        Some(
            crate::runtime::leader::acquire(ctx.control.clone(), &options)
                .await
                .map_err(|e| RunError::LeaderElection(e.to_string()))?,
        )
    } else {
        None
    };
    if !options.controller.controller_start_interval.is_zero() {
        tokio::time::sleep(options.controller.controller_start_interval).await;
    }

    // Every consumer subscribes before the watches run, so none misses the first listing.
    let node_deletions = node_deletions(ctx.clone(), &informers);
    let machines = machines(&ctx, &informers);
    let classes = machine_classes(&ctx, &informers);
    let secrets = secrets(&ctx, &informers);
    let watches = informers.run();
    let orphans = orphan_collection(ctx.clone());
    let api_check = api_server_check(ctx.clone());
    let lost = async move {
        match leadership {
            Some(receiver) => crate::runtime::leader::lost(receiver).await,
            None => std::future::pending().await,
        }
    };

    info!(namespace = %namespace, "controllers started");
    tokio::select! {
        _ = machines => Err(RunError::Stopped("machine controller")),
        _ = classes => Err(RunError::Stopped("machine class controller")),
        _ = secrets => Err(RunError::Stopped("secret controller")),
        _ = watches => Err(RunError::Stopped("watches")),
        _ = orphans => Err(RunError::Stopped("orphan collection")),
        _ = node_deletions => Err(RunError::Stopped("node deletion watch")),
        _ = api_check => Err(RunError::Stopped("API server check")),
        _ = http => Err(RunError::Stopped("http endpoint")),
        _ = lost => Err(RunError::LeadershipLost),
    }
}

/// The machine controller: Machines, the Nodes named by their `node` label, and their
/// classes.
fn machines(ctx: &Arc<Context>, informers: &Informers) -> impl Future<Output = ()> + use<> {
    let namespace = ctx.namespace().to_owned();
    let store = informers.machines.store();
    let controller = Controller::for_stream(informers.machines.applied(), store.clone());
    let controller = match &informers.nodes {
        Some(nodes) => {
            let namespace = namespace.clone();
            let machines = store.clone();
            controller.watches_stream(nodes.touched(), move |node: Node| {
                machines_of_node(&machines, &node, &namespace)
            })
        }
        None => controller,
    };
    // Machines wait for their class's finalizer, and for the class itself when they were
    // applied first: a class event reconciles its machines at once (MCM enqueues them when
    // it places the finalizer) instead of after their retry period.
    let controller = controller
        .watches_stream(informers.classes.touched(), move |class: MachineClass| {
            machines_of_class(&store, &class, &namespace)
        });
    controller
        .with_config(
            ControllerConfig::default().concurrency(ctx.options.controller.concurrent_syncs),
        )
        .run(
            |machine: Arc<Machine>, ctx: Arc<Context>| async move {
                let result = reconcile_machine(&ctx, &machine).await;
                record(&ctx, Reconciler::Machine, &machine.name_any(), &result);
                result.map(requeue)
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {})
}

/// The class controller. A class gets its finalizer only once a Machine refers to it, and
/// Machines wait for that finalizer: a new or deleted Machine reconciles its class at once,
/// as MCM's machine-to-class handlers do, not at the class's next periodic look.
fn machine_classes(ctx: &Arc<Context>, informers: &Informers) -> impl Future<Output = ()> + use<> {
    let namespace = ctx.namespace().to_owned();
    let mut class_triggers = ClassTriggers::default();
    let machine_events = informers
        .machines
        .subscribe()
        .flat_map(move |event| futures::stream::iter(class_triggers.on(Ok(event))));
    Controller::for_stream(informers.classes.applied(), informers.classes.store())
        .watches_stream(machine_events, move |machine: Machine| {
            class_of_machine(&machine, &namespace)
        })
        .run(
            |class: Arc<MachineClass>, ctx: Arc<Context>| async move {
                let result = reconcile_machine_class(&ctx, &class).await;
                record(&ctx, Reconciler::MachineClass, &class.name_any(), &result);
                result.map(requeue)
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {})
}

/// The Secret controller. A Secret keeps its finalizer while classes refer to it: a class
/// change or deletion reconciles the class's Secrets at once (MCM's class-to-secret handlers).
fn secrets(ctx: &Arc<Context>, informers: &Informers) -> impl Future<Output = ()> + use<> {
    let namespace = ctx.namespace().to_owned();
    Controller::for_stream(informers.secrets.applied(), informers.secrets.store())
        .watches_stream(informers.classes.touched(), move |class: MachineClass| {
            secrets_of_class(&class, &namespace)
        })
        .run(
            |secret: Arc<Secret>, ctx: Arc<Context>| async move {
                let result = reconcile_secret(&ctx, &secret).await;
                record(&ctx, Reconciler::Secret, &secret.name_any(), &result);
                result.map(requeue)
            },
            error_policy,
            ctx.clone(),
        )
        .for_each(|_| async {})
}

/// Orphan VM collection and the release of Nodes no Machine claims, every
/// `--machine-safety-orphan-vms-period` (MCM's orphan VM safety reconcile does both).
async fn orphan_collection(ctx: Arc<Context>) {
    loop {
        if let Err(error) = collect_orphans(&ctx).await {
            error!("orphan VM collection failed: {error}");
        }
        if let Err(error) = release_unmanaged_nodes(&ctx).await {
            error!("checking nodes without a machine failed: {error}");
        }
        tokio::time::sleep(ctx.options.safety.machine_safety_orphan_vms_period).await;
    }
}

/// A Node deleted from the target cluster deletes its Machine (MCM's deleteNode handler).
/// Only watch events tell a deleted Node from one that never joined, so this follows the
/// Node watch's events rather than being a step of the machine reconcile.
fn node_deletions(ctx: Arc<Context>, informers: &Informers) -> impl Future<Output = ()> + use<> {
    let events = informers.nodes.as_ref().map(Informer::subscribe);
    let machines = informers.machines.store();
    async move {
        let Some(events) = events else {
            return std::future::pending().await;
        };
        events
            .for_each(|event| {
                let ctx = ctx.clone();
                let machines = machines.clone();
                async move {
                    let watcher::Event::Delete(node) = event else {
                        return;
                    };
                    let state = machines.state();
                    let known: Vec<&Machine> = state.iter().map(AsRef::as_ref).collect();
                    if let Err(error) = delete_machine_of_deleted_node(&ctx, &known, &node).await
                    {
                        warn!(node = %node.name_any(), "deleting the machine of a deleted node failed: {error}");
                    }
                }
            })
            .await
    }
}

/// The API server check that freezes the controller while a server is unreachable.
async fn api_server_check(ctx: Arc<Context>) {
    let mut watch = ApiServerWatch::default();
    loop {
        let next = watch.check(&ctx).await;
        tokio::time::sleep(next).await;
    }
}
