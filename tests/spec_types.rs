//! The committed spec (`api-spec/openrpc.json`) against the API's own declaration (`camhub::rpc::methods::METHODS`):
//! the same methods, roles and parameters (names, and which are required), and results and notifications of the same
//! shape at every depth (field names, which are required, JSON types, enum values), read from the Rust types'
//! schemas. With `tests/spec.rs` walking the spec against a running server, the spec cannot drift from the code.

use std::collections::BTreeSet;

use camhub::rpc::methods::{Access, METHODS};
use schemars::JsonSchema;
use serde_json::Value;

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/api-spec/openrpc.json");

/// A schema and the document its `$ref`s point into.
#[derive(Clone, Copy)]
struct Node<'a> {
    doc: &'a Value,
    schema: &'a Value,
}

impl<'a> Node<'a> {
    /// Follows `$ref`s (`#/components/schemas/X` in the spec, `#/$defs/X` in a type's schema).
    fn resolve(self) -> Node<'a> {
        let mut schema = self.schema;
        for _ in 0..16 {
            let Some(r) = schema.get("$ref").and_then(Value::as_str) else { break };
            schema = self.doc.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("dangling $ref {r}"));
        }
        Node { doc: self.doc, schema }
    }

    fn at(self, schema: &'a Value) -> Node<'a> {
        Node { doc: self.doc, schema }.resolve()
    }

    /// The alternatives of a `oneOf`/`anyOf`, or the schema itself.
    fn alternatives(self) -> Vec<Node<'a>> {
        let node = self.resolve();
        for key in ["oneOf", "anyOf"] {
            if let Some(list) = node.schema.get(key).and_then(Value::as_array) {
                return list.iter().flat_map(|s| node.at(s).alternatives()).collect();
            }
        }
        vec![node]
    }

    /// The JSON types a value of this schema may have.
    fn types(self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for node in self.alternatives() {
            let s = node.schema;
            match s.get("type") {
                Some(Value::String(t)) => {
                    out.insert(t.clone());
                }
                Some(Value::Array(ts)) => out.extend(ts.iter().filter_map(Value::as_str).map(str::to_owned)),
                _ => {}
            }
            let values = s.get("enum").and_then(Value::as_array).cloned().unwrap_or_default();
            for v in values.iter().chain(s.get("const")) {
                out.insert(json_type(v).to_owned());
            }
            if s.get("properties").is_some() {
                out.insert("object".into());
            }
        }
        out
    }

    /// Enum values, when every alternative is an enum or a constant.
    fn values(self) -> Option<BTreeSet<String>> {
        let mut out = BTreeSet::new();
        for node in self.alternatives() {
            let s = node.schema;
            match (s.get("enum").and_then(Value::as_array), s.get("const")) {
                (Some(list), _) => out.extend(list.iter().map(Value::to_string)),
                (None, Some(v)) => {
                    out.insert(v.to_string());
                }
                _ if s.get("type") == Some(&Value::String("null".into())) => {}
                _ => return None,
            }
        }
        Some(out)
    }

    /// Properties (each with every schema alternatives give it) and required names of an object schema
    /// (alternatives merged, `allOf` included).
    fn object(self) -> Option<Props<'a>> {
        let mut props: Vec<(&'a str, Vec<Node<'a>>)> = Vec::new();
        let mut required = BTreeSet::new();
        let mut any = false;
        let mut parts = self.alternatives();
        while let Some(node) = parts.pop() {
            if let Some(all) = node.schema.get("allOf").and_then(Value::as_array) {
                parts.extend(all.iter().map(|s| node.at(s)));
            }
            if let Some(p) = node.schema.get("properties").and_then(Value::as_object) {
                any = true;
                for (k, v) in p {
                    match props.iter_mut().find(|(name, _)| name == k) {
                        Some((_, nodes)) => nodes.push(node.at(v)),
                        None => props.push((k.as_str(), vec![node.at(v)])),
                    }
                }
            }
            required.extend(
                node.schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str),
            );
        }
        any.then_some((props, required))
    }
}

/// An object's properties and its required names.
type Props<'a> = (Vec<(&'a str, Vec<Node<'a>>)>, BTreeSet<&'a str>);

/// The JSON types any of `nodes` allows.
fn union_types(nodes: &[Node<'_>]) -> BTreeSet<String> {
    nodes.iter().flat_map(|n| n.types()).collect()
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Every difference between the spec's schema and the type's, at `at`.
fn compare(spec: Node<'_>, code: Node<'_>, at: &str, problems: &mut Vec<String>) {
    compare_as(&[spec], &[code], at, false, problems)
}

/// [`compare`] of schemas that may each be several (a field that alternatives of a union both have). With
/// `absent_is_null`, a `null` the type accepts is not a type of its own (an optional parameter given as null counts
/// as absent).
fn compare_as(spec: &[Node<'_>], code: &[Node<'_>], at: &str, absent_is_null: bool, problems: &mut Vec<String>) {
    let spec: Vec<Node<'_>> = spec.iter().map(|n| n.resolve()).collect();
    let code: Vec<Node<'_>> = code.iter().map(|n| n.resolve()).collect();
    let st = union_types(&spec);
    let mut ct = union_types(&code);
    if absent_is_null && !st.contains("null") {
        ct.remove("null");
    }
    // A schema that names no type (free-form) constrains nothing to compare.
    if !st.is_empty() && !ct.is_empty() && st != ct {
        problems.push(format!("{at}: the spec says {st:?}, the type {ct:?}"));
        return;
    }
    let ([spec], [code]) = (spec.as_slice(), code.as_slice()) else { return };
    let (spec, code) = (*spec, *code);
    // The server may send only what the spec lists (the spec may promise a narrower set for one method).
    if let (Some(sv), Some(cv)) = (spec.values(), code.values())
        && !cv.is_subset(&sv)
    {
        problems.push(format!("{at}: the spec's values {sv:?}, the type's {cv:?}"));
    }
    if let (Some((sp, sr)), Some((cp, cr))) = (spec.object(), code.object()) {
        let sn: BTreeSet<&str> = sp.iter().map(|(k, _)| *k).collect();
        let cn: BTreeSet<&str> = cp.iter().map(|(k, _)| *k).collect();
        if sn != cn {
            let only_spec: Vec<_> = sn.difference(&cn).collect();
            let only_code: Vec<_> = cn.difference(&sn).collect();
            problems.push(format!("{at}: fields only in the spec {only_spec:?}, only in the type {only_code:?}"));
        }
        // Fields the spec requires must always be there (the spec leaves camhub's extensions optional).
        for k in sr.difference(&cr) {
            problems.push(format!("{at}.{k}: required by the spec, optional in the type"));
        }
        for (k, s) in &sp {
            if let Some((_, c)) = cp.iter().find(|(name, _)| name == k) {
                compare_as(s, c, &format!("{at}.{k}"), absent_is_null, problems);
            }
        }
    }
    for key in ["items", "additionalProperties"] {
        if let (Some(s), Some(c)) = (spec.schema.get(key), code.schema.get(key))
            && s.is_object()
            && c.is_object()
        {
            compare_as(&[spec.at(s)], &[code.at(c)], &format!("{at}[]"), absent_is_null, problems);
        }
    }
}

fn spec() -> Value {
    let text = std::fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("read {SPEC}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{SPEC} is not JSON: {e}"))
}

#[test]
fn the_spec_says_what_the_api_declaration_says() {
    let spec = spec();
    let methods = spec["methods"].as_array().expect("methods");
    let mut problems = Vec::new();
    let in_spec: BTreeSet<&str> = methods.iter().filter_map(|m| m["name"].as_str()).collect();
    let in_code: BTreeSet<&str> = METHODS.iter().map(|m| m.name).collect();
    assert_eq!(in_spec, in_code, "methods in the spec (left) and in camhub::rpc::methods::METHODS (right)");
    for info in METHODS {
        let m = methods.iter().find(|m| m["name"] == info.name).expect("checked above");
        let role = match info.access {
            Access::Public => "public",
            Access::AtLeast(role) => role.as_str(),
        };
        if m["x-required-role"] != role {
            problems.push(format!("{}: the spec's role {}, the code's {role}", info.name, m["x-required-role"]));
        }
        let doc = Node { doc: &spec, schema: &spec };
        let params_schema = (info.params)().to_value();
        let params = Node { doc: &params_schema, schema: &params_schema };
        let (code_props, code_required) = params.object().unwrap_or_default();
        let mut spec_names = BTreeSet::new();
        for p in m["params"].as_array().expect("params") {
            let p = doc.at(p).schema;
            let name = p["name"].as_str().expect("param name");
            spec_names.insert(name);
            let required = p["required"].as_bool().unwrap_or(false);
            if required != code_required.contains(name) {
                problems.push(format!("{}.{name}: required {required} in the spec, not in the type", info.name));
            }
            match code_props.iter().find(|(k, _)| *k == name) {
                Some((_, c)) => {
                    compare_as(&[doc.at(&p["schema"])], c, &format!("{}({name})", info.name), true, &mut problems)
                }
                None => problems.push(format!("{}.{name}: in the spec, not a field of the params type", info.name)),
            }
        }
        for (k, _) in &code_props {
            if !spec_names.contains(k) {
                problems.push(format!("{}.{k}: a field of the params type, not in the spec", info.name));
            }
        }
        let result_schema = (info.result)().to_value();
        let result = Node { doc: &result_schema, schema: &result_schema };
        compare(doc.at(&m["result"]["schema"]), result, &format!("{} result", info.name), &mut problems);
    }
    assert!(problems.is_empty(), "the spec differs from the types:\n{}", problems.join("\n"));
}

#[test]
fn notifications_in_the_spec_are_the_types_the_server_sends() {
    use camhub::rpc::notify::{RecordingUpdate, TopicEvent};
    use camhub::rpc::wire::CameraSummary;
    let spec = spec();
    let doc = Node { doc: &spec, schema: &spec };
    let mut problems = Vec::new();
    let mut check = |name: &str, code: Value| {
        let n = spec["x-notifications"]
            .as_array()
            .expect("x-notifications")
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("the spec has no notification {name}"));
        compare(doc.at(&n["params"]["schema"]), Node { doc: &code, schema: &code }, name, &mut problems);
    };
    fn schema<T: JsonSchema>() -> Value {
        camhub::rpc::methods::result_schema::<T>().to_value()
    }
    check("camera_status_update", schema::<CameraSummary>());
    check("recording_status_update", schema::<RecordingUpdate>());
    check("event", schema::<TopicEvent>());
    assert!(problems.is_empty(), "the spec differs from the types:\n{}", problems.join("\n"));
}
