//! An in-memory Kubernetes API server, served to kube's real [`kube::Client`] as a tower
//! service.
//!
//! It stands for the parts of a real kube-apiserver the provider relies on: objects keyed
//! by resource path, namespace and name; `uid`/`resourceVersion`/`creationTimestamp`
//! assigned on create; 409 AlreadyExists on a second create; 404 NotFound Status bodies;
//! equality-based label selectors with `limit`/`continue` paging on lists; JSON merge
//! patches (and server-side apply treated as a merge); delete preconditions on `uid`
//! answered with 409 Conflict. It does not run admission, validation or garbage
//! collection: tests assert what the client sent and what is stored.
//!
//! Every request is recorded, and a fault hook may answer any request instead of the
//! store (to inject 5xx, 409, 429, timeouts or dropped connections), or let the store
//! apply it and then drop the answer.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Map, Value, json};

/// One request as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub method: Method,
    /// Path without the query string, e.g. `/api/v1/namespaces/vms/secrets/userdata-m`.
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

impl Recorded {
    /// `"POST /api/v1/namespaces/vms/secrets"`, for compact assertions.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// What a fault hook may answer instead of the store.
pub enum Fault {
    /// Answer with this status code and a Kubernetes Status body.
    Status(u16, String),
    /// Fail the transport (the client sees a service error, as for a dropped connection).
    Drop,
    /// The request times out before the server sees it.
    Timeout,
    /// The server applies the request, then the connection drops before the answer: the
    /// client sees an error although the write happened (a crash right after a write).
    DropAfterApply,
}

type FaultHook = Box<dyn FnMut(&Recorded, usize) -> Option<Fault> + Send>;

#[derive(Default)]
struct State {
    /// collection path (`/apis/g/v/namespaces/ns/plural`) -> name -> object.
    objects: BTreeMap<String, BTreeMap<String, Value>>,
    requests: Vec<Recorded>,
    next_version: u64,
    fault: Option<FaultHook>,
}

/// The fake server; cheap to clone, all clones share one store.
#[derive(Clone, Default)]
pub struct FakeApiServer {
    state: Arc<Mutex<State>>,
}

/// A collection path and the object name within it, parsed from a request path.
struct Target {
    collection: String,
    name: Option<String>,
    namespace: Option<String>,
}

fn parse_path(path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let prefix_len = match *segments.first()? {
        "api" => 2,
        "apis" => 3,
        _ => return None,
    };
    if segments.len() < prefix_len {
        return None;
    }
    let (prefix, rest) = segments.split_at(prefix_len);
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        rest => (None, rest),
    };
    // A subresource (`/status`) is served as its object: patches merge into it.
    let (plural, name) = match rest {
        [plural] => (*plural, None),
        [plural, name] | [plural, name, _] => (*plural, Some((*name).to_owned())),
        _ => return None,
    };
    let mut collection = format!("/{}", prefix.join("/"));
    if let Some(ns) = &namespace {
        collection.push_str(&format!("/namespaces/{ns}"));
    }
    collection.push_str(&format!("/{plural}"));
    Some(Target {
        collection,
        name,
        namespace,
    })
}

fn parse_query(query: Option<&str>) -> BTreeMap<String, String> {
    query
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(key), decode(value))
        })
        .collect()
}

/// Percent-decoding of query values (label selectors arrive encoded).
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality-based selector terms: `k=v`, `k==v`, `k!=v`, `k`, `!k`.
fn matches_selector(labels: Option<&Map<String, Value>>, selector: &str) -> bool {
    let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .all(|term| {
            if let Some((key, value)) = term.split_once("!=") {
                label(key.trim()) != Some(value.trim())
            } else if let Some((key, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                label(key.trim()) == Some(value.trim())
            } else if let Some(key) = term.strip_prefix('!') {
                label(key.trim()).is_none()
            } else {
                label(term.trim()).is_some()
            }
        })
}

/// Equality field selectors on dotted paths (`spec.nodeName=n1`, `metadata.name!=x`).
fn matches_fields(object: &Value, selector: &str) -> bool {
    let field = |path: &str| {
        path.split('.')
            .try_fold(object, |value, key| value.get(key))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    selector
        .split(',')
        .filter(|term| !term.is_empty())
        .all(|term| {
            if let Some((path, value)) = term.split_once("!=") {
                field(path.trim()) != value.trim()
            } else if let Some((path, value)) =
                term.split_once("==").or_else(|| term.split_once('='))
            {
                field(path.trim()) == value.trim()
            } else {
                false
            }
        })
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    })
}

fn reason_of(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Gone",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

fn respond(code: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", "application/json")
        .body(Body::from(bytes))
        .unwrap_or_else(|_| Response::new(Body::from(Vec::new())))
}

fn kind_name(collection: &str) -> String {
    collection.rsplit('/').next().unwrap_or_default().to_owned()
}

impl FakeApiServer {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has already failed; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A kube client talking to this server, with `namespace` as its default.
    pub fn client(&self, namespace: &str) -> kube::Client {
        kube::Client::new(self.service(), namespace)
    }

    /// The server as a tower service, for building clients with extra layers.
    pub fn service(
        &self,
    ) -> impl tower::Service<
        Request<Body>,
        Response = Response<Body>,
        Error = std::io::Error,
        Future = impl Future<Output = Result<Response<Body>, std::io::Error>> + Send + 'static,
    > + Clone
    + Send
    + 'static {
        let server = self.clone();
        tower::service_fn(move |request: Request<Body>| {
            let server = server.clone();
            async move { server.handle(request).await }
        })
    }

    /// Serves the store over plain HTTP on a loopback port until the runtime ends, and
    /// returns its URL: for clients built from a `kube::Config` as the sidecar builds its
    /// own, with every layer kube's builder adds (the in-process [`Self::client`] has none).
    /// A transport fault ([`Fault::Drop`], [`Fault::Timeout`]) answers 502 there.
    pub async fn listen(&self) -> std::io::Result<String> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let server = self.clone();
        let router = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let server = server.clone();
            async move { server.over_http(request).await }
        });
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(url)
    }

    async fn over_http(&self, request: axum::extract::Request) -> axum::response::Response {
        let failed = |error: String| {
            let mut response = axum::response::Response::new(axum::body::Body::from(error));
            *response.status_mut() = StatusCode::BAD_GATEWAY;
            response
        };
        let (parts, body) = request.into_parts();
        let bytes = match axum::body::to_bytes(body, usize::MAX).await {
            Ok(bytes) => bytes,
            Err(error) => return failed(error.to_string()),
        };
        let response = match self
            .handle(Request::from_parts(parts, Body::from(bytes)))
            .await
        {
            Ok(response) => response,
            Err(error) => return failed(error.to_string()),
        };
        let (parts, body) = response.into_parts();
        match body.collect_bytes().await {
            Ok(bytes) => axum::response::Response::from_parts(parts, axum::body::Body::from(bytes)),
            Err(error) => failed(error.to_string()),
        }
    }

    /// Puts an object into the store directly, as if another actor had created it.
    /// `collection` is e.g. `/apis/kubevirt.io/v1/namespaces/vms/virtualmachines`.
    pub fn insert(&self, collection: &str, mut object: Value) {
        let mut state = self.lock();
        state.next_version += 1;
        let version = state.next_version;
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let metadata = &mut object["metadata"];
        if metadata.get("uid").is_none() {
            metadata["uid"] = json!(format!("uid-{name}-{version}"));
        }
        metadata["resourceVersion"] = json!(version.to_string());
        state
            .objects
            .entry(collection.to_owned())
            .or_default()
            .insert(name, object);
    }

    /// The stored object, if any.
    pub fn get(&self, collection: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get(collection)
            .and_then(|c| c.get(name))
            .cloned()
    }

    /// Names stored in a collection.
    pub fn names(&self, collection: &str) -> Vec<String> {
        self.lock()
            .objects
            .get(collection)
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn remove(&self, collection: &str, name: &str) -> Option<Value> {
        self.lock()
            .objects
            .get_mut(collection)
            .and_then(|c| c.remove(name))
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// `"METHOD path"` of every request so far.
    pub fn request_lines(&self) -> Vec<String> {
        self.lock().requests.iter().map(Recorded::line).collect()
    }

    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// Installs a hook that sees each request (and its 0-based index) before the store
    /// does and may answer it with a fault instead.
    pub fn set_fault(&self, hook: impl FnMut(&Recorded, usize) -> Option<Fault> + Send + 'static) {
        self.lock().fault = Some(Box::new(hook));
    }

    pub fn clear_fault(&self) {
        self.lock().fault = None;
    }

    async fn handle(&self, request: Request<Body>) -> Result<Response<Body>, std::io::Error> {
        let (parts, body) = request.into_parts();
        let bytes = body
            .collect_bytes()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let recorded = Recorded {
            method: parts.method.clone(),
            path: parts.uri.path().to_owned(),
            query: parse_query(parts.uri.query()),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: serde_json::from_slice(&bytes).ok(),
        };
        let mut state = self.lock();
        let index = state.requests.len();
        state.requests.push(recorded.clone());
        if let Some(hook) = state.fault.as_mut() {
            match hook(&recorded, index) {
                Some(Fault::Status(code, message)) => {
                    return Ok(respond(code, &status_body(code, reason_of(code), &message)));
                }
                Some(Fault::Drop) => return Err(dropped()),
                Some(Fault::Timeout) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "request timed out by fault injection",
                    ));
                }
                Some(Fault::DropAfterApply) => {
                    serve(&mut state, &recorded);
                    return Err(dropped());
                }
                None => {}
            }
        }
        let (code, body) = serve(&mut state, &recorded);
        Ok(respond(code, &body))
    }
}

fn dropped() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection dropped by fault injection",
    )
}

fn not_found(collection: &str, name: &str) -> (u16, Value) {
    let kind = kind_name(collection);
    (
        404,
        status_body(404, "NotFound", &format!("{kind} \"{name}\" not found")),
    )
}

fn serve(state: &mut State, request: &Recorded) -> (u16, Value) {
    let Some(target) = parse_path(&request.path) else {
        return (
            404,
            status_body(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        );
    };
    let collection = target.collection.clone();
    match (&request.method, target.name.as_deref()) {
        (&Method::GET, None) => list(state, &collection, &request.query),
        (&Method::GET, Some(name)) => {
            match state.objects.get(&collection).and_then(|c| c.get(name)) {
                Some(object) => (200, object.clone()),
                None => not_found(&collection, name),
            }
        }
        (&Method::POST, None) => {
            create(state, &target, request.body.clone().unwrap_or(Value::Null))
        }
        // pods/<name>/eviction: the pod goes (PodDisruptionBudgets are the fault hook's job).
        (&Method::POST, Some(name)) if request.path.ends_with("/eviction") => {
            match delete(state, &collection, name, None) {
                (200, _) => (
                    201,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                ),
                other => other,
            }
        }
        (&Method::PUT, Some(name)) => replace(
            state,
            &collection,
            name,
            request.path.ends_with("/status"),
            request.body.clone().unwrap_or(Value::Null),
        ),
        (&Method::PATCH, Some(name)) => patch(state, &target, name, request),
        (&Method::DELETE, Some(name)) => delete(state, &collection, name, request.body.as_ref()),
        _ => (
            405,
            status_body(405, "MethodNotAllowed", "method not allowed"),
        ),
    }
}

fn bump(state: &mut State, object: &mut Value) {
    state.next_version += 1;
    object["metadata"]["resourceVersion"] = json!(state.next_version.to_string());
}

fn list(state: &State, collection: &str, query: &BTreeMap<String, String>) -> (u16, Value) {
    let selector = query
        .get("labelSelector")
        .map(String::as_str)
        .unwrap_or_default();
    let fields = query
        .get("fieldSelector")
        .map(String::as_str)
        .unwrap_or_default();
    let limit: usize = query
        .get("limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let after = query.get("continue").cloned().unwrap_or_default();
    // A cluster-wide list (`/api/v1/pods`) spans the namespaced collections of its kind.
    let (prefix, plural) = collection.rsplit_once('/').unwrap_or_default();
    let spans = |key: &String| {
        key == collection
            || key
                .strip_prefix(&format!("{prefix}/namespaces/"))
                .and_then(|rest| rest.split_once('/'))
                .is_some_and(|(_, kind)| kind == plural)
    };
    let matching: Vec<(&String, &Value)> = state
        .objects
        .iter()
        .filter(|(key, _)| spans(key))
        .flat_map(|(_, objects)| objects.iter())
        .filter(|(name, _)| after.is_empty() || name.as_str() > after.as_str())
        .filter(|(_, object)| matches_selector(object["metadata"]["labels"].as_object(), selector))
        .filter(|(_, object)| matches_fields(object, fields))
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .take(limit)
        .map(|(_, o)| (*o).clone())
        .collect();
    let continue_token = if matching.len() > limit {
        matching
            .get(limit - 1)
            .map(|(name, _)| (*name).clone())
            .unwrap_or_default()
    } else {
        String::new()
    };
    let mut metadata = json!({ "resourceVersion": state.next_version.to_string() });
    if !continue_token.is_empty() {
        metadata["continue"] = json!(continue_token);
    }
    (
        200,
        json!({ "kind": "List", "apiVersion": "v1", "metadata": metadata, "items": page }),
    )
}

fn create(state: &mut State, target: &Target, mut object: Value) -> (u16, Value) {
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return (
            422,
            status_body(422, "Invalid", "metadata.name: Required value"),
        );
    };
    if state
        .objects
        .get(&target.collection)
        .is_some_and(|c| c.contains_key(&name))
    {
        let kind = kind_name(&target.collection);
        return (
            409,
            status_body(
                409,
                "AlreadyExists",
                &format!("{kind} \"{name}\" already exists"),
            ),
        );
    }
    if let Some(ns) = &target.namespace {
        object["metadata"]["namespace"] = json!(ns);
    }
    state.next_version += 1;
    object["metadata"]["uid"] = json!(format!("uid-{name}-{}", state.next_version));
    object["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    bump(state, &mut object);
    state
        .objects
        .entry(target.collection.clone())
        .or_default()
        .insert(name, object.clone());
    (201, object)
}

/// A PUT: on `/status` only the status is taken from the body, on the object everything
/// but the status (as for resources with a status subresource); `deletionTimestamp` is
/// the server's.
fn replace(
    state: &mut State,
    collection: &str,
    name: &str,
    status_only: bool,
    body: Value,
) -> (u16, Value) {
    let Some(current) = state
        .objects
        .get(collection)
        .and_then(|c| c.get(name))
        .cloned()
    else {
        return not_found(collection, name);
    };
    let given = body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    if !given.is_empty() && Some(given) != current["metadata"]["resourceVersion"].as_str() {
        return (
            409,
            status_body(409, "Conflict", "the object has been modified"),
        );
    }
    let mut object = if status_only {
        let mut object = current.clone();
        object["status"] = body["status"].clone();
        object
    } else {
        let mut object = body;
        if current.get("status").is_some() {
            object["status"] = current["status"].clone();
        }
        match current["metadata"].get("deletionTimestamp") {
            Some(time) => object["metadata"]["deletionTimestamp"] = time.clone(),
            None => {
                if let Some(metadata) = object["metadata"].as_object_mut() {
                    metadata.remove("deletionTimestamp");
                }
            }
        }
        object
    };
    object["metadata"]["uid"] = current["metadata"]["uid"].clone();
    bump(state, &mut object);
    store(state, collection, name, object.clone());
    (200, object)
}

fn patch(state: &mut State, target: &Target, name: &str, request: &Recorded) -> (u16, Value) {
    let apply = request.content_type.as_deref() == Some("application/apply-patch+yaml");
    let current = state
        .objects
        .get(&target.collection)
        .and_then(|c| c.get(name))
        .cloned();
    let mut object = match current {
        Some(object) => object,
        None if apply => {
            return create(state, target, request.body.clone().unwrap_or(Value::Null));
        }
        None => return not_found(&target.collection, name),
    };
    let uid = object["metadata"]["uid"].clone();
    let patch = request.body.clone().unwrap_or(Value::Null);
    if request.content_type.as_deref() == Some("application/json-patch+json") {
        let Ok(operations) = serde_json::from_value::<json_patch::Patch>(patch) else {
            return (400, status_body(400, "BadRequest", "invalid JSON patch"));
        };
        if json_patch::patch(&mut object, &operations).is_err() {
            return (422, status_body(422, "Invalid", "JSON patch failed"));
        }
    } else {
        json_patch::merge(&mut object, &patch);
    }
    object["metadata"]["uid"] = uid;
    bump(state, &mut object);
    store(state, &target.collection, name, object.clone());
    (200, object)
}

fn delete(
    state: &mut State,
    collection: &str,
    name: &str,
    options: Option<&Value>,
) -> (u16, Value) {
    let Some(current) = state
        .objects
        .get(collection)
        .and_then(|c| c.get(name))
        .cloned()
    else {
        return not_found(collection, name);
    };
    if let Some(uid) = options.and_then(|o| o["preconditions"]["uid"].as_str())
        && current["metadata"]["uid"].as_str() != Some(uid)
    {
        return (
            409,
            status_body(
                409,
                "Conflict",
                &format!("Precondition failed: UID in precondition: {uid}"),
            ),
        );
    }
    let has_finalizers = current["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    if has_finalizers {
        let mut marked = current;
        if marked["metadata"]["deletionTimestamp"].is_null() {
            marked["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        }
        bump(state, &mut marked);
        store(state, collection, name, marked.clone());
        return (200, marked);
    }
    if let Some(c) = state.objects.get_mut(collection) {
        c.remove(name);
    }
    (200, current)
}

fn now_rfc3339() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// Stores a written object, unless it was being deleted and has no finalizers left:
/// then it is gone, as the API server removes it.
fn store(state: &mut State, collection: &str, name: &str, object: Value) {
    let deleting = !object["metadata"]["deletionTimestamp"].is_null();
    let finalizers_left = object["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| !f.is_empty());
    let objects = state.objects.entry(collection.to_owned()).or_default();
    if deleting && !finalizers_left {
        objects.remove(name);
    } else {
        objects.insert(name.to_owned(), object);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_into_collections() {
        let t = parse_path("/apis/kubevirt.io/v1/namespaces/vms/virtualmachines/m-1").unwrap();
        assert_eq!(
            t.collection,
            "/apis/kubevirt.io/v1/namespaces/vms/virtualmachines"
        );
        assert_eq!(t.name.as_deref(), Some("m-1"));
        let t = parse_path("/api/v1/namespaces/vms/secrets").unwrap();
        assert_eq!(t.collection, "/api/v1/namespaces/vms/secrets");
        assert!(t.name.is_none());
        let t = parse_path("/api/v1/nodes/n1").unwrap();
        assert_eq!(t.collection, "/api/v1/nodes");
        assert_eq!(t.name.as_deref(), Some("n1"));
    }

    #[test]
    fn selectors_match_like_the_api_server() {
        let labels = json!({"a": "1", "b": "2"});
        let labels = labels.as_object();
        assert!(matches_selector(labels, "a=1,b=2"));
        assert!(matches_selector(labels, "a==1,!c,b"));
        assert!(!matches_selector(labels, "a=2"));
        assert!(!matches_selector(labels, "a!=1"));
        assert!(!matches_selector(None, "a"));
        assert!(matches_selector(None, ""));
    }

    #[test]
    fn query_values_are_decoded() {
        let q = parse_query(Some(
            "labelSelector=app.kubernetes.io%2Fmanaged-by%3Dx%2Cy%3Dz&limit=5",
        ));
        assert_eq!(q["labelSelector"], "app.kubernetes.io/managed-by=x,y=z");
        assert_eq!(q["limit"], "5");
    }
}
