//! SSH keys merged into `#cloud-config` userData.
//!
//! The userData is edited as text and the edit is then proven by parsing: re-serialising
//! the whole document would change how cloud-init (YAML 1.1) reads scalars such as `0644`
//! or `yes`, so only the `ssh_authorized_keys` entry is written, and the result must parse
//! to the original document with that one key changed.

use serde_json::{Map, Value};

const CLOUD_CONFIG_HEADER: &str = "#cloud-config";
const SSH_KEYS_KEY: &str = "ssh_authorized_keys";

/// Why the keys could not be merged. Never quotes the userData: it carries bootstrap tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserDataError {
    #[error("sshKeys can only be merged into userData that starts with {CLOUD_CONFIG_HEADER:?}")]
    NotCloudConfig,
    #[error(
        "userData is not a single YAML mapping (parse failed; details withheld as userData carries credentials)"
    )]
    NotAMapping,
    #[error("userData has {SSH_KEYS_KEY:?} that is not a list of strings")]
    BadExistingKeys,
    #[error("sshKeys could not be merged into userData without changing the rest of it")]
    UnsafeEdit,
}

/// Returns `user_data` with `ssh_keys` added to its `ssh_authorized_keys`, keeping keys
/// already there and adding none twice. Unchanged when there is nothing to add.
pub fn merge_ssh_keys(user_data: &[u8], ssh_keys: &[String]) -> Result<Vec<u8>, UserDataError> {
    let wanted: Vec<&str> = ssh_keys
        .iter()
        .map(|key| key.trim())
        .filter(|key| !key.is_empty())
        .collect();
    if wanted.is_empty() {
        return Ok(user_data.to_vec());
    }
    let text = std::str::from_utf8(user_data).map_err(|_| UserDataError::NotCloudConfig)?;
    if text.lines().next().map(str::trim_end) != Some(CLOUD_CONFIG_HEADER) {
        return Err(UserDataError::NotCloudConfig);
    }

    let mut document = parse_mapping(text)?;
    let existing = match document.get(SSH_KEYS_KEY) {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .iter()
                .map(|item| item.as_str().map(str::to_owned))
                .collect::<Option<Vec<String>>>()
                .ok_or(UserDataError::BadExistingKeys)?,
        ),
        Some(_) => return Err(UserDataError::BadExistingKeys),
    };

    let mut merged = existing.clone().unwrap_or_default();
    for key in wanted {
        if !merged.iter().any(|have| have == key) {
            merged.push(key.to_owned());
        }
    }
    if existing.as_ref() == Some(&merged) {
        return Ok(user_data.to_vec());
    }

    let block = render_keys_block(&merged)?;
    let edited = if document.contains_key(SSH_KEYS_KEY) {
        replace_top_level_entry(text, &block).ok_or(UserDataError::UnsafeEdit)?
    } else {
        let separator = if text.ends_with('\n') { "" } else { "\n" };
        format!("{text}{separator}{block}")
    };

    document.insert(
        SSH_KEYS_KEY.to_owned(),
        Value::Array(merged.into_iter().map(Value::String).collect()),
    );
    if parse_mapping(&edited).ok().as_ref() != Some(&document) {
        return Err(UserDataError::UnsafeEdit);
    }
    Ok(edited.into_bytes())
}

fn parse_mapping(text: &str) -> Result<Map<String, Value>, UserDataError> {
    match serde_saphyr::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        // A header with no keys yet is an empty cloud-config.
        Ok(Value::Null) => Ok(Map::new()),
        _ => Err(UserDataError::NotAMapping),
    }
}

fn render_keys_block(keys: &[String]) -> Result<String, UserDataError> {
    let mut entry = Map::new();
    entry.insert(
        SSH_KEYS_KEY.to_owned(),
        Value::Array(keys.iter().cloned().map(Value::String).collect()),
    );
    let mut block =
        serde_saphyr::to_string(&Value::Object(entry)).map_err(|_| UserDataError::UnsafeEdit)?;
    if !block.ends_with('\n') {
        block.push('\n');
    }
    Ok(block)
}

/// Replaces the lines of the top-level `ssh_authorized_keys` entry: its key line and the
/// indented or `- ` lines that follow it. Top-level entries start in column 0, so the
/// entry ends at the next line that does.
fn replace_top_level_entry(text: &str, block: &str) -> Option<String> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let start = lines.iter().position(|line| {
        line.strip_prefix(SSH_KEYS_KEY)
            .is_some_and(|rest| rest.trim_start().starts_with(':'))
    })?;
    let end = lines[start + 1..]
        .iter()
        .position(|line| !(line.trim().is_empty() || line.starts_with([' ', '\t', '-'])))
        .map_or(lines.len(), |offset| start + 1 + offset);
    let mut edited = String::with_capacity(text.len() + block.len());
    lines[..start].iter().for_each(|line| edited.push_str(line));
    edited.push_str(block);
    lines[end..].iter().for_each(|line| edited.push_str(line));
    Some(edited)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(list: &[&str]) -> Vec<String> {
        list.iter().map(|k| (*k).to_owned()).collect()
    }

    fn merged(user_data: &str, list: &[&str]) -> Result<String, UserDataError> {
        merge_ssh_keys(user_data.as_bytes(), &keys(list))
            .map(|bytes| String::from_utf8(bytes).unwrap())
    }

    fn parsed(text: &str) -> Map<String, Value> {
        parse_mapping(text).unwrap()
    }

    #[test]
    fn no_keys_leaves_any_user_data_alone() {
        assert_eq!(
            merged("#!/bin/bash\necho hi\n", &[]).unwrap(),
            "#!/bin/bash\necho hi\n"
        );
        assert_eq!(
            merged("#cloud-config\n", &["  "]).unwrap(),
            "#cloud-config\n"
        );
    }

    #[test]
    fn keys_are_added_and_the_rest_is_kept_byte_for_byte() {
        let original = "#cloud-config\nwrite_files:\n- path: /etc/x\n  permissions: 0644\n  content: |\n    a: b\nruncmd:\n- [sh, -c, 'echo yes']";
        let out = merged(original, &["ssh-ed25519 AAAA one", " ssh-rsa BBBB two \n"]).unwrap();
        assert!(out.starts_with(original), "{out}");
        let doc = parsed(&out);
        assert_eq!(
            doc["ssh_authorized_keys"],
            serde_json::json!(["ssh-ed25519 AAAA one", "ssh-rsa BBBB two"])
        );
        assert_eq!(doc["write_files"], parsed(original)["write_files"]);
    }

    #[test]
    fn existing_keys_are_merged_without_duplicates() {
        let original = "#cloud-config\nhostname: h\nssh_authorized_keys:\n  - ssh-rsa OLD\n  - ssh-rsa OLD2\nusers: []\n";
        let out = merged(original, &["ssh-rsa NEW", "ssh-rsa OLD"]).unwrap();
        let doc = parsed(&out);
        assert_eq!(
            doc["ssh_authorized_keys"],
            serde_json::json!(["ssh-rsa OLD", "ssh-rsa OLD2", "ssh-rsa NEW"])
        );
        assert_eq!(doc["hostname"], "h");
        assert_eq!(doc["users"], serde_json::json!([]));
        assert!(
            out.contains("hostname: h\n") && out.ends_with("users: []\n"),
            "{out}"
        );
    }

    #[test]
    fn flow_style_existing_keys_are_merged() {
        let out = merged(
            "#cloud-config\nssh_authorized_keys: [ssh-rsa A]\nhostname: h\n",
            &["ssh-rsa B"],
        )
        .unwrap();
        let doc = parsed(&out);
        assert_eq!(
            doc["ssh_authorized_keys"],
            serde_json::json!(["ssh-rsa A", "ssh-rsa B"])
        );
        assert_eq!(doc["hostname"], "h");
    }

    #[test]
    fn merging_twice_is_a_no_op() {
        let once = merged("#cloud-config\nhostname: h\n", &["ssh-rsa A"]).unwrap();
        assert_eq!(merged(&once, &["ssh-rsa A"]).unwrap(), once);
    }

    #[test]
    fn header_only_user_data_gets_keys() {
        let out = merged("#cloud-config", &["ssh-rsa A"]).unwrap();
        assert_eq!(
            parsed(&out)["ssh_authorized_keys"],
            serde_json::json!(["ssh-rsa A"])
        );
    }

    #[test]
    fn rejects_what_cannot_be_merged() {
        assert_eq!(
            merged("#!/bin/bash\necho\n", &["k"]),
            Err(UserDataError::NotCloudConfig)
        );
        assert_eq!(
            merged("#cloud-config\n- a\n- b\n", &["k"]),
            Err(UserDataError::NotAMapping)
        );
        assert_eq!(
            merged("#cloud-config\nfoo: [\n", &["k"]),
            Err(UserDataError::NotAMapping)
        );
        assert_eq!(
            merged("#cloud-config\nssh_authorized_keys: nope\n", &["k"]),
            Err(UserDataError::BadExistingKeys)
        );
        assert_eq!(
            merge_ssh_keys(&[0xff, 0x00], &keys(&["k"])),
            Err(UserDataError::NotCloudConfig)
        );
    }

    #[test]
    fn errors_never_quote_user_data() {
        let secret = "#cloud-config\ntoken: abcdef-0123456789abcdef\nbad: [";
        let err = merged(secret, &["k"]).unwrap_err().to_string();
        assert!(!err.contains("abcdef"), "{err}");
    }
}
