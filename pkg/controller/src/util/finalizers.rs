//! Adding and removing one finalizer on any object, as a replace carrying the object's
//! resourceVersion: a concurrent writer makes it fail with a conflict instead of losing
//! the other writer's finalizers.

use std::fmt::Debug;

use kube::api::PostParams;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub fn has_finalizer<K: Resource>(object: &K, finalizer: &str) -> bool {
    object.finalizers().iter().any(|f| f == finalizer)
}

/// Makes `finalizer` present (or absent) on `object`; returns the stored object, or
/// `None` when nothing had to change.
pub async fn set_finalizer<K>(
    api: &Api<K>,
    object: &K,
    finalizer: &str,
    present: bool,
) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + Serialize + DeserializeOwned + Debug,
{
    if has_finalizer(object, finalizer) == present {
        return Ok(None);
    }
    let mut updated = object.clone();
    let finalizers = updated.finalizers_mut();
    if present {
        finalizers.push(finalizer.to_owned());
    } else {
        finalizers.retain(|f| f != finalizer);
    }
    let name = object.name_any();
    api.replace(&name, &PostParams::default(), &updated)
        .await
        .map(Some)
}
