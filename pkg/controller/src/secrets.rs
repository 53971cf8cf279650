//! The Secret data handed to the driver, and the finalizer on Secrets that MachineClasses
//! reference (so a referenced Secret cannot vanish under running machines).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use tracing::{debug, info};

use mcm_provider_kubevirt::mcm::{MachineClass, SecretReference};

use crate::context::Context;
use crate::error::{ApiError, FinalizerError, ReconcileError, Requeue, retry};
use crate::names::SECRET_FINALIZER;
use crate::util::finalizers::set_finalizer;

fn references(class: &MachineClass) -> impl Iterator<Item = &SecretReference> {
    class
        .secret_ref
        .iter()
        .chain(class.credentials_secret_ref.iter())
}

fn reference_key<'a>(
    class: &'a MachineClass,
    reference: &'a SecretReference,
) -> (&'a str, &'a str) {
    let namespace = reference
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .or(class.metadata.namespace.as_deref())
        .unwrap_or_default();
    (namespace, reference.name.as_deref().unwrap_or_default())
}

/// `(namespace, name)` of the Secrets a class references.
pub fn referenced_secrets(class: &MachineClass) -> Vec<(String, String)> {
    references(class)
        .map(|r| reference_key(class, r))
        .filter(|(_, name)| !name.is_empty())
        .map(|(ns, name)| (ns.to_owned(), name.to_owned()))
        .collect()
}

/// The merged data of the class's `secretRef` and `credentialsSecretRef` (the latter wins),
/// as MCM hands it to the driver: data only, a missing Secret contributing nothing.
pub async fn secret_data(ctx: &Context, class: &MachineClass) -> Result<Secret, kube::Error> {
    let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
    for reference in references(class) {
        let (namespace, name) = reference_key(class, reference);
        if name.is_empty() {
            continue;
        }
        match ctx.secret(namespace, name).await? {
            Some(secret) => data.extend(secret.data.unwrap_or_default()),
            None => debug!(secret = name, "referenced secret not found; skipped"),
        }
    }
    Ok(Secret {
        data: Some(data),
        ..Default::default()
    })
}

/// Keeps the Secret finalizer exactly while some MachineClass of our namespace references it.
pub async fn reconcile_secret(ctx: &Context, secret: &Secret) -> Result<Requeue, ReconcileError> {
    let name = secret.name_any();
    let namespace = secret
        .namespace()
        .unwrap_or_else(|| ctx.namespace().to_owned());
    let failed = |error| ReconcileError::Secret(FinalizerError::Api(error));
    let classes = ctx
        .list_machine_classes()
        .await
        .map_err(|error| failed(ApiError::new("listing MachineClasses", error)))?;
    let referenced = classes.iter().any(|class| {
        references(class).any(|r| reference_key(class, r) == (namespace.as_str(), name.as_str()))
    });
    if secret.metadata.deletion_timestamp.is_some() && referenced {
        return Err(ReconcileError::Secret(FinalizerError::StillReferenced(
            format!("Secret {name:?} is being deleted but MachineClasses still reference it"),
        )));
    }
    let updated = set_finalizer(
        &ctx.secrets_in(&namespace),
        secret,
        SECRET_FINALIZER,
        referenced,
    )
    .await
    .map_err(|error| failed(ApiError::new("secret finalizer update failed", error)))?;
    if updated.is_some() {
        info!(secret = %name, referenced, "secret finalizer updated");
        Ok(Requeue::after(retry::LONG, "secret finalizer updated"))
    } else {
        Ok(Requeue::after(retry::LONG, "secret finalizer in place"))
    }
}
