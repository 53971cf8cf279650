//! Node affinity from the spec's region and zone.
//!
//! `default` selects nodes that have no such label, so single-zone KubeVirt clusters
//! without topology labels still schedule. The legacy `failure-domain.beta` labels the
//! Go provider used for Kubernetes < 1.17 are gone from every supported release.

use k8s_openapi::api::core::v1::{
    Affinity, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
};

pub const REGION_LABEL: &str = "topology.kubernetes.io/region";
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const DEFAULT_TOPOLOGY: &str = "default";

fn requirement(key: &str, value: &str) -> NodeSelectorRequirement {
    if value == DEFAULT_TOPOLOGY {
        NodeSelectorRequirement {
            key: key.to_owned(),
            operator: "DoesNotExist".to_owned(),
            values: None,
        }
    } else {
        NodeSelectorRequirement {
            key: key.to_owned(),
            operator: "In".to_owned(),
            values: Some(vec![value.to_owned()]),
        }
    }
}

pub fn build_affinity(region: &str, zone: &str) -> Option<Affinity> {
    if region.is_empty() {
        return None;
    }
    let mut expressions = vec![requirement(REGION_LABEL, region)];
    if !zone.is_empty() {
        expressions.push(requirement(ZONE_LABEL, zone));
    }
    Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(expressions),
                    match_fields: None,
                }],
            }),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expressions(region: &str, zone: &str) -> Vec<NodeSelectorRequirement> {
        build_affinity(region, zone)
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0]
            .match_expressions
            .clone()
            .unwrap()
    }

    #[test]
    fn named_topology_selects_in_and_default_selects_unlabelled() {
        let e = expressions("eu-1", "eu-1a");
        assert_eq!(
            (e[0].key.as_str(), e[0].operator.as_str()),
            (REGION_LABEL, "In")
        );
        assert_eq!(e[1].values.as_deref(), Some(&["eu-1a".to_owned()][..]));
        let e = expressions("default", "default");
        assert!(
            e.iter()
                .all(|r| r.operator == "DoesNotExist" && r.values.is_none())
        );
        assert_eq!(expressions("r", "").len(), 1);
        assert!(build_affinity("", "z").is_none());
    }
}
