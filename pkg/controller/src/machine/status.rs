//! Writing `Machine.status` through the `/status` subresource, skipped when nothing but
//! timestamps and a similar description would change (MCM's `machineStatusUpdate`), never
//! dropping status fields this sidecar does not know, and the metadata writes the
//! flows make (finalizers, labels, providerID) as optimistic-concurrency replaces.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::PostParams;
use serde_json::Value;
use tracing::{debug, warn};

use mcm_provider_kubevirt::mcm::{CurrentStatus, LastOperation, Machine, MachineStatus};

use crate::context::Context;
use crate::error::{ApiError, Requeue, retry};
use crate::names::{NODE_LABEL, phase};
use crate::util::similarity::similarity_ratio;

/// MCM rewrites a similar status anyway once its lastOperation is this old.
const FORCE_REWRITE_AFTER: Duration = Duration::from_secs(30 * 60);

pub fn now() -> Time {
    Time(Timestamp::now())
}

pub fn last_operation(description: impl Into<String>, state: &str, type_: &str) -> LastOperation {
    last_operation_at(Timestamp::now(), description, state, type_)
}

/// A lastOperation stamped `now`: for decisions taken on a given clock.
pub fn last_operation_at(
    now: Timestamp,
    description: impl Into<String>,
    state: &str,
    type_: &str,
) -> LastOperation {
    LastOperation {
        description: Some(description.into()),
        error_code: None,
        last_update_time: Some(Time(now)),
        state: Some(state.to_owned()),
        type_: Some(type_.to_owned()),
        extra: Default::default(),
    }
}

pub fn current_status(phase: &str, timeout_active: bool) -> CurrentStatus {
    current_status_at(Timestamp::now(), phase, timeout_active)
}

pub fn current_status_at(now: Timestamp, phase: &str, timeout_active: bool) -> CurrentStatus {
    CurrentStatus {
        phase: Some(phase.to_owned()),
        timeout_active: timeout_active.then_some(true),
        last_update_time: Some(Time(now)),
        preserve_expiry_time: None,
        extra: Default::default(),
    }
}

pub fn status_of(machine: &Machine) -> MachineStatus {
    machine.status.clone().unwrap_or_default()
}

pub fn phase_of(machine: &Machine) -> &str {
    machine
        .status
        .as_ref()
        .and_then(|s| s.current_status.as_ref())
        .and_then(|c| c.phase.as_deref())
        .unwrap_or_default()
}

/// The machine's `node` label: the Node backing it, empty before creation recorded it.
pub fn node_name_of(machine: &Machine) -> String {
    machine
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(NODE_LABEL))
        .cloned()
        .unwrap_or_default()
}

pub fn description_of(machine: &Machine) -> &str {
    machine
        .status
        .as_ref()
        .and_then(|s| s.last_operation.as_ref())
        .and_then(|o| o.description.as_deref())
        .unwrap_or_default()
}

/// The persisted lastOperation type, Delete when none (what the deletion flow writes).
pub fn op_type_of(machine: &Machine) -> String {
    machine
        .status
        .as_ref()
        .and_then(|s| s.last_operation.as_ref())
        .and_then(|o| o.type_.clone())
        .unwrap_or_else(|| crate::names::operation::DELETE.to_owned())
}

/// MCM skips a status write whose descriptions are more than this alike (by
/// [`similarity_ratio`]): a retried cloud error differs only in its request ID.
const SIMILAR_DESCRIPTIONS: f64 = 0.75;

/// The parts of lastOperation and currentStatus MCM compares: no timestamps, and the
/// descriptions dropped when they are similar. Empty strings and `false` are "unset", as
/// in Go's zero values.
fn comparable(
    status: &MachineStatus,
    similar_descriptions: bool,
) -> (LastOperation, CurrentStatus) {
    let set = |text: &Option<String>| text.clone().filter(|t| !t.is_empty());
    let mut operation = status.last_operation.clone().unwrap_or_default();
    operation.last_update_time = None;
    operation.description = if similar_descriptions {
        None
    } else {
        set(&operation.description)
    };
    operation.error_code = set(&operation.error_code);
    operation.state = set(&operation.state);
    operation.type_ = set(&operation.type_);
    let mut current = status.current_status.clone().unwrap_or_default();
    current.last_update_time = None;
    current.phase = set(&current.phase);
    current.timeout_active = current.timeout_active.filter(|active| *active);
    (operation, current)
}

/// MCM's `isMachineStatusSimilar`: writing `new` over `old` would change nothing but
/// timestamps and a description more than 75% alike, and neither lastOperation is older
/// than 30 minutes (a stale one is rewritten regardless). lastKnownState and conditions
/// are not compared, as in MCM.
pub fn is_similar(old: &MachineStatus, new: &MachineStatus) -> bool {
    let stale = |status: &MachineStatus| {
        let updated = status
            .last_operation
            .as_ref()
            .and_then(|o| o.last_update_time.as_ref());
        updated.is_none() || crate::machine::settings::elapsed_since(updated) > FORCE_REWRITE_AFTER
    };
    if stale(old) || stale(new) {
        return false;
    }
    let description = |status: &MachineStatus| {
        status
            .last_operation
            .as_ref()
            .and_then(|o| o.description.clone())
            .unwrap_or_default()
    };
    let similar = similarity_ratio(&description(old), &description(new)) > SIMILAR_DESCRIPTIONS;
    comparable(old, similar) == comparable(new, similar)
}

/// Copies into `new` the fields of `stored` this sidecar does not know (at the top level,
/// in lastOperation and in currentStatus) that `new` does not set: a newer MCM wrote them,
/// and a status built afresh from known fields would otherwise erase them. The
/// preservation's `preserveExpiryTime` is carried too, as MCM carries it in every status
/// it builds, except into Terminating (deletion ends the preservation); preservation
/// itself sets and clears it with a patch (`preservation::write_expiry`).
pub fn keep_unknown_fields(stored: Option<&MachineStatus>, new: &mut MachineStatus) {
    fn keep(stored: &BTreeMap<String, Value>, new: &mut BTreeMap<String, Value>) {
        for (key, value) in stored {
            new.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    let Some(stored) = stored else { return };
    keep(&stored.extra, &mut new.extra);
    // Only the creation flow sets addresses (without a target cluster); no write drops them.
    if new.addresses.is_none() {
        new.addresses = stored.addresses.clone();
    }
    if let (Some(old), Some(op)) = (&stored.last_operation, &mut new.last_operation) {
        keep(&old.extra, &mut op.extra);
    }
    if let (Some(old), Some(current)) = (&stored.current_status, &mut new.current_status) {
        keep(&old.extra, &mut current.extra);
        if current.preserve_expiry_time.is_none()
            && current.phase.as_deref() != Some(phase::TERMINATING)
        {
            current.preserve_expiry_time = old.preserve_expiry_time.clone();
        }
    }
}

/// Replaces the machine's status with `status`, via `/status` with the machine's
/// resourceVersion, keeping the stored status's unknown fields. Returns the stored machine.
pub async fn write_status(
    ctx: &Context,
    machine: &Machine,
    mut status: MachineStatus,
) -> Result<Machine, kube::Error> {
    keep_unknown_fields(machine.status.as_ref(), &mut status);
    let mut updated = machine.clone();
    updated.status = Some(status);
    let name = machine.name_any();
    ctx.machines()
        .replace_status(&name, &PostParams::default(), &updated)
        .await
}

/// The status MCM's `machineStatusUpdate` writes: lastOperation, currentStatus and
/// lastKnownState set, the stored unknown fields kept.
pub fn updated_status(
    machine: &Machine,
    operation: LastOperation,
    current: CurrentStatus,
    last_known_state: Option<String>,
) -> MachineStatus {
    let old = status_of(machine);
    let mut new = old.clone();
    new.last_operation = Some(operation);
    new.current_status = Some(current);
    new.last_known_state = last_known_state;
    keep_unknown_fields(Some(&old), &mut new);
    new
}

/// MCM's `machineStatusUpdate`: sets lastOperation, currentStatus and lastKnownState,
/// unless that changes nothing; answers whether it wrote. The requeue is the caller's
/// unless the write failed.
pub async fn update_machine_status(
    ctx: &Context,
    machine: &Machine,
    operation: LastOperation,
    current: CurrentStatus,
    last_known_state: Option<String>,
) -> Result<bool, ApiError> {
    let new = updated_status(machine, operation, current, last_known_state);
    write_if_changed(ctx, machine, new).await
}

/// Writes `new` (an [`updated_status`] of `machine`) unless MCM's similarity rule takes it
/// for the stored status; answers whether it wrote.
pub async fn write_if_changed(
    ctx: &Context,
    machine: &Machine,
    new: MachineStatus,
) -> Result<bool, ApiError> {
    let name = machine.metadata.name.as_deref().unwrap_or_default();
    // Compared with the stored unknown fields in: they are part of what would be written.
    if is_similar(&status_of(machine), &new) {
        debug!(machine = name, "status unchanged; not written");
        return Ok(false);
    }
    match write_status(ctx, machine, new).await {
        Ok(_) => Ok(true),
        Err(error) => {
            warn!(machine = name, "status update failed: {error}");
            Err(ApiError::new("Machine/status UPDATE failed", error))
        }
    }
}

/// Replaces the machine (metadata and spec) with optimistic concurrency.
pub async fn replace_machine(ctx: &Context, machine: &Machine) -> Result<Machine, ApiError> {
    let name = machine.name_any();
    ctx.machines()
        .replace(&name, &PostParams::default(), machine)
        .await
        .map_err(|error| ApiError::new("Machine UPDATE failed", error))
}

/// Merges `annotations` (null removes a key) into the Machine's, leaving the rest of it
/// alone; `action` names the write in the error.
pub async fn patch_machine_annotations(
    ctx: &Context,
    machine: &Machine,
    annotations: Value,
    action: &str,
) -> Result<Machine, ApiError> {
    let patch = serde_json::json!({"metadata": {"annotations": annotations}});
    ctx.machines()
        .patch(
            &machine.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(patch),
        )
        .await
        .map_err(|error| ApiError::new(action, error))
}

/// The short requeue MCM answers after a successful write, to continue from the new state.
pub fn continue_after_write(reason: impl Into<String>) -> Requeue {
    Requeue::after(retry::SHORT, reason)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::names::state;

    fn status(description: &str, phase_name: &str) -> MachineStatus {
        MachineStatus {
            last_operation: Some(last_operation(description, state::PROCESSING, "Create")),
            current_status: Some(current_status(phase_name, true)),
            ..Default::default()
        }
    }

    #[test]
    fn timestamps_alone_do_not_make_a_change() {
        let old = status("Creating machine on cloud provider", phase::PENDING);
        let mut new = status("Creating machine on cloud provider", phase::PENDING);
        new.last_operation.as_mut().unwrap().last_update_time = Some(Time(
            Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(5),
        ));
        assert!(is_similar(&old, &new));
        assert!(!is_similar(&old, &status("other", phase::PENDING)));
        assert!(!is_similar(
            &old,
            &status("Creating machine on cloud provider", phase::RUNNING)
        ));
    }

    fn with_state(
        description: &str,
        op_state: &str,
        op_type: &str,
        phase_name: &str,
    ) -> MachineStatus {
        MachineStatus {
            last_operation: Some(last_operation(description, op_state, op_type)),
            current_status: Some(current_status(phase_name, false)),
            ..Default::default()
        }
    }

    #[test]
    fn descriptions_more_than_75_percent_alike_are_similar() {
        let failed = |description: &str| {
            with_state(
                description,
                state::FAILED,
                "Create",
                phase::CRASH_LOOP_BACK_OFF,
            )
        };
        // A retried cloud error with a new request ID: one write, not one per retry.
        let old = failed("Cloud provider message - quota exceeded (request id 4f1c2a77-0b1e)");
        let new = failed("Cloud provider message - quota exceeded (request id 9d03e6b1-77c2)");
        assert!(is_similar(&old, &new));
        // Strictly more than 0.75: one byte in four differing is not similar.
        assert!(!is_similar(&failed("abcd"), &failed("abce")));
        assert!(is_similar(&failed("abcde"), &failed("abcdX")));
        // A different message is a change.
        assert!(!is_similar(
            &old,
            &failed("Cloud provider message - VM image not found")
        ));
    }

    #[test]
    fn state_type_phase_and_error_code_always_count() {
        let base = with_state(
            "Drain in progress - 3 pods",
            state::PROCESSING,
            "Delete",
            phase::TERMINATING,
        );
        let same = with_state(
            "Drain in progress - 2 pods",
            state::PROCESSING,
            "Delete",
            phase::TERMINATING,
        );
        assert!(is_similar(&base, &same));
        for other in [
            with_state(
                "Drain in progress - 2 pods",
                state::FAILED,
                "Delete",
                phase::TERMINATING,
            ),
            with_state(
                "Drain in progress - 2 pods",
                state::PROCESSING,
                "Create",
                phase::TERMINATING,
            ),
            with_state(
                "Drain in progress - 2 pods",
                state::PROCESSING,
                "Delete",
                phase::FAILED,
            ),
        ] {
            assert!(!is_similar(&base, &other), "{other:?}");
        }
        let mut coded = same.clone();
        coded.last_operation.as_mut().unwrap().error_code = Some("Internal".into());
        assert!(!is_similar(&base, &coded));
        let mut active = same.clone();
        active.current_status.as_mut().unwrap().timeout_active = Some(true);
        assert!(!is_similar(&base, &active));
        // Go's zero values: an empty error code and `false` are the same as unset.
        let mut zero = same;
        zero.last_operation.as_mut().unwrap().error_code = Some(String::new());
        zero.current_status.as_mut().unwrap().timeout_active = Some(false);
        assert!(is_similar(&base, &zero));
    }

    #[test]
    fn unknown_status_fields_survive_a_fresh_status() {
        let stored: MachineStatus = serde_json::from_value(serde_json::json!({
            "addresses": [{"type": "InternalIP", "address": "10.0.0.7"}],
            "currentStatus": {"phase": "Running", "preserveExpiryTime": "2030-01-01T00:00:00Z"},
            "lastOperation": {"type": "HealthCheck", "retries": 3}
        }))
        .unwrap();
        let mut new = status("Machine m is unhealthy", phase::UNKNOWN);
        new.current_status
            .as_mut()
            .unwrap()
            .extra
            .insert("somethingSetNow".into(), "kept".into());
        keep_unknown_fields(Some(&stored), &mut new);
        let json = serde_json::to_value(&new).unwrap();
        assert_eq!(json["addresses"][0]["address"], "10.0.0.7");
        assert_eq!(
            json["currentStatus"]["preserveExpiryTime"],
            "2030-01-01T00:00:00Z"
        );
        assert_eq!(json["currentStatus"]["phase"], "Unknown");
        assert_eq!(json["currentStatus"]["somethingSetNow"], "kept");
        assert_eq!(json["lastOperation"]["retries"], 3);
        assert_eq!(
            json["lastOperation"]["description"],
            "Machine m is unhealthy"
        );
        // Deletion ends a preservation: Terminating does not carry the expiry.
        let mut terminating = status("deleting", phase::TERMINATING);
        keep_unknown_fields(Some(&stored), &mut terminating);
        assert_eq!(
            terminating.current_status.unwrap().preserve_expiry_time,
            None
        );
    }

    #[test]
    fn old_or_timeless_statuses_are_rewritten() {
        let mut old = status("x", phase::PENDING);
        old.last_operation.as_mut().unwrap().last_update_time = Some(Time(
            Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(31 * 60),
        ));
        assert!(!is_similar(&old, &status("x", phase::PENDING)));
        assert!(!is_similar(
            &MachineStatus::default(),
            &MachineStatus::default()
        ));
    }
}
