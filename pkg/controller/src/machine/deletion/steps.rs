//! The deletion steps and their decisions, without I/O. The step is persisted in
//! `lastOperation.description` (MCM's wire format: other components match on it), parsed
//! once into a [`DeletionStep`]; each step ends in a [`Transition`] naming the next one.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::VolumeAttachment;

use mcm_provider_kubevirt::driver::{DeleteMachineResponse, GetMachineStatusResponse};
use mcm_provider_kubevirt::{MachineCode, MachineError};

use crate::error::retry;
use crate::machine::deletion::drain::DrainProgress;
use crate::machine::deletion::drain_plan::PDB_RETRY;
use crate::names::{operation, state, step};

/// Where a deleting machine stands.
/// In MCM's order: a later step compares greater.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeletionStep {
    /// Not yet Terminating, or a description naming no step: set the phase first.
    Terminate,
    GetVmStatus,
    Drain,
    DeleteVolumeAttachments,
    DeleteVm,
    DeleteNode,
    RemoveFinalizer,
}

impl DeletionStep {
    /// The steps as MCM matches them, in its order (a description may quote an earlier
    /// marker in an error message; the first match wins, as in MCM's if-chain).
    const ORDER: [DeletionStep; 6] = [
        DeletionStep::GetVmStatus,
        DeletionStep::Drain,
        DeletionStep::DeleteVolumeAttachments,
        DeletionStep::DeleteVm,
        DeletionStep::DeleteNode,
        DeletionStep::RemoveFinalizer,
    ];

    /// The step a persisted description names; [`DeletionStep::Terminate`] when none.
    pub fn parse(description: &str) -> Self {
        Self::ORDER
            .into_iter()
            .find(|s| description.contains(s.marker()))
            .unwrap_or(DeletionStep::Terminate)
    }

    /// The text MCM persists for the step.
    pub fn marker(self) -> &'static str {
        match self {
            DeletionStep::Terminate | DeletionStep::GetVmStatus => step::GET_VM_STATUS,
            DeletionStep::Drain => step::INITIATE_DRAIN,
            DeletionStep::DeleteVolumeAttachments => step::DELETE_VOLUME_ATTACHMENTS,
            DeletionStep::DeleteVm => step::INITIATE_VM_DELETION,
            DeletionStep::DeleteNode => step::INITIATE_NODE_DELETION,
            DeletionStep::RemoveFinalizer => step::INITIATE_FINALIZER_REMOVAL,
        }
    }
}

/// What the last known state becomes with a step's write.
#[derive(Debug, Clone, PartialEq)]
pub enum KnownState {
    Keep,
    Replace(Option<String>),
}

/// A step's result to persist: the description ending in the next step's marker, the
/// operation state, and when to look again.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub description: String,
    pub state: &'static str,
    pub op_type: String,
    pub known_state: KnownState,
    pub after: Duration,
}

impl Transition {
    /// On to `next`, with `what` happened before its marker ("" for the marker alone).
    pub fn to(next: DeletionStep, what: &str) -> Self {
        let description = if what.is_empty() {
            next.marker().to_owned()
        } else {
            format!("{what} {}", next.marker())
        };
        Transition {
            description,
            state: state::PROCESSING,
            op_type: operation::DELETE.to_owned(),
            known_state: KnownState::Keep,
            after: retry::SHORT,
        }
    }

    /// The same step again after a failure.
    pub fn retry(current: DeletionStep, what: &str, after: Duration) -> Self {
        Transition {
            state: state::FAILED,
            after,
            ..Transition::to(current, what)
        }
    }

    fn after(self, after: Duration) -> Self {
        Transition { after, ..self }
    }
}

/// Whether `transition`, made by step `from`, is followed in the same reconcile without
/// being written first: it succeeded and leads to a later step. MCM writes every step and
/// requeues; most steps of a machine without a Node (or with an empty one) end at once,
/// and each of them is retry-safe, so a reconcile that stops before the write only
/// repeats, next time, the steps since the last one written.
pub fn moves_on_at_once(from: DeletionStep, transition: &Transition) -> bool {
    transition.state == state::PROCESSING && DeletionStep::parse(&transition.description) > from
}

/// GetMachineStatus's answer while looking for the node to drain.
#[derive(Debug, Clone, PartialEq)]
pub enum VmStatusDecision {
    /// The VM names its node: record it and drain it.
    Node(String),
    Next(Transition),
}

pub fn after_vm_status(found: Result<GetMachineStatusResponse, MachineError>) -> VmStatusDecision {
    let error = match found {
        Ok(found) if !found.node_name.is_empty() => return VmStatusDecision::Node(found.node_name),
        Ok(_) => return VmStatusDecision::Next(Transition::to(DeletionStep::Drain, "")),
        Err(error) => error,
    };
    let next = match error.code {
        MachineCode::Unimplemented => Transition::to(DeletionStep::Drain, ""),
        MachineCode::NotFound => Transition::to(
            DeletionStep::Drain,
            "VM was not found at provider. Moving forward to node drain.",
        ),
        MachineCode::Uninitialized => Transition::to(
            DeletionStep::Drain,
            "VM instance was not initialized. Moving forward to node drain.",
        ),
        code if retry::is_transient(code) => Transition::retry(
            DeletionStep::GetVmStatus,
            "Error occurred with decoding machine error status while getting VM status, aborting with retry.",
            retry::SHORT,
        ),
        _ => Transition::retry(
            DeletionStep::GetVmStatus,
            &format!(
                "Error occurred with decoding machine error status while getting VM status, aborting without retry. machine code: {error}"
            ),
            retry::MEDIUM,
        ),
    };
    VmStatusDecision::Next(next)
}

/// A drain pass's result, and whether the drain is forced.
#[derive(Debug, Clone, PartialEq)]
pub struct DrainDecision {
    pub next: Transition,
    /// The drain finished, forced or not (its duration is recorded, as MCM records it
    /// whenever RunDrain succeeds).
    pub completed: bool,
    /// A failed unforced drain: the reconcile fails with this.
    pub error: Option<String>,
}

pub fn after_drain(pass: Result<DrainProgress, String>, forced: bool) -> DrainDecision {
    let decided = |next, completed, error| DrainDecision {
        next,
        completed,
        error,
    };
    match pass {
        Ok(_) if forced => decided(
            Transition::to(
                DeletionStep::DeleteVolumeAttachments,
                "Force Drain successful.",
            ),
            true,
            None,
        ),
        Ok(progress) if progress.done() => decided(
            Transition::to(DeletionStep::DeleteVm, "Drain successful."),
            true,
            None,
        ),
        Ok(progress) => {
            let what = format!(
                "Drain in progress - {} pods remaining ({} blocked by PodDisruptionBudget), {} volumes attached.",
                progress.remaining, progress.blocked_by_pdb, progress.attached_volumes
            );
            let after = if progress.blocked_by_pdb > 0 {
                PDB_RETRY
            } else {
                retry::SHORT
            };
            decided(
                Transition::to(DeletionStep::Drain, &what).after(after),
                false,
                None,
            )
        }
        Err(error) if forced => decided(
            Transition::to(
                DeletionStep::DeleteVolumeAttachments,
                &format!(
                    "Drain failed due to - {error}. However, since it's a force deletion shall continue deletion of VM."
                ),
            ),
            false,
            None,
        ),
        Err(error) => decided(
            Transition::retry(
                DeletionStep::Drain,
                &format!("Drain failed due to - {error}. Will retry in next sync."),
                retry::SHORT,
            ),
            false,
            Some(error),
        ),
    }
}

/// Volume attachments of a Node that has volumes attached: none left to delete, or these.
#[derive(Debug, Clone, PartialEq)]
pub enum AttachmentDecision {
    Next(Transition),
    /// List the VolumeAttachments and delete the node's live ones.
    List,
}

/// Before listing: a missing Node or one without attached volumes needs no deletion.
pub fn volume_attachments_of(node: Option<&Node>, node_name: &str) -> AttachmentDecision {
    let Some(node) = node else {
        return AttachmentDecision::Next(Transition::to(
            DeletionStep::DeleteVm,
            &format!(
                "Skipping deleteNodeVolAttachments due to - node {node_name:?} not found. Moving to VM Deletion."
            ),
        ));
    };
    let attached = node
        .status
        .as_ref()
        .and_then(|s| s.volumes_attached.as_ref())
        .is_some_and(|v| !v.is_empty());
    if attached {
        return AttachmentDecision::List;
    }
    AttachmentDecision::Next(Transition::to(
        DeletionStep::DeleteVm,
        &format!("Node Volumes for node: {node_name} are already detached. Moving to VM Deletion."),
    ))
}

/// The node's VolumeAttachments not already being deleted.
pub fn live_attachments(attachments: Vec<VolumeAttachment>, node_name: &str) -> Vec<String> {
    attachments
        .into_iter()
        .filter(|va| va.spec.node_name == node_name && va.metadata.deletion_timestamp.is_none())
        .filter_map(|va| va.metadata.name)
        .collect()
}

/// DeleteMachine's answer: the transition, and the driver error the reconcile fails with.
pub fn after_vm_deletion(
    deleted: Result<DeleteMachineResponse, MachineError>,
) -> (Transition, Option<MachineError>) {
    match deleted {
        Ok(response) => {
            let mut next = Transition::to(DeletionStep::DeleteNode, "VM deletion was successful.");
            next.known_state =
                KnownState::Replace(Some(response.last_known_state).filter(|s| !s.is_empty()));
            (next, None)
        }
        Err(error) if error.code == MachineCode::NotFound => {
            let mut next = Transition::to(
                DeletionStep::DeleteNode,
                "VM not found. Continuing deletion flow.",
            );
            next.known_state = KnownState::Replace(None);
            (next, None)
        }
        Err(error) => {
            let (what, after) = if retry::is_transient(error.code) {
                ("However, will re-try in the next resync.", retry::SHORT)
            } else {
                ("Aborting operation.", retry::LONG)
            };
            let mut next = Transition::retry(
                DeletionStep::DeleteVm,
                &format!("VM deletion failed due to - {error}. {what}"),
                after,
            );
            next.known_state = KnownState::Replace(None);
            (next, Some(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_successful_step_forward_moves_on_without_a_write() {
        let forward = Transition::to(DeletionStep::DeleteVm, "Drain successful.");
        assert!(moves_on_at_once(DeletionStep::Drain, &forward));
        // Waiting in the same step (a drain in progress) is written, to be seen and timed.
        let waiting = Transition::to(DeletionStep::Drain, "Drain in progress - 1 pods remaining.");
        assert!(!moves_on_at_once(DeletionStep::Drain, &waiting));
        // A failure is written, to be seen and retried.
        let failed = Transition::retry(DeletionStep::DeleteNode, "Deletion failed.", retry::SHORT);
        assert!(!moves_on_at_once(DeletionStep::DeleteVm, &failed));
        // Backwards (a description naming an earlier step) is written too.
        let back = Transition::to(DeletionStep::GetVmStatus, "");
        assert!(!moves_on_at_once(DeletionStep::DeleteVm, &back));
        assert!(DeletionStep::Terminate < DeletionStep::GetVmStatus);
        assert!(DeletionStep::DeleteNode < DeletionStep::RemoveFinalizer);
    }

    #[test]
    fn every_step_parses_back_from_its_marker() {
        for step in DeletionStep::ORDER {
            assert_eq!(
                DeletionStep::parse(&Transition::to(step, "x.").description),
                step
            );
        }
        assert_eq!(
            DeletionStep::parse("something else"),
            DeletionStep::Terminate
        );
        assert_eq!(DeletionStep::parse(""), DeletionStep::Terminate);
    }

    #[test]
    fn the_first_marker_in_mcm_order_wins() {
        // A drain error quoting the VM deletion marker is still the drain step.
        let description = format!(
            "Drain failed due to - {}. {}",
            step::INITIATE_VM_DELETION,
            step::INITIATE_DRAIN
        );
        assert_eq!(DeletionStep::parse(&description), DeletionStep::Drain);
    }

    #[test]
    fn vm_status_errors_move_on_or_retry_by_code() {
        let answer = |node: &str| GetMachineStatusResponse {
            node_name: node.into(),
            provider_id: "p".into(),
            addresses: vec![],
        };
        assert_eq!(
            after_vm_status(Ok(answer("n1"))),
            VmStatusDecision::Node("n1".into())
        );
        let next = |code| match after_vm_status(Err(MachineError::new(code, "x"))) {
            VmStatusDecision::Next(next) => next,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            DeletionStep::parse(&next(MachineCode::NotFound).description),
            DeletionStep::Drain
        );
        let transient = next(MachineCode::Unavailable);
        assert_eq!(
            (transient.state, transient.after),
            (state::FAILED, retry::SHORT)
        );
        assert_eq!(
            DeletionStep::parse(&transient.description),
            DeletionStep::GetVmStatus
        );
        assert_eq!(next(MachineCode::Internal).after, retry::MEDIUM);
    }

    #[test]
    fn drain_waits_on_budgets_and_forced_drains_skip_to_volume_attachments() {
        let progress = |remaining, blocked_by_pdb| DrainProgress {
            remaining,
            blocked_by_pdb,
            attached_volumes: 0,
        };
        let blocked = after_drain(Ok(progress(2, 1)), false);
        assert_eq!(blocked.next.after, PDB_RETRY);
        assert_eq!(
            DeletionStep::parse(&blocked.next.description),
            DeletionStep::Drain
        );
        let done = after_drain(Ok(progress(0, 0)), false);
        assert!(done.completed);
        assert_eq!(
            DeletionStep::parse(&done.next.description),
            DeletionStep::DeleteVm
        );
        assert!(after_drain(Ok(progress(0, 0)), true).completed);
        assert!(!blocked.completed);
        let forced = after_drain(Err("evicting: boom".into()), true);
        assert_eq!(forced.error, None);
        assert!(!forced.completed);
        assert_eq!(
            DeletionStep::parse(&forced.next.description),
            DeletionStep::DeleteVolumeAttachments
        );
        let failed = after_drain(Err("evicting: boom".into()), false);
        assert_eq!(failed.error.as_deref(), Some("evicting: boom"));
        assert_eq!(failed.next.state, state::FAILED);
    }

    #[test]
    fn vm_deletion_clears_the_known_state_unless_the_driver_returns_one() {
        let (next, error) = after_vm_deletion(Ok(DeleteMachineResponse {
            last_known_state: "gone".into(),
        }));
        assert_eq!(next.known_state, KnownState::Replace(Some("gone".into())));
        assert!(error.is_none());
        let (next, error) = after_vm_deletion(Err(MachineError::new(MachineCode::Internal, "x")));
        assert_eq!((next.after, next.state), (retry::LONG, state::FAILED));
        assert_eq!(
            DeletionStep::parse(&next.description),
            DeletionStep::DeleteVm
        );
        assert!(error.is_some());
    }

    #[test]
    fn nodes_without_attached_volumes_skip_the_attachment_listing() {
        assert!(matches!(
            volume_attachments_of(None, "n1"),
            AttachmentDecision::Next(_)
        ));
        let attached: Node = serde_json::from_value(serde_json::json!({
            "status": {"volumesAttached": [{"name": "v", "devicePath": ""}]}
        }))
        .unwrap();
        assert_eq!(
            volume_attachments_of(Some(&attached), "n1"),
            AttachmentDecision::List
        );
        assert!(matches!(
            volume_attachments_of(Some(&Node::default()), "n1"),
            AttachmentDecision::Next(_)
        ));
    }
}
