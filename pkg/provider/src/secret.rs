//! The provider secret: `kubeconfig` of the KubeVirt cluster and the machine's `userData`.
//!
//! Both values are credentials or carry them (bootstrap tokens live in userData), so this
//! type never prints them: its `Debug` is redacted and parse errors never quote the input.

use std::collections::BTreeMap;
use std::fmt;

use http::HeaderValue;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::client::RustlsTlsError;
use kube::config::{AuthInfo, Cluster, Kubeconfig, KubeconfigError};
use secrecy::ExposeSecret;

use crate::client_stack::{ClientStacks, client_config, kubeconfig_digest};
use crate::field::{FieldError, FieldErrorKind, FieldErrors, FieldPath};

pub const KUBECONFIG_KEY: &str = "kubeconfig";
pub const USER_DATA_KEY: &str = "userData";

/// A Secret's data is capped at 1 MiB by the API server; the userdata Secret this provider
/// writes also holds SSH keys, so leave room for them.
pub const MAX_USER_DATA_BYTES: usize = 1024 * 1024 - 64 * 1024;

/// Where the VMs live: the KubeVirt cluster's kubeconfig and its current context's namespace.
#[derive(Clone)]
pub struct ClusterAccess {
    pub kubeconfig: Kubeconfig,
    pub namespace: String,
}

impl fmt::Debug for ClusterAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterAccess")
            .field("kubeconfig", &"<redacted>")
            .field("namespace", &self.namespace)
            .finish()
    }
}

/// The secret data CreateMachine needs, after validation.
#[derive(Clone)]
pub struct ProviderSecret {
    pub access: ClusterAccess,
    pub user_data: Vec<u8>,
}

impl fmt::Debug for ProviderSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderSecret")
            .field("access", &self.access)
            .field(
                "user_data",
                &format_args!("<{} bytes redacted>", self.user_data.len()),
            )
            .finish()
    }
}

fn data_root() -> FieldPath {
    FieldPath::new("secret").child("data")
}

/// Where the kubeconfig is named in errors, including those of clients built from it.
pub fn kubeconfig_path() -> FieldPath {
    data_root().child(KUBECONFIG_KEY)
}

fn secret_data(secret: &Secret) -> BTreeMap<String, ByteString> {
    secret.data.clone().unwrap_or_default()
}

impl ClusterAccess {
    /// Validates only the kubeconfig: enough to find, list and delete VMs.
    pub fn from_secret(secret: &Secret) -> Result<ClusterAccess, FieldErrors> {
        Self::from_data(&secret_data(secret))
    }

    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Result<ClusterAccess, FieldErrors> {
        Self::from_data_in(data, &ClientStacks::shared())
    }

    /// As [`ClusterAccess::from_data`], remembering validated kubeconfigs in `stacks`.
    pub(crate) fn from_data_in(
        data: &BTreeMap<String, ByteString>,
        stacks: &ClientStacks,
    ) -> Result<ClusterAccess, FieldErrors> {
        let path = kubeconfig_path();
        match data.get(KUBECONFIG_KEY).map(|bytes| bytes.0.as_slice()) {
            None | Some([]) => Err(FieldError::required(&path, "cannot be empty").into()),
            Some(bytes) => parse_kubeconfig(bytes, stacks)
                .map_err(|detail| FieldError::invalid(&path, detail).into()),
        }
    }
}

impl ProviderSecret {
    /// Validates the merged secret data MCM hands to the driver.
    pub fn from_secret(secret: &Secret) -> Result<ProviderSecret, FieldErrors> {
        Self::from_data(&secret_data(secret))
    }

    pub fn from_data(data: &BTreeMap<String, ByteString>) -> Result<ProviderSecret, FieldErrors> {
        let access = ClusterAccess::from_data(data);
        let mut errors = FieldErrors::default();
        let user_data_path = data_root().child(USER_DATA_KEY);
        let user_data = data
            .get(USER_DATA_KEY)
            .map(|bytes| bytes.0.clone())
            .unwrap_or_default();
        if user_data.is_empty() {
            errors.push(FieldError::required(&user_data_path, "cannot be empty"));
        } else if user_data.len() > MAX_USER_DATA_BYTES {
            errors.push(FieldError::new(
                FieldErrorKind::TooLong,
                &user_data_path,
                format!(
                    "{} bytes, at most {MAX_USER_DATA_BYTES} fit in the userdata Secret",
                    user_data.len()
                ),
            ));
        }
        match (access, errors.into_result()) {
            (Ok(access), Ok(())) => Ok(ProviderSecret { access, user_data }),
            (access, user_data_errors) => {
                let mut all = access.err().unwrap_or_default();
                all.extend(user_data_errors.err().unwrap_or_default());
                Err(all)
            }
        }
    }
}

/// Where a YAML document holding credentials is broken, without the parser's message:
/// that may quote the document.
pub fn withheld_yaml_error(error: &serde_saphyr::Error) -> String {
    let at = error
        .location()
        .map(|l| format!(" at line {} column {}", l.line(), l.column()))
        .unwrap_or_default();
    format!("invalid{at}; details withheld as they may quote credentials")
}

/// Parses a kubeconfig and resolves the namespace of its current context.
///
/// Errors describe the structure only: the YAML parser's messages can quote values,
/// and those values are tokens and keys.
fn parse_kubeconfig(bytes: &[u8], stacks: &ClientStacks) -> Result<ClusterAccess, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_owned())?;
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|error| match &error {
        KubeconfigError::Parse(yaml) => {
            format!("is not a kubeconfig ({})", withheld_yaml_error(yaml))
        }
        _ => "is not a kubeconfig".to_owned(),
    })?;

    let current = kubeconfig
        .current_context
        .as_deref()
        .filter(|name| !name.is_empty())
        .ok_or_else(|| "has no current-context".to_owned())?;
    let context = kubeconfig
        .contexts
        .iter()
        .find(|named| named.name == current)
        .and_then(|named| named.context.as_ref())
        .ok_or_else(|| format!("current-context {current:?} is not among its contexts"))?;
    let cluster = kubeconfig
        .clusters
        .iter()
        .find(|named| named.name == context.cluster)
        .and_then(|named| named.cluster.as_ref())
        .ok_or_else(|| {
            format!(
                "cluster {:?} of context {current:?} is not among its clusters",
                context.cluster
            )
        })?;
    if cluster.server.as_deref().is_none_or(str::is_empty) {
        return Err(format!("cluster {:?} has no server", context.cluster));
    }
    let user = context.user.as_deref().and_then(|name| {
        kubeconfig
            .auth_infos
            .iter()
            .find(|named| named.name == name)
            .and_then(|named| named.auth_info.as_ref())
    });
    refuse_local_references(&context.cluster, cluster, context.user.as_deref(), user)?;
    check_client_config(&kubeconfig, stacks)?;
    let namespace = context
        .namespace
        .clone()
        .filter(|ns| !ns.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    Ok(ClusterAccess {
        kubeconfig,
        namespace,
    })
}

/// A provider secret comes from the cluster's owner, yet the kubeconfig is used inside
/// the sidecar: a credential plugin would run a program there, and a file reference would
/// read the sidecar's own files (its service account token, say) and send them to the
/// server the kubeconfig names. Only inline credentials are accepted, as Gardener does.
fn refuse_local_references(
    cluster_name: &str,
    cluster: &Cluster,
    user_name: Option<&str>,
    user: Option<&AuthInfo>,
) -> Result<(), String> {
    if cluster.certificate_authority.is_some() {
        return Err(format!(
            "cluster {cluster_name:?} refers to a certificate-authority file; use certificate-authority-data"
        ));
    }
    let Some(user) = user else { return Ok(()) };
    let user_name = user_name.unwrap_or_default();
    let refused = [
        (user.exec.is_some(), "an exec credential plugin"),
        (user.auth_provider.is_some(), "an auth-provider"),
        (user.token_file.is_some(), "a tokenFile; use token"),
        (
            user.client_certificate.is_some(),
            "a client-certificate file; use client-certificate-data",
        ),
        (
            user.client_key.is_some(),
            "a client-key file; use client-key-data",
        ),
    ];
    match refused.iter().find(|(given, _)| *given) {
        Some((_, what)) => Err(format!(
            "user {user_name:?} has {what} (programs and files of the sidecar are not used for provider clusters)"
        )),
        None => Ok(()),
    }
}

/// The client configuration kube derives from the kubeconfig, built as the SPI builds it
/// but without connecting: server URL, certificate authority and client identity. kube's
/// own messages are not passed on, as they may quote what they could not parse.
///
/// The outcome depends on the kubeconfig alone, so a success is remembered by its digest
/// and not checked again; the stack it built is left in `stacks` for the client factory,
/// which then builds none itself: one TLS configuration per kubeconfig content. The raw
/// Secret bytes are not the key because the factory knows only the parsed kubeconfig.
fn check_client_config(kubeconfig: &Kubeconfig, stacks: &ClientStacks) -> Result<(), String> {
    let digest = kubeconfig_digest(kubeconfig);
    if digest.is_some_and(|digest| stacks.validated(&digest)) {
        return Ok(());
    }
    let config = client_config(kubeconfig).map_err(|error| {
        match error {
            KubeconfigError::MissingClusterUrl | KubeconfigError::ParseClusterUrl(_) => {
                "has a server that is not a URL"
            }
            KubeconfigError::ParseProxyUrl(_) => "has a proxy-url that is not a URL",
            KubeconfigError::LoadCertificateAuthority(_)
            | KubeconfigError::ParseCertificates(_) => {
                "has certificate-authority-data that is not base64-encoded PEM"
            }
            KubeconfigError::LoadClientCertificate(_) | KubeconfigError::LoadClientKey(_) => {
                "has client-certificate-data or client-key-data that is not base64-encoded PEM"
            }
            _ => "cannot be turned into a client configuration",
        }
        .to_owned()
    })?;
    let url = &config.cluster_url;
    if !matches!(url.scheme_str(), Some("http" | "https")) || url.host().is_none() {
        return Err("has a server that is not an http or https URL with a host".to_owned());
    }
    // Only HTTP proxies are built in; kube refuses others when it builds the client.
    if let Some(proxy) = &config.proxy_url
        && !matches!(proxy.scheme_str(), Some("http" | "https"))
    {
        return Err(
            "uses a proxy (proxy-url, or the sidecar's HTTPS_PROXY) that is not http or https"
                .to_owned(),
        );
    }
    if config.root_cert.as_ref().is_some_and(Vec::is_empty) {
        return Err("has certificate-authority-data that holds no PEM certificate".to_owned());
    }
    // kube turns the token into a header with `expect`: a line break in it (a `|` block
    // in the Secret, say) would panic when the client is built.
    if let Some(token) = &config.auth_info.token
        && HeaderValue::from_str(&format!("Bearer {}", token.expose_secret())).is_err()
    {
        return Err("has a token that cannot be sent as an HTTP header (a line break or control character in it?)".to_owned());
    }
    // The whole client stack as the SPI builds it, short of the request buffer (which
    // needs a runtime): TLS identity and roots, server name, auth and impersonation headers.
    let unbuildable = || {
        "has settings no client can be built from (such as an invalid tls-server-name)".to_owned()
    };
    match stacks.build(config) {
        Ok(stack) => {
            if let Some(digest) = digest {
                stacks.remember(digest, stack);
            }
            Ok(())
        }
        Err(Some(kube::Error::RustlsTls(RustlsTlsError::InvalidServerName(_)))) => {
            Err(unbuildable())
        }
        Err(Some(kube::Error::RustlsTls(_))) => Err(
            "has a client certificate, client key or certificate authority that TLS cannot use"
                .to_owned(),
        ),
        Err(Some(kube::Error::HttpError(_))) => Err(
            "has impersonation settings (as, as-groups, as-user-extra) that cannot be sent as HTTP headers"
                .to_owned(),
        ),
        Err(_) => Err(unbuildable()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::client_stack::KUBECONFIGS_KEPT;
    use crate::testing::{TOKEN, kubeconfig_yaml};

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
            .collect()
    }

    #[test]
    fn valid_secret_resolves_the_context_namespace() {
        let kc = kubeconfig_yaml(Some("vms"));
        let secret = ProviderSecret::from_data(&data(&[
            ("kubeconfig", kc.as_bytes()),
            ("userData", b"#cloud-config\n"),
        ]))
        .unwrap();
        assert_eq!(secret.access.namespace, "vms");
        let kc = kubeconfig_yaml(None);
        let secret =
            ProviderSecret::from_data(&data(&[("kubeconfig", kc.as_bytes()), ("userData", b"x")]))
                .unwrap();
        assert_eq!(secret.access.namespace, "default");
        let access = ClusterAccess::from_data(&data(&[("kubeconfig", kc.as_bytes())])).unwrap();
        assert_eq!(access.namespace, "default");
    }

    #[test]
    fn missing_keys_are_each_named() {
        let err = ProviderSecret::from_data(&BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("secret.data.kubeconfig: Required value"),
            "{err}"
        );
        assert!(
            err.contains("secret.data.userData: Required value"),
            "{err}"
        );
    }

    #[test]
    fn invalid_kubeconfig_is_named_without_quoting_it() {
        for bad in [
            "{not yaml: [".to_owned(),
            format!("token: {TOKEN}\nclusters: 7"),
            kubeconfig_yaml(None).replace("current-context: infra", "current-context: other"),
            kubeconfig_yaml(None).replace("server: https://127.0.0.1:6443", "server: ''"),
        ] {
            let err = ProviderSecret::from_data(&data(&[
                ("kubeconfig", bad.as_bytes()),
                ("userData", b"x"),
            ]))
            .unwrap_err()
            .to_string();
            assert!(
                err.starts_with("secret.data.kubeconfig: Invalid value"),
                "{err}"
            );
            assert!(!err.contains(TOKEN), "{err}");
        }
        let err =
            ProviderSecret::from_data(&data(&[("kubeconfig", &[0xff, 0xfe]), ("userData", b"x")]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("not UTF-8"), "{err}");
    }

    /// The validation the driver runs on every call of every machine builds kube's client
    /// stack (TLS) once per kubeconfig content: again only when the content changes.
    #[test]
    fn the_client_stack_is_built_once_per_kubeconfig_content() {
        let stacks = ClientStacks::default();
        let validate = |yaml: &str| {
            ClusterAccess::from_data_in(&data(&[("kubeconfig", yaml.as_bytes())]), &stacks).unwrap()
        };
        let kc = kubeconfig_yaml(Some("vms"));
        for _ in 0..3 {
            assert_eq!(validate(&kc).namespace, "vms");
        }
        assert_eq!(stacks.builds(), 1);
        // The same content laid out differently is the same kubeconfig.
        validate(&format!("# rotated by nobody\n{kc}"));
        assert_eq!(stacks.builds(), 1);

        let rotated = kc.replace(TOKEN, "another-token");
        validate(&rotated);
        validate(&rotated);
        assert_eq!(
            stacks.builds(),
            2,
            "a changed token is validated again, once"
        );
        validate(&kc);
        assert_eq!(stacks.builds(), 2);
        assert_eq!(stacks.len(), 2);
        let shown = format!("{stacks:?}");
        assert!(
            !shown.contains(TOKEN) && !shown.contains("another-token"),
            "{shown}"
        );
    }

    /// Only successes are remembered: a kubeconfig kube cannot build a client from is
    /// built and rejected on every call, with the same field-named error.
    #[test]
    fn a_failing_kubeconfig_is_not_remembered() {
        let stacks = ClientStacks::default();
        let failing = kubeconfig_yaml(None).replace(
            "insecure-skip-tls-verify: true",
            "tls-server-name: 'not a server name'",
        );
        let validate = || {
            ClusterAccess::from_data_in(&data(&[("kubeconfig", failing.as_bytes())]), &stacks)
                .unwrap_err()
                .to_string()
        };
        let first = validate();
        let second = validate();
        assert!(
            first.starts_with("secret.data.kubeconfig: Invalid value"),
            "{first}"
        );
        assert!(first.contains("tls-server-name"), "{first}");
        assert!(!first.contains(TOKEN), "{first}");
        assert_eq!(first, second);
        assert_eq!(stacks.builds(), 2, "tried again, not remembered");
        assert_eq!(stacks.len(), 0);
    }

    #[test]
    fn validated_kubeconfigs_are_kept_up_to_the_bound() {
        let bound = KUBECONFIGS_KEPT.get();
        let stacks = ClientStacks::default();
        let validate = |token: &str| {
            let kc = kubeconfig_yaml(None).replace(TOKEN, token);
            ClusterAccess::from_data_in(&data(&[("kubeconfig", kc.as_bytes())]), &stacks).unwrap();
        };
        for i in 0..=bound {
            validate(&format!("t{i}"));
        }
        assert_eq!(stacks.len(), bound);
        assert_eq!(stacks.builds(), bound + 1);
        validate(&format!("t{bound}"));
        assert_eq!(stacks.builds(), bound + 1, "the last is kept");
        validate("t0");
        assert_eq!(
            stacks.builds(),
            bound + 2,
            "the least recently used was evicted"
        );
    }

    #[test]
    fn oversized_user_data_is_rejected() {
        let kc = kubeconfig_yaml(None);
        let big = vec![b'a'; MAX_USER_DATA_BYTES + 1];
        let err =
            ProviderSecret::from_data(&data(&[("kubeconfig", kc.as_bytes()), ("userData", &big)]))
                .unwrap_err()
                .to_string();
        assert!(err.contains("secret.data.userData: Too long"), "{err}");
    }

    #[test]
    fn debug_output_is_redacted() {
        let kc = kubeconfig_yaml(None);
        let secret = ProviderSecret::from_data(&data(&[
            ("kubeconfig", kc.as_bytes()),
            ("userData", b"#cloud-config\npassword: hunter2\n"),
        ]))
        .unwrap();
        let shown = format!("{secret:?}");
        assert!(
            !shown.contains(TOKEN) && !shown.contains("hunter2"),
            "{shown}"
        );
    }
}
