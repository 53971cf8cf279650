//! Secret hygiene: kubeconfig contents, tokens and userData never reach logs, errors,
//! statuses or events, on the success, failure and deletion paths of the whole stack
//! (reconcile -> KubeVirt driver -> SPI -> kube's client -> the in-memory API server).
//!
//! Every log line at TRACE level, from every crate, is captured; so are the reasons the
//! reconciles return, the Machine as stored after each reconcile (status descriptions
//! and error codes), every request body sent to the control cluster, and the errors of
//! direct driver calls. None may contain the kubeconfig token, the userData marker or the
//! bootstrap token the controller generates. The provider cluster's userdata Secret is the
//! one place userData belongs, and the kube-system bootstrap Secret the one place the token
//! belongs; both are excluded.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Secret;
use kube_fake::{FakeApiServer, Fault};
use mcm_provider_kubevirt::driver::{ListMachinesRequest, MachineRequest};
use mcm_provider_kubevirt::mcm::{Machine, MachineClass};
use serde_json::json;

use support::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Everything that left the stack other than the two Secrets that hold the secrets.
#[derive(Default)]
struct Outputs {
    texts: Vec<(String, String)>,
}

impl Outputs {
    fn add(&mut self, what: impl Into<String>, text: impl Into<String>) {
        self.texts.push((what.into(), text.into()));
    }

    fn add_server(&mut self, server: &FakeApiServer, scenario: &str) {
        if let Some(machine) = server.get(MACHINES, "m-0") {
            self.add(format!("{scenario}: stored Machine"), machine.to_string());
        }
        for request in server.requests() {
            let to_control = request.path.contains(&format!("/namespaces/{NS}/"))
                && !request.path.contains("/secrets");
            if to_control || request.path.contains("/events") {
                self.add(
                    format!("{scenario}: {}", request.line()),
                    request.body.map(|b| b.to_string()).unwrap_or_default(),
                );
            }
        }
    }

    fn leaks(&self, secrets: &[String]) -> Vec<String> {
        let mut leaks = Vec::new();
        for (what, text) in &self.texts {
            for secret in secrets {
                if text.contains(secret.as_str()) {
                    leaks.push(format!("{what} contains {secret:?}"));
                }
            }
        }
        leaks
    }
}

fn bootstrap_tokens(server: &FakeApiServer) -> Vec<String> {
    server
        .names(KUBE_SYSTEM_SECRETS)
        .iter()
        .filter_map(|name| server.get(KUBE_SYSTEM_SECRETS, name))
        .filter_map(|secret| serde_json::from_value::<Secret>(secret).ok())
        .filter_map(|secret| secret.data?.get("token-secret").cloned())
        .map(|bytes| String::from_utf8_lossy(&bytes.0).into_owned())
        .collect()
}

async fn reconcile_all(
    server: &FakeApiServer,
    outputs: &mut Outputs,
    scenario: &str,
    times: usize,
) {
    let ctx = kubevirt_context(server);
    for _ in 0..times {
        if let Some(requeue) = reconcile_stored(&ctx, server, "m-0").await {
            outputs.add(format!("{scenario}: requeue reason"), requeue.reason);
        }
    }
}

#[tokio::test(start_paused = true)]
async fn secrets_never_reach_logs_errors_statuses_or_events() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let mut outputs = Outputs::default();
    let mut secrets = vec![KUBECONFIG_TOKEN.to_owned(), USER_DATA_MARKER.to_owned()];

    // Creation, with every kind of API failure on the way, then deletion.
    let server = kubevirt_server();
    server.insert(MACHINES, machine_json("m-0", json!({})));
    let mut request_count = 0;
    server.set_fault(move |_, _| {
        request_count += 1;
        match request_count % 7 {
            1 => Some(Fault::Status(500, "injected".into())),
            3 => Some(Fault::Status(409, "injected".into())),
            5 => Some(Fault::DropAfterApply),
            _ => None,
        }
    });
    reconcile_all(&server, &mut outputs, "create with faults", 25).await;
    server.clear_fault();
    reconcile_all(&server, &mut outputs, "create", 5).await;
    assert!(server.get(VMS, "m-0").is_some(), "the machine was created");
    let tokens = bootstrap_tokens(&server);
    assert!(!tokens.is_empty(), "a bootstrap token was issued");
    secrets.extend(tokens);
    outputs.add_server(&server, "create");
    let mut machine = server.get(MACHINES, "m-0").unwrap();
    machine["metadata"]["deletionTimestamp"] = json!(ago(0));
    server.insert(MACHINES, machine);
    reconcile_all(&server, &mut outputs, "delete", 15).await;
    assert!(
        server.get(MACHINES, "m-0").is_none(),
        "the machine was deleted"
    );
    outputs.add_server(&server, "delete");

    // Failure paths: a kubeconfig that does not parse, one naming a missing context, and
    // an oversized userData, each carrying the markers.
    for (scenario, kubeconfig, user_data) in [
        (
            "unparsable kubeconfig",
            format!("users: [{{name: u, user: {{token: {KUBECONFIG_TOKEN}"),
            format!("#cloud-config\n# {USER_DATA_MARKER}\n"),
        ),
        (
            "kubeconfig without its context",
            provider_kubeconfig().replace("current-context: kv", "current-context: gone"),
            format!("#cloud-config\n# {USER_DATA_MARKER}\n"),
        ),
        (
            "oversized userData",
            provider_kubeconfig(),
            format!(
                "#cloud-config\n# {USER_DATA_MARKER}\n{}",
                "x".repeat(2 << 20)
            ),
        ),
    ] {
        let server = kubevirt_server();
        server.insert(
            SECRETS,
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "cloud", "namespace": NS},
                   "data": {"userData": b64(&user_data), "kubeconfig": b64(&kubeconfig)}}),
        );
        server.insert(MACHINES, machine_json("m-0", json!({})));
        reconcile_all(&server, &mut outputs, scenario, 4).await;
        let status = server.get(MACHINES, "m-0").unwrap()["status"].clone();
        assert_eq!(
            status["lastOperation"]["errorCode"], "InvalidArgument",
            "{scenario}: {status}"
        );
        outputs.add_server(&server, scenario);

        // The driver's own errors, as the gRPC facade or a caller would print them.
        let driver = kubevirt_context(&server).driver.clone();
        let request = MachineRequest {
            machine: serde_json::from_value::<Machine>(server.get(MACHINES, "m-0").unwrap())
                .unwrap(),
            machine_class: serde_json::from_value::<MachineClass>(
                server.get(CLASSES, "class-a").unwrap(),
            )
            .unwrap(),
            secret: serde_json::from_value(server.get(SECRETS, "cloud").unwrap()).unwrap(),
        };
        for error in [
            driver.create_machine(&request).await.err(),
            driver.delete_machine(&request).await.err(),
            driver.get_machine_status(&request).await.err(),
            driver
                .list_machines(&ListMachinesRequest {
                    machine_class: request.machine_class.clone(),
                    secret: request.secret.clone(),
                })
                .await
                .err(),
        ]
        .into_iter()
        .flatten()
        {
            outputs.add(
                format!("{scenario}: driver error"),
                format!("{error} {error:?}"),
            );
        }
    }

    let logs = captured.text();
    assert!(
        logs.lines().count() > 20,
        "logs were captured: {} lines",
        logs.lines().count()
    );
    outputs.add("logs", logs.clone());
    let leaks = outputs.leaks(&secrets);
    println!(
        "secret hygiene: {} log lines, {} other outputs checked for {} secrets, {} leaks",
        logs.lines().count(),
        outputs.texts.len() - 1,
        secrets.len(),
        leaks.len()
    );
    assert!(leaks.is_empty(), "{leaks:#?}");
}

/// The check itself finds a secret where one is.
#[test]
fn the_leak_check_sees_a_leak() {
    let mut outputs = Outputs::default();
    outputs.add("log", format!("connecting with token {KUBECONFIG_TOKEN}"));
    assert_eq!(outputs.leaks(&[KUBECONFIG_TOKEN.to_owned()]).len(), 1);
}
