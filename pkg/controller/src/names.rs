//! MCM's names as other components read them: finalizers, labels, annotations, phases,
//! and the lastOperation descriptions the deletion flow persists its step in. These are
//! wire contracts (the machine-set controller, cluster-autoscaler and Gardener match on
//! them), so they must stay byte-identical to MCM's.

/// Finalizer on Machines and MachineClasses.
pub const MCM_FINALIZER: &str = "machine.sapcloud.io/machine-controller-manager";
/// Finalizer on Secrets referenced by MachineClasses.
pub const SECRET_FINALIZER: &str = "machine.sapcloud.io/machine-controller";
/// Finalizer on Nodes backing Machines.
pub const NODE_FINALIZER: &str = "node.machine.sapcloud.io/machine-controller";

/// Machine label naming its Node.
pub const NODE_LABEL: &str = "node";
/// Node label naming its Machine.
pub const MACHINE_NAME_LABEL: &str = "node.gardener.cloud/machine-name";
/// Machine label naming its MachineDeployment (set by MCM's machine-set controller).
pub const DEPLOYMENT_NAME_LABEL: &str = "name";
/// Machine label forcing drain and deletion.
pub const FORCE_DELETION_LABEL: &str = "force-deletion";
/// Machine annotation the machine-set controller picks victims by; "3" is the default.
pub const MACHINE_PRIORITY_ANNOTATION: &str = "machinepriority.machine.sapcloud.io";
/// Machine annotation overriding the creation timeout (a Go duration).
pub const EFFECTIVE_CREATION_TIMEOUT_ANNOTATION: &str =
    "node.machine.sapcloud.io/effective-creation-timeout";
/// Machine annotation recording how long the node took to join.
pub const JOIN_DURATION_ANNOTATION: &str = "node.machine.sapcloud.io/machine-join-duration";
/// Node annotation remembering what the machine's nodeTemplate last applied.
pub const LAST_APPLIED_ANNOTATION: &str =
    "node.machine.sapcloud.io/last-applied-anno-labels-taints";
/// Node annotation remembering the class's virtualCapacity last put in the Node's capacity.
pub const LAST_APPLIED_VIRTUAL_CAPACITY_ANNOTATION: &str =
    "node.machine.sapcloud.io/last-applied-virtual-capacity";
/// Node taint keeping a Pending machine from Running until Gardener's critical components are up.
pub const CRITICAL_COMPONENTS_NOT_READY_TAINT: &str =
    "node.gardener.cloud/critical-components-not-ready";
/// Node condition set while the machine is being deleted.
pub const TERMINATING_CONDITION: &str = "Terminating";
/// Pod annotation of static (mirror) pods, which drain skips.
pub const MIRROR_POD_ANNOTATION: &str = "kubernetes.io/config.mirror";
/// The sidecar's own, not MCM's: Machine annotation handing a drain's state (refused
/// evictions, volumes awaited) from one pass to the next.
pub const DRAIN_STATE_ANNOTATION: &str = "kubevirt.provider.machine.sapcloud.io/drain-state";

/// Machine or Node annotation asking for preservation: `now`, `when-failed`,
/// `auto-preserved` (set by the machine-set controller) or `false`.
pub const PRESERVE_ANNOTATION: &str = "node.machine.sapcloud.io/preserve";
/// Machine annotation remembering the Node's preserve value last acted on.
pub const LAST_APPLIED_NODE_PRESERVE_ANNOTATION: &str =
    "node.machine.sapcloud.io/last-applied-node-preserve-value";
/// Node taint (NoSchedule) put on a preserved Failed machine's Node before it is drained;
/// a taint rather than a cordon, so a user's own cordon is left as it is.
pub const PRESERVED_TAINT: &str = "node.machine.sapcloud.io/preserved";
/// Node condition reporting the preservation.
pub const PRESERVED_CONDITION: &str = "Preserved";
/// Machine label forcing the drain of a preserved or in-place-updated machine's Node (value
/// `True`, as MCM compares it).
pub const FORCE_DRAIN_LABEL: &str = "force-drain";
/// Node annotation keeping the cluster-autoscaler from scaling the Node down.
pub const CA_SCALE_DOWN_DISABLED_ANNOTATION: &str =
    "cluster-autoscaler.kubernetes.io/scale-down-disabled";
/// Node annotation saying MCM set the one above, so only then is it removed again.
pub const CA_SCALE_DOWN_DISABLED_BY_MCM_ANNOTATION: &str =
    "cluster-autoscaler.kubernetes.io/scale-down-disabled-by-mcm";

/// Node labels of MCM's in-place updates: the MachineDeployment controller marks a Node a
/// candidate, then selects it (this sidecar drains it then); the agent on the Node reports
/// the result ([`update_result`]), and a failure's reason in
/// [`UPDATE_FAILED_REASON_ANNOTATION`].
pub const CANDIDATE_FOR_UPDATE_LABEL: &str = "node.machine.sapcloud.io/candidate-for-update";
pub const SELECTED_FOR_UPDATE_LABEL: &str = "node.machine.sapcloud.io/selected-for-update";
pub const UPDATE_RESULT_LABEL: &str = "node.machine.sapcloud.io/update-result";
pub const UPDATE_FAILED_REASON_ANNOTATION: &str = "node.machine.sapcloud.io/update-failed-reason";
/// Node condition tracking an in-place update; its reason is the step ([`in_place_reason`]).
pub const IN_PLACE_UPDATE_CONDITION: &str = "InPlaceUpdate";

/// Values of [`UPDATE_RESULT_LABEL`].
pub mod update_result {
    pub const SUCCESSFUL: &str = "successful";
    pub const FAILED: &str = "failed";
}

/// Reasons of the [`IN_PLACE_UPDATE_CONDITION`], in the order an update passes them.
pub mod in_place_reason {
    pub const CANDIDATE_FOR_UPDATE: &str = "CandidateForUpdate";
    pub const SELECTED_FOR_UPDATE: &str = "SelectedForUpdate";
    pub const DRAIN_SUCCESSFUL: &str = "DrainSuccessful";
    pub const READY_FOR_UPDATE: &str = "ReadyForUpdate";
    pub const UPDATE_SUCCESSFUL: &str = "UpdateSuccessful";
    pub const UPDATE_FAILED: &str = "UpdateFailed";
}

/// `status.currentStatus.phase` values.
pub mod phase {
    pub const PENDING: &str = "Pending";
    pub const AVAILABLE: &str = "Available";
    pub const RUNNING: &str = "Running";
    pub const TERMINATING: &str = "Terminating";
    pub const UNKNOWN: &str = "Unknown";
    pub const FAILED: &str = "Failed";
    pub const CRASH_LOOP_BACK_OFF: &str = "CrashLoopBackOff";
    pub const IN_PLACE_UPDATING: &str = "InPlaceUpdating";
    pub const IN_PLACE_UPDATE_SUCCESSFUL: &str = "InPlaceUpdateSuccessful";
    pub const IN_PLACE_UPDATE_FAILED: &str = "InPlaceUpdateFailed";
}

/// `status.lastOperation.state` values.
pub mod state {
    pub const PROCESSING: &str = "Processing";
    pub const FAILED: &str = "Failed";
    pub const SUCCESSFUL: &str = "Successful";
}

/// `status.lastOperation.type` values.
pub mod operation {
    pub const CREATE: &str = "Create";
    pub const DELETE: &str = "Delete";
    pub const HEALTH_CHECK: &str = "HealthCheck";
    pub const IN_PLACE_UPDATE: &str = "InPlaceUpdate";
    pub const DRAIN_NODE: &str = "DrainNode";
}

/// Deletion steps, persisted in `lastOperation.description` and matched by substring in
/// this order.
pub mod step {
    pub const GET_VM_STATUS: &str = "Set machine status to termination. Now, getting VM Status";
    pub const INITIATE_DRAIN: &str = "Initiate node drain";
    pub const DELETE_VOLUME_ATTACHMENTS: &str = "Delete Volume Attachments";
    pub const INITIATE_VM_DELETION: &str = "Initiate VM deletion";
    pub const INITIATE_NODE_DELETION: &str = "Initiate node object deletion";
    pub const INITIATE_FINALIZER_REMOVAL: &str = "Initiate machine object finalizer removal";
    pub const INSTANCE_INITIALIZATION: &str = "Initialize VM Instance";
}

/// Bootstrap token placeholders MCM substitutes in userData before calling the driver.
pub const BOOTSTRAP_TOKEN_PLACEHOLDER: &str = "<<BOOTSTRAP_TOKEN>>";
pub const MACHINE_NAME_PLACEHOLDER: &str = "<<MACHINE_NAME>>";

/// Node annotation marking a Node no Machine claims; MCM's Node handlers skip such Nodes.
pub const NOT_MANAGED_BY_MCM_ANNOTATION: &str = "node.machine.sapcloud.io/not-managed-by-mcm";
