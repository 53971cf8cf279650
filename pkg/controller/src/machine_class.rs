//! MachineClasses: the finalizer that keeps a class while machines use it, and the
//! lookup every machine reconcile starts with.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::ListParams;
use tracing::info;

use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::context::{Context, Requeue, is_not_found, retry};
use crate::finalizers::{has_finalizer, set_finalizer};
use crate::names::MCM_FINALIZER;
use crate::secrets::{reconcile_secret, referenced_secrets, secret_data};

/// The class a machine names and the merged secret data, or why the machine must wait.
pub async fn class_of(ctx: &Context, machine: &Machine) -> Result<(MachineClass, Secret), Requeue> {
    let name = &machine.spec.class.name;
    let class = match ctx.machine_classes().get(name).await {
        Ok(class) => class,
        Err(error) if is_not_found(&error) => {
            return Err(Requeue::failure(
                retry::LONG,
                format!("MachineClass {}/{name} not found", ctx.namespace()),
            ));
        }
        Err(error) => {
            return Err(Requeue::failure(
                retry::SHORT,
                format!("getting MachineClass {name:?}: {error}"),
            ));
        }
    };
    let secret = secret_data(ctx, &class).await.map_err(|error| {
        Requeue::failure(
            retry::LONG,
            format!("secret data of MachineClass {name:?}: {error}"),
        )
    })?;
    if !has_finalizer(&class, MCM_FINALIZER) {
        return Err(Requeue::failure(
            retry::SHORT,
            format!(
                "The machine class {name} has no finalizers set. So not reconciling the machine."
            ),
        ));
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
pub async fn reconcile_machine_class(ctx: &Context, class: &MachineClass) -> Requeue {
    let name = class.name_any();
    let machines = match machines_of_class(ctx, &name).await {
        Ok(machines) => machines,
        Err(error) => {
            return Requeue::failure(
                retry::SHORT,
                format!("listing machines of class {name:?}: {error}"),
            );
        }
    };
    if class.metadata.deletion_timestamp.is_some() && !machines.is_empty() {
        return Requeue::failure(
            retry::MEDIUM,
            "Retry as machine objects are still referring the machineclass",
        );
    }
    let wanted = !machines.is_empty();
    let requeue = match set_finalizer(&ctx.machine_classes(), class, MCM_FINALIZER, wanted).await {
        Ok(Some(_)) => {
            info!(machine_class = %name, finalizer = wanted, "machine class finalizer updated");
            Requeue::after(retry::SHORT, "machine class finalizer updated")
        }
        Ok(None) => Requeue::after(retry::LONG, "machine class in sync"),
        Err(error) => return Requeue::api_failure(&error, "machine class finalizer update failed"),
    };
    // The class's Secrets follow at once: their finalizer depends on this class.
    for (namespace, secret_name) in referenced_secrets(class) {
        match ctx.secrets_in(&namespace).get_opt(&secret_name).await {
            Ok(Some(secret)) => {
                let secret_requeue = reconcile_secret(ctx, &secret).await;
                if secret_requeue.failed {
                    return secret_requeue;
                }
            }
            Ok(None) => {}
            Err(error) => {
                return Requeue::failure(
                    retry::SHORT,
                    format!("getting secret {secret_name:?}: {error}"),
                );
            }
        }
    }
    requeue
}
