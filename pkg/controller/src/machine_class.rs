//! MachineClasses: the finalizer that keeps a class while machines use it, and the
//! lookup every machine reconcile starts with.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::ListParams;
use tracing::info;

use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::context::{Context, is_not_found};
use crate::error::{ApiError, ClassError, FinalizerError, ReconcileError, Requeue, retry};
use crate::names::MCM_FINALIZER;
use crate::secrets::{reconcile_secret, referenced_secrets, secret_data};
use crate::util::finalizers::{has_finalizer, set_finalizer};

/// The class a machine names and the merged secret data, or why the machine must wait.
pub async fn class_of(
    ctx: &Context,
    machine: &Machine,
) -> Result<(MachineClass, Secret), ClassError> {
    let name = &machine.spec.class.name;
    let class = match ctx.machine_classes().get(name).await {
        Ok(class) => class,
        Err(error) if is_not_found(&error) => {
            return Err(ClassError::NotFound {
                namespace: ctx.namespace().to_owned(),
                name: name.clone(),
            });
        }
        Err(error) => {
            return Err(ClassError::Get(ApiError::new(
                format!("getting MachineClass {name:?}"),
                error,
            )));
        }
    };
    let secret = secret_data(ctx, &class).await.map_err(|error| {
        ClassError::SecretData(ApiError::new(
            format!("secret data of MachineClass {name:?}"),
            error,
        ))
    })?;
    if !has_finalizer(&class, MCM_FINALIZER) {
        return Err(ClassError::NoFinalizer { name: name.clone() });
    }
    Ok((class, secret))
}

/// Names of the machines referring to a class.
pub async fn machines_of_class(ctx: &Context, class: &str) -> Result<Vec<Machine>, kube::Error> {
    let machines = ctx.machines().list(&ListParams::default()).await?;
    Ok(machines
        .items
        .into_iter()
        .filter(|m| m.spec.class.name == class)
        .collect())
}

/// MCM's class reconcile: the finalizer is present exactly while machines refer to the class.
pub async fn reconcile_machine_class(
    ctx: &Context,
    class: &MachineClass,
) -> Result<Requeue, ReconcileError> {
    let name = class.name_any();
    let failed = |error| ReconcileError::MachineClass(FinalizerError::Api(error));
    let machines = machines_of_class(ctx, &name).await.map_err(|error| {
        failed(ApiError::new(
            format!("listing machines of class {name:?}"),
            error,
        ))
    })?;
    if class.metadata.deletion_timestamp.is_some() && !machines.is_empty() {
        return Err(ReconcileError::MachineClass(
            FinalizerError::StillReferenced(
                "Retry as machine objects are still referring the machineclass".to_owned(),
            ),
        ));
    }
    let wanted = !machines.is_empty();
    let updated = set_finalizer(&ctx.machine_classes(), class, MCM_FINALIZER, wanted)
        .await
        .map_err(|error| {
            failed(ApiError::new(
                "machine class finalizer update failed",
                error,
            ))
        })?;
    let requeue = if updated.is_some() {
        info!(machine_class = %name, finalizer = wanted, "machine class finalizer updated");
        Requeue::after(retry::SHORT, "machine class finalizer updated")
    } else {
        Requeue::after(retry::LONG, "machine class in sync")
    };
    // The class's Secrets follow at once: their finalizer depends on this class.
    for (namespace, secret_name) in referenced_secrets(class) {
        let secret = ctx
            .secrets_in(&namespace)
            .get_opt(&secret_name)
            .await
            .map_err(|error| {
                failed(ApiError::new(
                    format!("getting secret {secret_name:?}"),
                    error,
                ))
            })?;
        if let Some(secret) = secret {
            reconcile_secret(ctx, &secret).await?;
        }
    }
    Ok(requeue)
}
