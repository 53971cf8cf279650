//! With the informers' stores, the machine reconcile reads its class, the class's Secret
//! and the Node from them, as MCM reads its listers: the API server sees only the writes
//! (and the drain's Pod lists). Stands for the sidecar on a real API server, where every
//! such read spent the `--kube-api-qps` budget; the stores are filled here as the watches
//! would fill them.

mod support;

use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher::Event;
use serde::de::DeserializeOwned;
use serde_json::json;

use mcm_machine_controller::cache::Caches;
use support::*;

/// A store listing what the API server holds under `path`, as a watch's first listing.
fn listed<K>(world: &World, path: &str) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + 'static,
{
    let (store, mut writer) = reflector::store::<K>();
    writer.apply_watcher_event(&Event::Init);
    for name in world.server.names(path) {
        let object = world.server.get(path, &name).expect("listed");
        let object: K = serde_json::from_value(object).expect("an object");
        writer.apply_watcher_event(&Event::InitApply(object));
    }
    writer.apply_watcher_event(&Event::InitDone);
    store
}

fn with_caches(world: World) -> World {
    let caches = Caches {
        machines: listed(&world, MACHINES),
        classes: listed(&world, CLASSES),
        secrets: listed(&world, SECRETS),
        nodes: Some(listed(&world, NODES)),
    };
    World {
        ctx: world.ctx.with_caches(caches),
        ..world
    }
}

/// The reads the reconciles sent, less the harness's own GET of the Machine.
fn reads(world: &World) -> Vec<String> {
    world
        .server
        .request_lines()
        .into_iter()
        .filter(|line| line.starts_with("GET ") && line != &format!("GET {MACHINES}/m-1"))
        .collect()
}

async fn create(world: &World) {
    world
        .reconcile_until("m-1", 6, |w| {
            w.status("m-1", "/currentStatus/phase") == "Pending"
        })
        .await;
}

#[tokio::test]
async fn creation_reads_class_secret_and_node_from_the_stores() {
    let world = world();
    world
        .server
        .insert(MACHINES, machine_json("m-1", json!({})));
    let world = with_caches(world);
    create(&world).await;
    assert_eq!(world.driver.vms(), ["m-1"]);
    // The bootstrap token is looked up in the target cluster before it is created, as
    // MCM looks it up; nothing else is read.
    let reads = reads(&world);
    assert!(
        reads
            .iter()
            .all(|line| line.starts_with(&format!("GET {KUBE_SYSTEM_SECRETS}/"))),
        "{reads:#?}"
    );
}

#[tokio::test]
async fn without_the_stores_the_same_creation_reads_through_the_api_server() {
    let world = world();
    world
        .server
        .insert(MACHINES, machine_json("m-1", json!({})));
    create(&world).await;
    let reads = reads(&world);
    for path in [
        format!("GET {CLASSES}/class-a"),
        format!("GET {SECRETS}/cloud"),
    ] {
        assert!(reads.contains(&path), "{path} not in {reads:#?}");
    }
}

#[tokio::test]
async fn a_secret_outside_the_watched_namespace_is_read_from_the_api_server() {
    let world = world();
    world.server.insert(
        "/api/v1/namespaces/garden/secrets",
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "elsewhere", "namespace": "garden"},
               "data": {"extra": b64("x")}}),
    );
    let world = with_caches(world);
    let found = world.ctx.secret("garden", "elsewhere").await.expect("read");
    assert!(found.is_some());
    assert_eq!(
        reads(&world),
        ["GET /api/v1/namespaces/garden/secrets/elsewhere"]
    );
    // In the watched namespace a Secret the store lacks does not exist: no read.
    assert!(
        world
            .ctx
            .secret(NS, "missing")
            .await
            .expect("read")
            .is_none()
    );
    assert_eq!(reads(&world).len(), 1);
}
