//! The end-to-end suite lives in `tests/`; see README.md ("End-to-end tests").
//!
//! This library holds what the scenarios share: [`bed`] (a scenario's namespace, the
//! sidecar process, the end-state checks), [`proxy`] (a forwarding proxy in front of the
//! provider cluster that sees, and can hold, the driver's requests), [`scenario`] (teardown
//! however a scenario ends) and the provider kubeconfig below.

pub mod bed;
pub mod kubelet;
pub mod proxy;
pub mod scenario;

use std::path::Path;

use base64::Engine;
use serde_json::{Map, Value};

/// The provider Secret's kubeconfig for the suite: the current context of `kubeconfig_yaml`
/// alone, with `namespace` for the VMs and every file reference read into inline data.
///
/// The provider accepts inline credentials only (a provider Secret must not make the
/// sidecar read its own files or run programs), while developer kubeconfigs often point
/// to files (minikube) or use exec plugins (cloud clusters). Relative paths are resolved
/// against `base_dir`, as kubectl resolves them against the kubeconfig's directory.
pub fn provider_kubeconfig(
    kubeconfig_yaml: &str,
    base_dir: &Path,
    namespace: &str,
) -> Result<String, String> {
    let config: Value =
        serde_saphyr::from_str(kubeconfig_yaml).map_err(|e| format!("not YAML: {e}"))?;
    let current = config["current-context"]
        .as_str()
        .filter(|name| !name.is_empty())
        .ok_or("has no current-context")?;
    let named = |list: &str, name: &str| -> Result<Map<String, Value>, String> {
        config[list]
            .as_array()
            .into_iter()
            .flatten()
            .find(|entry| entry["name"] == name)
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| format!("has no {list} entry {name:?}"))
    };
    let mut context = named("contexts", current)?;
    let cluster_name = context["context"]["cluster"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let user_name = context["context"]["user"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    if let Some(Value::Object(inner)) = context.get_mut("context") {
        inner.insert("namespace".into(), Value::String(namespace.to_owned()));
    }

    let mut cluster = named("clusters", &cluster_name)?;
    if let Some(Value::Object(inner)) = cluster.get_mut("cluster") {
        inline_file(
            inner,
            "certificate-authority",
            "certificate-authority-data",
            base_dir,
        )?;
    }
    let mut user = named("users", &user_name)?;
    if let Some(Value::Object(inner)) = user.get_mut("user") {
        for plugin in ["exec", "auth-provider"] {
            if inner.get(plugin).is_some_and(|v| !v.is_null()) {
                return Err(format!(
                    "user {user_name:?} authenticates with {plugin}, which the provider refuses; point E2E_KUBECONFIG to a kubeconfig with a token or client certificate"
                ));
            }
        }
        inline_file(
            inner,
            "client-certificate",
            "client-certificate-data",
            base_dir,
        )?;
        inline_file(inner, "client-key", "client-key-data", base_dir)?;
        if let Some(path) = take_path(inner, "tokenFile") {
            let token = std::fs::read_to_string(base_dir.join(&path))
                .map_err(|e| format!("cannot read tokenFile {path}: {e}"))?;
            inner.insert("token".into(), Value::String(token.trim().to_owned()));
        }
    }

    let provider = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "contexts": [context],
        "clusters": [cluster],
        "users": [user],
    });
    serde_saphyr::to_string(&provider).map_err(|e| format!("cannot serialise: {e}"))
}

fn take_path(entry: &mut Map<String, Value>, key: &str) -> Option<String> {
    match entry.remove(key) {
        Some(Value::String(path)) if !path.is_empty() => Some(path),
        _ => None,
    }
}

fn inline_file(
    entry: &mut Map<String, Value>,
    file_key: &str,
    data_key: &str,
    base_dir: &Path,
) -> Result<(), String> {
    if let Some(path) = take_path(entry, file_key) {
        let bytes = std::fs::read(base_dir.join(&path))
            .map_err(|e| format!("cannot read {file_key} {path}: {e}"))?;
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        entry.insert(data_key.into(), Value::String(data));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Value {
        serde_saphyr::from_str(text).unwrap()
    }

    #[test]
    fn file_references_are_inlined_and_only_the_current_context_is_kept() {
        let dir = std::env::temp_dir().join(format!("e2e-kubeconfig-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        std::fs::write(dir.join("certs/ca.crt"), "CA").unwrap();
        std::fs::write(dir.join("client.crt"), "CERT").unwrap();
        std::fs::write(dir.join("client.key"), "KEY").unwrap();
        std::fs::write(dir.join("token"), "tok\n").unwrap();
        let kubeconfig = format!(
            "apiVersion: v1
kind: Config
current-context: dev
clusters:
- {{name: dev, cluster: {{server: 'https://127.0.0.1:6443', certificate-authority: certs/ca.crt}}}}
- {{name: other, cluster: {{server: 'https://other'}}}}
contexts:
- {{name: dev, context: {{cluster: dev, user: dev, namespace: default}}}}
- {{name: cloud, context: {{cluster: other, user: cloud}}}}
users:
- {{name: dev, user: {{client-certificate: client.crt, client-key: {}, tokenFile: token}}}}
- {{name: cloud, user: {{exec: {{command: gcloud}}}}}}
",
            dir.join("client.key").display()
        );
        let out = parsed(&provider_kubeconfig(&kubeconfig, &dir, "e2e-ns").unwrap());
        std::fs::remove_dir_all(&dir).ok();

        assert_eq!(out["contexts"].as_array().unwrap().len(), 1);
        assert_eq!(out["contexts"][0]["context"]["namespace"], "e2e-ns");
        let cluster = &out["clusters"][0]["cluster"];
        assert_eq!(cluster["certificate-authority-data"], "Q0E=");
        assert!(cluster.get("certificate-authority").is_none());
        let user = &out["users"][0]["user"];
        assert_eq!(user["client-certificate-data"], "Q0VSVA==");
        assert_eq!(user["client-key-data"], "S0VZ");
        assert_eq!(user["token"], "tok");
        assert!(user.get("tokenFile").is_none() && user.get("client-key").is_none());
        assert_eq!(out["users"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn credential_plugins_are_refused_with_a_way_out() {
        let kubeconfig = "current-context: cloud
clusters: [{name: c, cluster: {server: 'https://c'}}]
contexts: [{name: cloud, context: {cluster: c, user: u}}]
users: [{name: u, user: {exec: {command: gcloud}}}]
";
        let error = provider_kubeconfig(kubeconfig, Path::new("."), "ns").unwrap_err();
        assert!(error.contains("authenticates with exec"), "{error}");
        assert!(error.contains("E2E_KUBECONFIG"), "{error}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let kubeconfig = "current-context: a
clusters: [{name: a, cluster: {server: 'https://a', certificate-authority: /nonexistent/ca.crt}}]
contexts: [{name: a, context: {cluster: a, user: u}}]
users: [{name: u, user: {token: t}}]
";
        let error = provider_kubeconfig(kubeconfig, Path::new("."), "ns").unwrap_err();
        assert!(error.contains("/nonexistent/ca.crt"), "{error}");
    }
}
