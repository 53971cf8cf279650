//! Field paths and the validation errors that name them.
//!
//! Every rejection of user input says which field is wrong, in the form an operator
//! types into `kubectl explain` (`providerSpec.rootVolume.pvc.resources.requests.storage`).
//! Details never quote secret material.

use std::fmt;

/// A dotted path into the MachineClass or Secret, e.g. `providerSpec.additionalVolumes[1].name`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldPath(String);

impl FieldPath {
    pub fn new(root: &str) -> Self {
        FieldPath(root.to_owned())
    }

    pub fn child(&self, name: &str) -> Self {
        FieldPath(format!("{}.{name}", self.0))
    }

    pub fn index(&self, index: usize) -> Self {
        FieldPath(format!("{}[{index}]", self.0))
    }

    /// A map entry, e.g. `providerSpec.tags[team]`.
    pub fn key(&self, key: &str) -> Self {
        FieldPath(format!("{}[{key}]", self.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What is wrong with a field, worded like Kubernetes' `field.ErrorType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldErrorKind {
    Required,
    Invalid,
    Forbidden,
    Duplicate,
    TooLong,
    /// A field the schema does not know; almost always a typo.
    Unknown,
}

impl FieldErrorKind {
    fn describe(self) -> &'static str {
        match self {
            FieldErrorKind::Required => "Required value",
            FieldErrorKind::Invalid => "Invalid value",
            FieldErrorKind::Forbidden => "Forbidden",
            FieldErrorKind::Duplicate => "Duplicate value",
            FieldErrorKind::TooLong => "Too long",
            FieldErrorKind::Unknown => "Unknown field",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub path: FieldPath,
    pub kind: FieldErrorKind,
    pub detail: String,
}

impl FieldError {
    pub fn new(kind: FieldErrorKind, path: &FieldPath, detail: impl Into<String>) -> Self {
        FieldError {
            path: path.clone(),
            kind,
            detail: detail.into(),
        }
    }
    pub fn required(path: &FieldPath, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Required, path, detail)
    }
    pub fn invalid(path: &FieldPath, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Invalid, path, detail)
    }
    pub fn forbidden(path: &FieldPath, detail: impl Into<String>) -> Self {
        Self::new(FieldErrorKind::Forbidden, path, detail)
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.kind.describe())?;
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

/// All problems found in one piece of input, reported together so one edit fixes them all.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn push(&mut self, error: FieldError) {
        self.0.push(error);
    }
    pub fn extend(&mut self, other: FieldErrors) {
        self.0.extend(other.0);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn iter(&self) -> impl Iterator<Item = &FieldError> {
        self.0.iter()
    }
    /// `Ok(())` when nothing was found, else `Err(self)`.
    pub fn into_result(self) -> Result<(), FieldErrors> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }
}

impl From<FieldError> for FieldErrors {
    fn from(error: FieldError) -> Self {
        FieldErrors(vec![error])
    }
}

impl fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

/// Kubernetes' DNS-1123 label: what a VM name must be (its pods and labels carry it).
pub fn is_dns1123_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Kubernetes' DNS-1123 subdomain: what object names such as Secrets and DataVolumes must be.
pub fn is_dns1123_subdomain(value: &str) -> bool {
    value.len() <= 253 && value.split('.').all(is_dns1123_label)
}

/// A label value: empty, or at most 63 alphanumerics with `-`, `_`, `.` inside.
pub fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    if bytes.is_empty() {
        return true;
    }
    bytes.len() <= 63
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes[0].is_ascii_alphanumeric()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

/// A label key: an optional DNS-1123 subdomain prefix and `/`, then a name like a label value.
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix
        && !is_dns1123_subdomain(prefix)
    {
        return false;
    }
    !name.is_empty() && is_label_value(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_render_like_kubectl_explain() {
        let root = FieldPath::new("providerSpec");
        let path = root
            .child("additionalVolumes")
            .index(2)
            .child("dataVolume")
            .child("pvc");
        assert_eq!(
            path.as_str(),
            "providerSpec.additionalVolumes[2].dataVolume.pvc"
        );
        assert_eq!(
            root.child("tags").key("team").as_str(),
            "providerSpec.tags[team]"
        );
    }

    #[test]
    fn errors_join_with_their_paths() {
        let root = FieldPath::new("providerSpec");
        let mut errors = FieldErrors::default();
        errors.push(FieldError::required(
            &root.child("region"),
            "cannot be empty",
        ));
        errors.push(FieldError::new(
            FieldErrorKind::Unknown,
            &root.child("regoin"),
            "",
        ));
        assert_eq!(
            errors.to_string(),
            "providerSpec.region: Required value: cannot be empty; providerSpec.regoin: Unknown field"
        );
        assert!(errors.into_result().is_err());
        assert!(FieldErrors::default().into_result().is_ok());
    }

    #[test]
    fn name_rules() {
        assert!(is_dns1123_label("shoot--dev--worker-z1-abcde"));
        assert!(!is_dns1123_label("Upper"));
        assert!(!is_dns1123_label("-lead"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("userdata-a.b"));
        assert!(!is_dns1123_subdomain("a..b"));
        assert!(is_label_value(""));
        assert!(is_label_value("shoot--dev--kubevirt"));
        assert!(!is_label_value("shoot--dev--kubevirt,"));
        assert!(!is_label_value(&"a".repeat(64)));
        assert!(is_label_key("mcm.gardener.cloud/role"));
        assert!(is_label_key("role"));
        assert!(!is_label_key("Bad_Prefix/role"));
        assert!(!is_label_key("a/"));
        assert!(!is_label_key("a/b/c"));
    }
}
