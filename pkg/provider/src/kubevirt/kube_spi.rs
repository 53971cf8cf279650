//! The [`PluginSpi`] over the KubeVirt cluster's API.
//!
//! Every call can be retried after failing half-way: CreateMachine writes the userdata
//! Secret (deterministic name) before the VM, creates the VM, then makes the VM the
//! Secret's owner, and each step first looks at what an earlier attempt left. Nothing is
//! changed or deleted unless this provider's labels say it made it for this machine.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{NodeAddress, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use kubevirt_api::kubevirt::v1::virtualmachineinstances::VirtualMachineInstance;
use kubevirt_api::kubevirt::v1::virtualmachines::VirtualMachine;
use lru::LruCache;
use serde_json::json;
use tracing::debug;

use crate::client_stack::{
    ClientStacks, KUBECONFIGS_KEPT, KubeconfigDigest, client_config, kubeconfig_digest,
};
use crate::codes::MachineCode;
use crate::field::FieldError;
use crate::kubevirt::api_calls::{ApiCallObserver, ObservedLayer};
use crate::kubevirt::ownership::{
    MACHINE_LABEL, Owner, Ownership, cluster_selector, encode_provider_id, user_data_secret_name,
};
use crate::kubevirt::vm::compose_machine;
use crate::secret::{ClusterAccess, kubeconfig_path};
use crate::spi::{
    CreateRequest, DeleteOutcome, ListRequest, MachineRef, PluginSpi, SpiError, VmStatus,
};

/// Makes a client for the KubeVirt cluster a secret points to.
#[async_trait]
pub trait ClientFactory: Send + Sync {
    async fn client(&self, access: &ClusterAccess) -> Result<Client, SpiError>;
}

/// Builds clients from the kubeconfig in the provider secret, each request reported to
/// the observer when there is one (the sidecar's cloud API metrics).
///
/// A client is built once per kubeconfig content and then reused by every call of every
/// machine: building one sets up TLS, and a reused one keeps its connections. Clones share
/// the kept clients. The TLS part comes from validation when it built it (see
/// `client_stack.rs`), so a kubeconfig's TLS configuration is built once, not twice.
#[derive(Clone)]
pub struct KubeconfigClientFactory {
    observer: Option<Arc<dyn ApiCallObserver>>,
    clients: Arc<KeptClients>,
    stacks: Arc<ClientStacks>,
}

impl Default for KubeconfigClientFactory {
    fn default() -> Self {
        KubeconfigClientFactory {
            observer: None,
            clients: Arc::default(),
            stacks: ClientStacks::shared(),
        }
    }
}

/// Clients by the digest of the kubeconfig they were built from, least recently used
/// evicted. Keyed by content, so a rotated token or certificate gets a client of its own.
struct KeptClients {
    by_digest: Mutex<LruCache<KubeconfigDigest, Client>>,
    /// Clients built, for tests and Debug.
    built: AtomicUsize,
}

impl Default for KeptClients {
    fn default() -> Self {
        KeptClients {
            by_digest: Mutex::new(LruCache::new(KUBECONFIGS_KEPT)),
            built: AtomicUsize::new(0),
        }
    }
}

impl KeptClients {
    /// The lock is never held across an await or while building, so a panic cannot leave
    /// the cache half-changed: a poisoned lock is taken over as it is.
    fn locked(&self) -> MutexGuard<'_, LruCache<KubeconfigDigest, Client>> {
        self.by_digest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.locked().len()
    }

    fn built(&self) -> usize {
        self.built.load(Ordering::Relaxed)
    }
}

impl KubeconfigClientFactory {
    pub fn observed(observer: Arc<dyn ApiCallObserver>) -> Self {
        KubeconfigClientFactory {
            observer: Some(observer),
            ..Self::default()
        }
    }

    /// A factory taking the stacks validation left in `stacks`, not the process's.
    #[cfg(test)]
    fn with_stacks(stacks: Arc<ClientStacks>) -> Self {
        KubeconfigClientFactory {
            stacks,
            ..Self::default()
        }
    }

    /// The client for `access`, from the stack validation built for `digest` if no client
    /// took it yet, else from a stack built here (a kubeconfig not validated in this
    /// process, or whose client was evicted).
    fn build(
        &self,
        access: &ClusterAccess,
        digest: Option<&KubeconfigDigest>,
    ) -> Result<Client, SpiError> {
        // kube's messages here may quote kubeconfig entries; they are withheld so a
        // malformed credential never reaches logs or the Machine status.
        let unusable = |what: &str| {
            SpiError::InvalidInput(
                FieldError::invalid(
                    &kubeconfig_path(),
                    format!("{what} failed (details withheld as they may quote credentials)"),
                )
                .into(),
            )
        };
        let stack = match digest.and_then(|digest| self.stacks.take(digest)) {
            Some(stack) => stack,
            None => {
                let config = client_config(&access.kubeconfig)
                    .map_err(|_| unusable("loading the client configuration"))?;
                // Validation rejects what is known to make kube panic here (a token that
                // is no header value); `build` catches a panic from anything it missed.
                self.stacks
                    .build(config)
                    .map_err(|_| unusable("building the client"))?
            }
        };
        let observer = self.observer.clone();
        let build = move || match observer {
            Some(observer) => stack.with_layer(&ObservedLayer::new(observer)).build(),
            None => stack.build(),
        };
        // Outside a runtime kube panics spawning the request buffer; not the sidecar's end.
        let client = std::panic::catch_unwind(std::panic::AssertUnwindSafe(build))
            .map_err(|_| unusable("building the client"))?;
        self.clients.built.fetch_add(1, Ordering::Relaxed);
        Ok(client)
    }
}

/// Counts only: the kept clients' kubeconfigs are credentials.
impl std::fmt::Debug for KubeconfigClientFactory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeconfigClientFactory")
            .field("observed", &self.observer.is_some())
            .field("clients_kept", &self.clients.len())
            .field("clients_built", &self.clients.built())
            .finish()
    }
}

#[async_trait]
impl ClientFactory for KubeconfigClientFactory {
    async fn client(&self, access: &ClusterAccess) -> Result<Client, SpiError> {
        let Some(digest) = kubeconfig_digest(&access.kubeconfig) else {
            return self.build(access, None);
        };
        if let Some(client) = self.clients.locked().get(&digest) {
            return Ok(client.clone());
        }
        // Built outside the lock, which is not held across an await. Calls racing for a
        // new kubeconfig may each build one, which is harmless: the first kept is the one
        // all of them get, the others are dropped unused.
        // A failed build is not kept: the next call tries again and names the same error.
        let built = self.build(access, Some(&digest))?;
        let kept = self
            .clients
            .locked()
            .get_or_insert(digest, || built)
            .clone();
        Ok(kept)
    }
}

/// The KubeVirt implementation of the plugin SPI.
pub struct KubeVirtSpi<F> {
    clients: F,
}

impl<F: ClientFactory> KubeVirtSpi<F> {
    pub fn new(clients: F) -> Self {
        KubeVirtSpi { clients }
    }
}

/// Maps a failed API call to the MCM code that makes MCM retry it the right way.
pub fn api_error(action: impl Into<String>, error: kube::Error) -> SpiError {
    let action = action.into();
    match error {
        kube::Error::Api(status) => {
            let code = match status.code {
                400 | 422 => MachineCode::InvalidArgument,
                401 => MachineCode::Unauthenticated,
                // Quota rejections are 403s; MCM and the autoscaler back off on ResourceExhausted.
                403 if status.message.contains("exceeded quota") => MachineCode::ResourceExhausted,
                403 => MachineCode::PermissionDenied,
                // The namespace or the KubeVirt CRDs are missing.
                404 => MachineCode::FailedPrecondition,
                409 | 410 => MachineCode::Aborted,
                429 | 502 | 503 => MachineCode::Unavailable,
                504 => MachineCode::DeadlineExceeded,
                _ => MachineCode::Internal,
            };
            SpiError::Api {
                action,
                code,
                message: format!("{} ({} {})", status.message, status.code, status.reason),
            }
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => SpiError::Api {
            action,
            code: MachineCode::Unavailable,
            message: format!("API server unreachable: {}", with_causes(&error)),
        },
        other => SpiError::Api {
            action,
            code: MachineCode::Internal,
            message: other.to_string(),
        },
    }
}

/// An error followed by its causes. A failed connection reads "client error (Connect)"
/// alone, which tells an operator neither what failed nor why; the causes do ("tcp connect
/// error: Connection refused", a TLS certificate problem). Connection errors name no
/// credentials, so they may reach the Machine status.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Wrappers often repeat their cause's text.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

fn is_conflict(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 409)
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(status) if status.code == 404)
}

/// InternalIP addresses the VMI's interfaces report (the guest agent or DHCP lease).
fn addresses(vmi: Option<VirtualMachineInstance>) -> Vec<NodeAddress> {
    let mut found: Vec<String> = Vec::new();
    let interfaces = vmi
        .and_then(|vmi| vmi.status)
        .and_then(|status| status.interfaces)
        .unwrap_or_default();
    for interface in interfaces {
        let ips = interface
            .ip_address
            .into_iter()
            .chain(interface.ip_addresses.unwrap_or_default());
        for ip in ips {
            if !ip.is_empty() && !found.contains(&ip) {
                found.push(ip);
            }
        }
    }
    found
        .into_iter()
        .map(|address| NodeAddress {
            address,
            type_: "InternalIP".to_owned(),
        })
        .collect()
}

struct Apis {
    vms: Api<VirtualMachine>,
    vmis: Api<VirtualMachineInstance>,
    secrets: Api<Secret>,
}

impl<F: ClientFactory> KubeVirtSpi<F> {
    async fn apis(&self, access: &ClusterAccess) -> Result<Apis, SpiError> {
        let client = self.clients.client(access).await?;
        let namespace = access.namespace.as_str();
        Ok(Apis {
            vms: Api::namespaced(client.clone(), namespace),
            vmis: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
        })
    }

    async fn status_of(&self, apis: &Apis, name: &str) -> Result<VmStatus, SpiError> {
        let vmi = apis
            .vmis
            .get_opt(name)
            .await
            .map_err(|e| api_error(format!("get VirtualMachineInstance {name:?}"), e))?;
        Ok(VmStatus {
            provider_id: encode_provider_id(name),
            node_name: name.to_owned(),
            addresses: addresses(vmi),
        })
    }

    /// Creates the userdata Secret, or brings the one an earlier attempt wrote up to date.
    async fn ensure_user_data_secret(
        &self,
        apis: &Apis,
        ownership: &Ownership,
        secret: &Secret,
    ) -> Result<(), SpiError> {
        let name = secret.name_any();
        let action = || format!("create userdata Secret {name:?}");
        let error = match apis.secrets.create(&PostParams::default(), secret).await {
            Ok(_) => return Ok(()),
            Err(error) if is_conflict(&error) => error,
            Err(error) => return Err(api_error(action(), error)),
        };
        debug!(secret = %name, "userdata Secret exists: {error}");
        let existing = apis
            .secrets
            .get(&name)
            .await
            .map_err(|e| api_error(action(), e))?;
        if ownership.owner_of(existing.metadata.labels.as_ref()) != Owner::Ours {
            return Err(SpiError::NotOwned {
                kind: "Secret",
                name,
            });
        }
        if existing.data != secret.data {
            let patch = json!({ "data": secret.data });
            apis.secrets
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(|e| api_error(format!("update userdata Secret {name:?}"), e))?;
        }
        Ok(())
    }

    /// Makes the VM the userdata Secret's owner, so deleting the VM collects the Secret.
    /// A missing Secret is left missing: the VM has booted from it or will not need it.
    async fn adopt_user_data_secret(
        &self,
        apis: &Apis,
        vm: &VirtualMachine,
        secret_name: &str,
    ) -> Result<(), SpiError> {
        let Some(uid) = vm.meta().uid.clone() else {
            return Ok(());
        };
        let owner = OwnerReference {
            api_version: VirtualMachine::api_version(&()).into_owned(),
            kind: VirtualMachine::kind(&()).into_owned(),
            name: vm.name_any(),
            uid,
            controller: Some(true),
            block_owner_deletion: None,
        };
        let Some(current) = apis
            .secrets
            .get_opt(secret_name)
            .await
            .map_err(|e| api_error(format!("get userdata Secret {secret_name:?}"), e))?
        else {
            return Ok(());
        };
        if current.owner_references().contains(&owner) {
            return Ok(());
        }
        let patch = json!({ "metadata": { "ownerReferences": [owner] } });
        apis.secrets
            .patch(secret_name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| api_error(format!("set owner of userdata Secret {secret_name:?}"), e))?;
        Ok(())
    }
}

#[async_trait]
impl<F: ClientFactory> PluginSpi for KubeVirtSpi<F> {
    async fn create_machine(&self, request: &CreateRequest) -> Result<VmStatus, SpiError> {
        let composed = compose_machine(request)?;
        let apis = self.apis(&request.secret.access).await?;
        let ownership = &request.ownership;
        let name = ownership.machine_name.as_str();
        let secret_name = composed.user_data_secret.name_any();
        let get_action = || format!("get VirtualMachine {name:?}");

        let existing = apis
            .vms
            .get_opt(name)
            .await
            .map_err(|e| api_error(get_action(), e))?;
        let vm = match existing {
            Some(vm) => match ownership.owner_of(vm.metadata.labels.as_ref()) {
                // The Go provider's VMs have their own timestamped userdata Secrets.
                Owner::Legacy => return self.status_of(&apis, name).await,
                Owner::Foreign => {
                    return Err(SpiError::NotOwned {
                        kind: "VirtualMachine",
                        name: name.to_owned(),
                    });
                }
                Owner::Ours => {
                    self.ensure_user_data_secret(&apis, ownership, &composed.user_data_secret)
                        .await?;
                    vm
                }
            },
            None => {
                self.ensure_user_data_secret(&apis, ownership, &composed.user_data_secret)
                    .await?;
                match apis.vms.create(&PostParams::default(), &composed.vm).await {
                    Ok(vm) => vm,
                    // Another attempt won the race; it is ours if its labels say so.
                    Err(error) if is_conflict(&error) => {
                        let vm = apis
                            .vms
                            .get(name)
                            .await
                            .map_err(|e| api_error(get_action(), e))?;
                        if ownership.owner_of(vm.metadata.labels.as_ref()) != Owner::Ours {
                            return Err(SpiError::NotOwned {
                                kind: "VirtualMachine",
                                name: name.to_owned(),
                            });
                        }
                        vm
                    }
                    Err(error) => {
                        return Err(api_error(format!("create VirtualMachine {name:?}"), error));
                    }
                }
            }
        };
        self.adopt_user_data_secret(&apis, &vm, &secret_name)
            .await?;
        self.status_of(&apis, name).await
    }

    async fn delete_machine(&self, machine: &MachineRef) -> Result<DeleteOutcome, SpiError> {
        let apis = self.apis(&machine.access).await?;
        let ownership = &machine.ownership;
        let name = ownership.machine_name.as_str();
        let mut deleted_something = false;

        let vm = apis
            .vms
            .get_opt(name)
            .await
            .map_err(|e| api_error(format!("get VirtualMachine {name:?}"), e))?;
        if let Some(vm) = vm {
            if ownership.owner_of(vm.metadata.labels.as_ref()) == Owner::Foreign {
                return Ok(DeleteOutcome::NotOwned);
            }
            // The precondition keeps a VM re-created under this name by someone else safe.
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: vm.metadata.uid.clone(),
                    resource_version: None,
                }),
                ..DeleteParams::background()
            };
            match apis.vms.delete(name, &params).await {
                Ok(_) => deleted_something = true,
                Err(error) if is_not_found(&error) => {}
                Err(error) => {
                    return Err(api_error(format!("delete VirtualMachine {name:?}"), error));
                }
            }
        }

        // Normally collected through its owner reference; deleted here as well because a
        // create interrupted before the VM existed leaves it without one.
        let secret_name = user_data_secret_name(name);
        let secret = apis
            .secrets
            .get_opt(&secret_name)
            .await
            .map_err(|e| api_error(format!("get userdata Secret {secret_name:?}"), e))?;
        if let Some(secret) = secret
            && ownership.owner_of(secret.metadata.labels.as_ref()) == Owner::Ours
        {
            match apis
                .secrets
                .delete(&secret_name, &DeleteParams::default())
                .await
            {
                Ok(_) => deleted_something = true,
                Err(error) if is_not_found(&error) => {}
                Err(error) => {
                    return Err(api_error(
                        format!("delete userdata Secret {secret_name:?}"),
                        error,
                    ));
                }
            }
        }
        Ok(if deleted_something {
            DeleteOutcome::Deleted
        } else {
            DeleteOutcome::AlreadyGone
        })
    }

    async fn get_machine_status(&self, machine: &MachineRef) -> Result<VmStatus, SpiError> {
        let apis = self.apis(&machine.access).await?;
        let name = machine.ownership.machine_name.as_str();
        let vm = apis
            .vms
            .get_opt(name)
            .await
            .map_err(|e| api_error(format!("get VirtualMachine {name:?}"), e))?
            .ok_or_else(|| SpiError::NotFound(name.to_owned()))?;
        match machine.ownership.owner_of(vm.metadata.labels.as_ref()) {
            Owner::Foreign => {
                return Err(SpiError::NotOwned {
                    kind: "VirtualMachine",
                    name: name.to_owned(),
                });
            }
            // MCM calls CreateMachine no more once the VM is found, so an attempt that
            // stopped between VM and ownership is finished here.
            Owner::Ours => {
                self.adopt_user_data_secret(&apis, &vm, &user_data_secret_name(name))
                    .await?;
            }
            Owner::Legacy => {}
        }
        self.status_of(&apis, name).await
    }

    async fn list_machines(
        &self,
        request: &ListRequest,
    ) -> Result<BTreeMap<String, String>, SpiError> {
        let apis = self.apis(&request.access).await?;
        let mut params = ListParams::default()
            .labels(&cluster_selector(&request.cluster))
            .limit(500);
        let mut machines = BTreeMap::new();
        loop {
            let page = apis
                .vms
                .list(&params)
                .await
                .map_err(|e| api_error("list VirtualMachines", e))?;
            for vm in &page.items {
                let name = vm.name_any();
                let machine = vm
                    .labels()
                    .get(MACHINE_LABEL)
                    .cloned()
                    .unwrap_or_else(|| name.clone());
                machines.insert(encode_provider_id(&name), machine);
            }
            match page.metadata.continue_.filter(|token| !token.is_empty()) {
                Some(token) => params = params.continue_token(&token),
                None => break,
            }
        }
        Ok(machines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{BufRead, BufReader, Write};
    use std::sync::mpsc;
    use std::time::Duration;

    use kube::config::Kubeconfig;

    use crate::testing::{TOKEN, kubeconfig_yaml, secret_with};

    /// Access through a kubeconfig as a provider Secret holds it, validated as the driver
    /// validates it, for `server` with `token`.
    fn access_at(server: &str, token: &str) -> ClusterAccess {
        let yaml = kubeconfig_yaml(Some("vms"))
            .replace("https://127.0.0.1:6443", server)
            .replace(TOKEN, token);
        ClusterAccess::from_secret(&secret_with(&[("kubeconfig", &yaml)])).unwrap()
    }

    fn access(token: &str) -> ClusterAccess {
        access_at("https://127.0.0.1:6443", token)
    }

    /// As [`access_at`], validated into `stacks` instead of the process's.
    fn validated_in(stacks: &ClientStacks, server: &str, token: &str) -> ClusterAccess {
        let yaml = kubeconfig_yaml(Some("vms"))
            .replace("https://127.0.0.1:6443", server)
            .replace(TOKEN, token);
        let data = BTreeMap::from([(
            "kubeconfig".to_owned(),
            k8s_openapi::ByteString(yaml.into_bytes()),
        )]);
        ClusterAccess::from_data_in(&data, stacks).unwrap()
    }

    /// A loopback server answering 404 to every request; the channel gets the bearer
    /// token of each, so a test can tell which credentials a client holds.
    fn token_recording_server() -> (String, mpsc::Receiver<String>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (sent, received) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut token = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let line = line.trim_end();
                    if line.is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("authorization")
                    {
                        token = value.trim().trim_start_matches("Bearer ").to_owned();
                    }
                }
                stream
                    .write_all(
                        b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .unwrap();
                if sent.send(token).is_err() {
                    return;
                }
            }
        });
        (url, received)
    }

    /// The token `client` sends, as the server saw it.
    async fn token_sent(client: &Client, server: &mpsc::Receiver<String>) -> String {
        let request = http::Request::get("/version").body(Vec::new()).unwrap();
        // 404: only the request matters.
        let _ = client.request_text(request).await;
        server.recv_timeout(Duration::from_secs(10)).unwrap()
    }

    #[tokio::test]
    async fn the_same_kubeconfig_builds_one_client() {
        let factory = KubeconfigClientFactory::default();
        // Parsed twice, as each driver call parses the Secret anew.
        factory.client(&access("t")).await.unwrap();
        factory.client(&access("t")).await.unwrap();
        // Clones (one per driver) share the kept clients.
        factory.clone().client(&access("t")).await.unwrap();
        assert_eq!(factory.clients.built(), 1);
        assert_eq!(factory.clients.len(), 1);

        let shown = format!("{factory:?}");
        assert!(
            shown.contains("clients_kept: 1") && shown.contains("clients_built: 1"),
            "{shown}"
        );
        assert!(
            !shown.contains("127.0.0.1") && !shown.contains("\"t\""),
            "{shown}"
        );
    }

    /// What the driver does on every call: validate the Secret, then get the client. The
    /// TLS stack is built by the first validation of a content only; the client is made
    /// from that very stack (it sends that content's token).
    #[tokio::test]
    async fn the_client_stack_is_built_once_per_content_for_validation_and_client() {
        let (url, server) = token_recording_server();
        let stacks = Arc::new(ClientStacks::default());
        let factory = KubeconfigClientFactory::with_stacks(stacks.clone());
        for _ in 0..3 {
            let access = validated_in(&stacks, &url, "token-a");
            let client = factory.client(&access).await.unwrap();
            assert_eq!(token_sent(&client, &server).await, "token-a");
        }
        assert_eq!(stacks.builds(), 1, "validation and client share one build");
        assert_eq!(factory.clients.built(), 1);

        for _ in 0..2 {
            let access = validated_in(&stacks, &url, "token-b");
            let client = factory.client(&access).await.unwrap();
            assert_eq!(token_sent(&client, &server).await, "token-b");
        }
        assert_eq!(stacks.builds(), 2, "a rotated token is built once");
        assert_eq!(factory.clients.built(), 2);
        assert_eq!(stacks.len(), 2);

        // A factory that finds no stack left (another took it) builds its own.
        let other = KubeconfigClientFactory::with_stacks(stacks.clone());
        let access = validated_in(&stacks, &url, "token-b");
        let client = other.client(&access).await.unwrap();
        assert_eq!(token_sent(&client, &server).await, "token-b");
        assert_eq!(stacks.builds(), 3);
    }

    #[tokio::test]
    async fn a_rotated_token_gets_a_new_client() {
        let (url, server) = token_recording_server();
        let factory = KubeconfigClientFactory::default();
        let old = factory.client(&access_at(&url, "token-old")).await.unwrap();
        assert_eq!(token_sent(&old, &server).await, "token-old");

        let new = factory.client(&access_at(&url, "token-new")).await.unwrap();
        assert_eq!(factory.clients.built(), 2);
        assert_eq!(token_sent(&new, &server).await, "token-new");
        // Asked again, the new kubeconfig's client is the kept one, not the old.
        let again = factory.client(&access_at(&url, "token-new")).await.unwrap();
        assert_eq!(factory.clients.built(), 2);
        assert_eq!(token_sent(&again, &server).await, "token-new");
    }

    #[tokio::test]
    async fn the_least_recently_used_client_is_evicted_beyond_the_bound() {
        let bound = KUBECONFIGS_KEPT.get();
        let factory = KubeconfigClientFactory::default();
        for i in 0..bound {
            factory.client(&access(&format!("t{i}"))).await.unwrap();
            assert_eq!(factory.clients.len(), i + 1);
        }
        assert_eq!(factory.clients.len(), bound);
        // t0 used again: t1 is now the least recently used.
        factory.client(&access("t0")).await.unwrap();
        assert_eq!(factory.clients.built(), bound);

        factory.client(&access("one-more")).await.unwrap();
        assert_eq!(factory.clients.built(), bound + 1);
        assert_eq!(factory.clients.len(), bound);
        factory.client(&access("t0")).await.unwrap();
        assert_eq!(factory.clients.built(), bound + 1, "t0 was evicted");
        factory.client(&access("t1")).await.unwrap();
        assert_eq!(factory.clients.built(), bound + 2, "t1 was kept");
        assert_eq!(factory.clients.len(), bound);
    }

    #[tokio::test]
    async fn a_kubeconfig_that_fails_to_build_is_not_kept() {
        let unusable_tls = kubeconfig_yaml(Some("vms")).replace(
            "insecure-skip-tls-verify: true",
            "tls-server-name: 'not a server name'",
        );
        let failing = [
            // No current context: loading the configuration fails.
            ClusterAccess {
                kubeconfig: Kubeconfig::default(),
                namespace: "vms".to_owned(),
            },
            // Past validation only when built as here: TLS refuses the server name.
            ClusterAccess {
                kubeconfig: Kubeconfig::from_yaml(&unusable_tls).unwrap(),
                namespace: "vms".to_owned(),
            },
        ];
        let factory = KubeconfigClientFactory::default();
        let error = async |access| match factory.client(access).await {
            Ok(_) => panic!("a client was built"),
            Err(error) => error.to_string(),
        };
        for access in &failing {
            let first = error(access).await;
            let second = error(access).await;
            assert!(first.contains("secret.data.kubeconfig"), "{first}");
            assert_eq!(first, second);
            assert!(!first.contains(TOKEN), "{first}");
        }
        assert_eq!(factory.clients.len(), 0);
        assert_eq!(factory.clients.built(), 0);
        // A usable kubeconfig after them is built and kept as usual.
        factory.client(&access("t")).await.unwrap();
        assert_eq!(factory.clients.len(), 1);
    }
}
