//! MachineClasses: the finalizer that keeps a class while machines use it, and the
//! lookup every machine reconcile starts with.

use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use tracing::info;

use mcm_provider_kubevirt::mcm::{Machine, MachineClass};

use crate::context::Context;
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
    let class = match ctx.machine_class(name).await {
        Ok(Some(class)) => class,
        Ok(None) => {
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
    if let Some(node_template) = &class.node_template {
        invalid_node_template(node_template).map_or(Ok(()), |problems| {
            Err(ClassError::InvalidNodeTemplate {
                name: name.clone(),
                problems,
            })
        })?;
    }
    Ok((class, secret))
}

/// MCM's nodeTemplate validation (the cluster autoscaler scales from zero with it): the
/// capacity names cpu, gpu and memory; instance type, region and zone are set.
pub fn invalid_node_template(node_template: &serde_json::Value) -> Option<String> {
    let mut problems = Vec::new();
    let capacity = &node_template["capacity"];
    for resource in ["cpu", "gpu", "memory"] {
        if capacity.get(resource).is_none() {
            problems.push(format!("nodeTemplate.capacity.{resource}: Required value"));
        }
    }
    for field in ["instanceType", "region", "zone"] {
        if node_template[field].as_str().unwrap_or_default().is_empty() {
            problems.push(format!("nodeTemplate.{field}: Required value"));
        }
    }
    (!problems.is_empty()).then(|| problems.join(", "))
}

/// The machines referring to a class.
pub async fn machines_of_class(
    ctx: &Context,
    class: &str,
) -> Result<Vec<Arc<Machine>>, kube::Error> {
    let machines = ctx.list_machines().await?;
    Ok(machines
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
            .secret(&namespace, &secret_name)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_node_template_needs_capacity_instance_type_region_and_zone() {
        let complete = json!({"capacity": {"cpu": "2", "gpu": "0", "memory": "4Gi"},
                              "instanceType": "m1", "region": "r1", "zone": "z1"});
        assert_eq!(invalid_node_template(&complete), None);
        let partial = json!({"capacity": {"cpu": "2", "memory": "4Gi"}, "instanceType": "m1", "region": "r1"});
        assert_eq!(
            invalid_node_template(&partial).as_deref(),
            Some("nodeTemplate.capacity.gpu: Required value, nodeTemplate.zone: Required value")
        );
    }
}
