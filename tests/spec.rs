//! The API spec (`api-spec/openrpc.json`) walked against a running camhub: method names and roles against the access
//! table and the server, every method present, parameter rules (-32602 naming the parameter), result fields and types,
//! documented errors, notifications, file downloads and transport rules. Real test camera, real camhub, real WebSocket
//! client; snapshots and recordings are really taken, listed, downloaded and deleted.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{Map, Value, json};

use camhub::auth::Role;
use camhub::config::RecordingFormat;
use camhub::error::{Dependency, Error, Resource, State};
use camhub::rpc::errors;
use camhub::rpc::methods::{ACCESS, Access};
use camhub::storage::files::validate_name;
use common::{Camhub, Client, TestCam};

const SPEC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/api-spec/openrpc.json");
const DOCS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/api.md");

const INVALID_PARAMS: i64 = errors::INVALID_PARAMS as i64;
const UNAUTHENTICATED: i64 = errors::UNAUTHENTICATED as i64;
const PERMISSION_DENIED: i64 = errors::PERMISSION_DENIED as i64;

/// Methods that change cameras or files; parts (c) and (d) never call them with valid params: the round trips do
/// (a throwaway stream added then removed; snapshots and recordings made, listed, downloaded, then deleted).
const MUTATING: [&str; 13] = [
    "add_external_stream",
    "start_streaming",
    "stop_streaming",
    "remove_external_stream",
    "take_snapshot",
    "start_recording",
    "stop_recording",
    "delete_recording",
    "export_recording",
    "delete_snapshot",
    "set_detection",
    "create_stream_key",
    "revoke_stream_key",
];

/// Reads about one file or event: their examples name files that exist only during the files round trip, which checks
/// them, and events only detection makes (tests/detection.rs checks those).
const NEEDS_A_FILE: [&str; 3] = ["get_recording_info", "get_snapshot_info", "get_event"];

/// Names that are paths; every method taking a file name must refuse them with -32602 naming it.
const PATH_LIKE: [&str; 3] = ["../x", "a/b", ".hidden"];

/// A parameter name no method has.
const UNKNOWN_PARAM: &str = "spec_unknown_param";

/// A well-formed camera id that names no camera: a mutating call aimed at it changes nothing.
const ABSENT_CAMERA: &str = "spec-absent";

/// Camera connects, notifications, snapshots and finalising recordings can be slow on a loaded machine.
const SLOW: Duration = Duration::from_secs(60);

// ---- the spec ----

/// The parsed spec, with `$ref` resolution.
struct Spec(Value);

impl Spec {
    fn load() -> Spec {
        let text = std::fs::read_to_string(SPEC).unwrap_or_else(|e| panic!("read {SPEC}: {e}"));
        Spec(serde_json::from_str(&text).unwrap_or_else(|e| panic!("{SPEC} is not JSON: {e}")))
    }

    /// Follows local `$ref`s (`#/json/pointer`) until a value that is not a reference.
    fn resolve<'a>(&'a self, mut v: &'a Value) -> &'a Value {
        for _ in 0..16 {
            let Some(r) = v.get("$ref").and_then(Value::as_str) else { return v };
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("only local $refs are used: {r}"));
            v = self.0.pointer(pointer).unwrap_or_else(|| panic!("dangling $ref {r}"));
        }
        panic!("$ref chain too long at {v}")
    }

    fn methods(&self) -> Vec<Method<'_>> {
        self.0["methods"]
            .as_array()
            .expect("spec has a methods array")
            .iter()
            .map(|raw| Method { spec: self, raw })
            .collect()
    }

    fn method(&self, name: &str) -> Method<'_> {
        self.methods().into_iter().find(|m| m.name() == name).unwrap_or_else(|| panic!("spec has no method {name}"))
    }

    fn notification_schema(&self, name: &str) -> &Value {
        let n = self.0["x-notifications"]
            .as_array()
            .expect("spec has x-notifications")
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("spec has no notification {name}"));
        self.resolve(&n["params"]["schema"])
    }

    /// The catalog entry for an error code.
    fn catalog_error(&self, code: i64) -> &Value {
        self.0["components"]["errors"]
            .as_object()
            .expect("spec has components.errors")
            .values()
            .find(|e| e["code"].as_i64() == Some(code))
            .unwrap_or_else(|| panic!("components.errors has no code {code}"))
    }
}

struct Method<'a> {
    spec: &'a Spec,
    raw: &'a Value,
}

/// A parameter, its content descriptor and schema resolved.
struct Param<'a> {
    name: &'a str,
    required: bool,
    schema: &'a Value,
}

impl<'a> Method<'a> {
    fn name(&self) -> &'a str {
        self.raw["name"].as_str().expect("method name is a string")
    }

    fn role(&self) -> &'a str {
        self.raw["x-required-role"].as_str().unwrap_or_else(|| panic!("{} lacks x-required-role", self.name()))
    }

    fn params(&self) -> Vec<Param<'a>> {
        let list = self.raw["params"].as_array().unwrap_or_else(|| panic!("{} lacks params", self.name()));
        list.iter()
            .map(|p| {
                let p = self.spec.resolve(p);
                Param {
                    name: p["name"].as_str().expect("param name"),
                    required: p["required"].as_bool().unwrap_or(false),
                    schema: self.spec.resolve(&p["schema"]),
                }
            })
            .collect()
    }

    fn result_schema(&self) -> &'a Value {
        self.spec.resolve(&self.raw["result"]["schema"])
    }

    fn errors(&self) -> Vec<&'a Value> {
        let list = self.raw["errors"].as_array().unwrap_or_else(|| panic!("{} lacks errors", self.name()));
        list.iter().map(|e| self.spec.resolve(e)).collect()
    }

    fn error_codes(&self) -> BTreeSet<i64> {
        self.errors().iter().map(|e| e["code"].as_i64().expect("error code is an integer")).collect()
    }

    /// The first example's params, as a JSON object.
    fn example_params(&self) -> Map<String, Value> {
        let example = &self.raw["examples"][0];
        let params = example["params"].as_array().unwrap_or_else(|| panic!("{} lacks an example", self.name()));
        params
            .iter()
            .map(|p| (p["name"].as_str().expect("example param name").to_owned(), p["value"].clone()))
            .collect()
    }

    /// Well-typed values for the required params (from their schemas' examples).
    fn base_params(&self) -> Map<String, Value> {
        self.params().iter().filter(|p| p.required).map(|p| (p.name.to_owned(), example_of(p.schema))).collect()
    }
}

fn example_of(schema: &Value) -> Value {
    schema["examples"][0].clone()
}

// ---- a small JSON Schema checker ----

/// Checks `value` against the part of JSON Schema the spec uses: `type` (one or several), `const`, `enum`,
/// `minimum`/`maximum`, `exclusiveMinimum`/`exclusiveMaximum`, `minLength`/`maxLength` (and camhub's `x-maxBytes`,
/// UTF-8 bytes), `format: date-time` (RFC 3339), `required`, `properties`, `additionalProperties`, `items`,
/// `minItems`/`maxItems`, at any depth, following `$ref`. Patterns are not checked here (the server is asked to refuse
/// the spec's `x-invalid-examples` instead). Stricter than JSON Schema in one way: an object schema with `properties`
/// and no `additionalProperties` must list every field the server sends, so the spec cannot fall behind the code.
fn check(spec: &Spec, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = spec.resolve(schema);
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().map(|t| t.as_str().expect("type names are strings")).collect(),
            other => panic!("bad type {other} in the spec"),
        };
        if !types.iter().any(|t| has_type(value, t)) {
            problems.push(format!("{at}: expected type {}, got {value}", types.join(" or ")));
            return;
        }
    }
    if let Some(c) = schema.get("const")
        && c != value
    {
        problems.push(format!("{at}: expected {c}, got {value}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(value)
    {
        problems.push(format!("{at}: {value} is not one of {}", Value::Array(e.clone())));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            problems.push(format!("{at}: {n} is below the minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            problems.push(format!("{at}: {n} is above the maximum {max}"));
        }
        if let Some(min) = schema.get("exclusiveMinimum").and_then(Value::as_f64)
            && n <= min
        {
            problems.push(format!("{at}: {n} is not above the exclusive minimum {min}"));
        }
        if let Some(max) = schema.get("exclusiveMaximum").and_then(Value::as_f64)
            && n >= max
        {
            problems.push(format!("{at}: {n} is not below the exclusive maximum {max}"));
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if schema.get("minLength").and_then(Value::as_u64).is_some_and(|min| len < min) {
            problems.push(format!("{at}: {s:?} is shorter than minLength"));
        }
        if schema.get("maxLength").and_then(Value::as_u64).is_some_and(|max| len > max) {
            problems.push(format!("{at}: {s:?} is longer than maxLength"));
        }
        if schema.get("x-maxBytes").and_then(Value::as_u64).is_some_and(|max| s.len() as u64 > max) {
            problems.push(format!("{at}: {s:?} is longer than x-maxBytes"));
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time") && humantime::parse_rfc3339(s).is_err() {
            problems.push(format!("{at}: {s:?} is not an RFC 3339 UTC time"));
        }
    }
    match value {
        Value::Object(map) => {
            for field in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                let field = field.as_str().expect("required names are strings");
                if !map.contains_key(field) {
                    problems.push(format!("{at}: required field {field:?} is missing"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, v) in map {
                let here = format!("{at}.{key}");
                match (properties.and_then(|p| p.get(key)), schema.get("additionalProperties")) {
                    (Some(sub), _) => check(spec, sub, v, &here, problems),
                    (None, Some(Value::Bool(false))) => problems.push(format!("{here}: not allowed")),
                    (None, Some(sub @ Value::Object(_))) => check(spec, sub, v, &here, problems),
                    (None, Some(Value::Bool(true))) => {}
                    (None, None) if properties.is_some() => {
                        problems.push(format!("{here}: the server sends this field but the spec does not list it"))
                    }
                    (None, _) => {}
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check(spec, sub, item, &format!("{at}[{i}]"), problems);
                }
            }
            let len = items.len() as u64;
            if schema.get("minItems").and_then(Value::as_u64).is_some_and(|min| len < min) {
                problems.push(format!("{at}: fewer items than minItems"));
            }
            if schema.get("maxItems").and_then(Value::as_u64).is_some_and(|max| len > max) {
                problems.push(format!("{at}: more items than maxItems"));
            }
        }
        _ => {}
    }
}

fn has_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        other => panic!("unknown JSON Schema type {other:?} in the spec"),
    }
}

/// Panics with every problem found, naming what was checked.
fn assert_conforms(spec: &Spec, schema: &Value, value: &Value, what: &str) {
    let mut problems = Vec::new();
    check(spec, schema, value, "$", &mut problems);
    assert!(problems.is_empty(), "{what} does not match the spec:\n  {}\nvalue: {value:#}", problems.join("\n  "));
}

// ---- values that break a parameter's rules ----

/// A value whose JSON type the schema does not allow (never null: null means "absent" for optional params).
fn wrong_type(schema: &Value) -> Value {
    let allowed: Vec<&str> = match &schema["type"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        other => panic!("param schema without a type: {other}"),
    };
    [json!(12345), json!("text"), json!(true), json!(["x"]), json!({ "x": 1 })]
        .into_iter()
        .find(|v| !allowed.iter().any(|t| has_type(v, t)))
        .expect("some JSON type is not allowed")
}

/// Values of the right type that break a rule the schema states: its `x-invalid-examples`, and values just past its
/// length, byte-length, range, item-count and enum limits (and a fraction for an integer).
fn invalid_values(spec: &Spec, schema: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = schema["x-invalid-examples"].as_array().cloned().unwrap_or_default();
    if schema["type"] == "integer" || schema["type"] == "number" {
        if let Some(min) = schema["minimum"].as_f64() {
            out.push(number(min - 1.0));
        }
        if let Some(max) = schema["maximum"].as_f64() {
            out.push(number(max + 1.0));
        }
        for limit in [&schema["exclusiveMinimum"], &schema["exclusiveMaximum"]] {
            if let Some(limit) = limit.as_f64() {
                out.push(number(limit));
            }
        }
    }
    if schema["type"] == "integer" {
        let example = example_of(schema).as_f64().expect("integer examples are numbers");
        out.push(json!(example + 0.5));
    }
    if schema["type"] == "string" {
        if let Some(max) = schema["maxLength"].as_u64() {
            out.push(json!("x".repeat(max as usize + 1)));
        }
        if let Some(max) = schema["x-maxBytes"].as_u64() {
            // Two bytes a character: within maxLength characters, past the byte limit.
            out.push(json!("\u{e9}".repeat(max as usize / 2 + 1)));
        }
        if schema["minLength"].as_u64().is_some_and(|min| min > 0) {
            out.push(json!(""));
        }
        if schema.get("enum").is_some() {
            out.push(json!("spec-not-in-enum"));
        }
    }
    if schema["type"] == "array" {
        let items = spec.resolve(&schema["items"]);
        let item = items["enum"][0].clone();
        let item = if item.is_null() { example_of(items) } else { item };
        if schema["minItems"].as_u64().is_some_and(|min| min > 0) {
            out.push(json!([]));
        }
        if let Some(max) = schema["maxItems"].as_u64() {
            out.push(Value::Array(vec![item; max as usize + 1]));
        }
        if items.get("enum").is_some() {
            out.push(json!(["spec-not-in-enum"]));
        }
    }
    out
}

/// Values right at the schema's length, inclusive range and item-count limits, which must not be refused for breaking
/// them.
fn at_limit_values(spec: &Spec, schema: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    if schema["type"] == "integer" || schema["type"] == "number" {
        for limit in [schema["minimum"].as_f64(), schema["maximum"].as_f64()].into_iter().flatten() {
            out.push(number(limit));
        }
    }
    if let (Some(max), Some(example)) = (schema["maxLength"].as_u64(), example_of(schema).as_str()) {
        let last = example.chars().last().expect("string examples are not empty");
        let padding = (max as usize).saturating_sub(example.chars().count());
        out.push(json!(format!("{example}{}", last.to_string().repeat(padding))));
    }
    if schema["type"] == "array" {
        let items = spec.resolve(&schema["items"]);
        let item = items["enum"][0].clone();
        let item = if item.is_null() { example_of(items) } else { item };
        for limit in [schema["minItems"].as_u64(), schema["maxItems"].as_u64()].into_iter().flatten() {
            out.push(Value::Array(vec![item.clone(); limit as usize]));
        }
    }
    out
}

/// A JSON number, integral when it can be.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 1e15 { json!(n as i64) } else { json!(n) }
}

fn with(base: &Map<String, Value>, key: &str, value: Value) -> Value {
    let mut m = base.clone();
    m.insert(key.to_owned(), value);
    Value::Object(m)
}

fn without(base: &Map<String, Value>, key: &str) -> Value {
    let mut m = base.clone();
    m.remove(key);
    Value::Object(m)
}

// ---- checks on responses ----

fn code(error: &Value) -> i64 {
    error["code"].as_i64().unwrap_or_else(|| panic!("error without an integer code: {error}"))
}

/// An error a method returned must be one its spec entry lists, with the catalog's message and data shape.
fn assert_documented(spec: &Spec, method: &Method<'_>, error: &Value, request: &Value) {
    let c = code(error);
    assert!(
        method.error_codes().contains(&c),
        "{} returned error {c}, which its spec entry does not list; request {request}, error {error}",
        method.name()
    );
    let entry = spec.catalog_error(c);
    assert_eq!(error["message"], entry["message"], "message of error {c} from {}", method.name());
    assert_conforms(
        spec,
        &entry["x-data-schema"],
        &error["data"],
        &format!("data of error {c} from {}", method.name()),
    );
}

/// Calls `method` with `params`; it must fail with -32602 naming `param` (or a field inside it).
async fn expect_invalid(spec: &Spec, client: &Client, method: &Method<'_>, params: Value, param: &str) {
    let r = client.call(method.name(), params.clone()).await;
    let e = r.expect_err(&format!("{} {params} should be refused with -32602 for {param}", method.name()));
    assert_eq!(code(&e), INVALID_PARAMS, "{} {params}: {e}", method.name());
    let named = e["data"]["param"].as_str().unwrap_or_default();
    assert!(
        named == param || named.starts_with(&format!("{param}.")),
        "{} {params}: data.param is {named:?}, expected {param:?}; error {e}",
        method.name()
    );
    assert_documented(spec, method, &e, &params);
}

fn role_rank(role: &str) -> u8 {
    match role {
        "public" => 0,
        "viewer" => 1,
        "operator" => 2,
        "admin" => 3,
        other => panic!("unknown role {other:?}"),
    }
}

// ---- (a) the spec against the code, offline ----

#[test]
fn spec_matches_the_access_table_the_error_codes_and_the_config_defaults() {
    let spec = Spec::load();
    assert_eq!(spec.0["openrpc"], "1.2.6");

    // Method names and roles equal the access table.
    let in_spec: BTreeSet<&str> = spec.methods().iter().map(Method::name).collect();
    let in_code: BTreeSet<&str> = ACCESS.iter().map(|(name, _)| *name).collect();
    assert_eq!(in_spec.len(), spec.methods().len(), "a method is in the spec twice");
    assert_eq!(in_spec, in_code, "spec methods (left) differ from camhub::rpc::methods::ACCESS (right)");
    for (name, access) in ACCESS {
        let expected = match access {
            Access::Public => "public",
            Access::AtLeast(role) => role.as_str(),
        };
        assert_eq!(spec.method(name).role(), expected, "x-required-role of {name}");
    }

    // Every method is fully described, and its examples conform to its own schemas.
    for m in spec.methods() {
        let name = m.name();
        for field in ["summary", "params", "result", "errors", "examples"] {
            assert!(m.raw.get(field).is_some(), "{name} lacks {field}");
        }
        assert_eq!(m.raw["paramStructure"], "by-name", "{name}");
        for e in m.errors() {
            let c = e["code"].as_i64().unwrap_or_else(|| panic!("{name}: an error without a code"));
            assert_eq!(e["message"], spec.catalog_error(c)["message"], "{name}: message of error {c}");
        }
        let codes = m.error_codes();
        assert!(codes.contains(&INVALID_PARAMS), "{name}: every method refuses unknown params with -32602");
        assert!(codes.contains(&(errors::RATE_LIMITED as i64)), "{name}: every method can be rate limited");
        if m.role() != "public" {
            assert!(codes.contains(&UNAUTHENTICATED), "{name} needs authentication but does not list -32001");
        }
        assert_eq!(
            codes.contains(&PERMISSION_DENIED),
            role_rank(m.role()) > role_rank("viewer"),
            "{name}: -32002 is possible exactly when the method needs more than viewer"
        );
        let params = m.params();
        for p in &params {
            assert!(p.schema.get("type").is_some(), "{name}.{}: schema without a type", p.name);
            assert!(p.schema["examples"].as_array().is_some_and(|e| !e.is_empty()), "{name}.{}: no examples", p.name);
            for example in p.schema["examples"].as_array().into_iter().flatten() {
                assert_conforms(&spec, p.schema, example, &format!("example of {name}.{}", p.name));
            }
        }
        for example in m.raw["examples"].as_array().into_iter().flatten() {
            for p in example["params"].as_array().expect("example params") {
                let param = params.iter().find(|q| p["name"] == q.name).unwrap_or_else(|| panic!("{name}: {p}"));
                assert_conforms(&spec, param.schema, &p["value"], &format!("example param of {name}"));
            }
            assert_conforms(&spec, m.result_schema(), &example["result"]["value"], &format!("example of {name}"));
        }
    }
    // Every file name parameter is the one Filename rule; it refuses paths, and it is the code's rule.
    let filename = &spec.0["components"]["schemas"]["Filename"];
    let mut takes_a_filename = Vec::new();
    for m in spec.methods() {
        for p in m.params().iter().filter(|p| p.name == "filename") {
            assert_eq!(p.schema, filename, "{}.filename is not components.schemas.Filename", m.name());
            takes_a_filename.push(m.name());
        }
    }
    let expected = ["take_snapshot", "get_recording_info", "delete_recording", "get_snapshot_info", "delete_snapshot"];
    assert_eq!(takes_a_filename, expected, "methods with a filename parameter");
    let invalid = filename["x-invalid-examples"].as_array().expect("Filename has x-invalid-examples");
    for bad in PATH_LIKE {
        assert!(invalid.contains(&json!(bad)), "Filename x-invalid-examples lacks {bad:?}");
    }
    for bad in invalid_values(&spec, filename) {
        let bad = bad.as_str().expect("file names are strings");
        assert!(validate_name("filename", bad).is_err(), "the spec refuses the name {bad:?}, the code accepts it");
    }
    let examples = filename["examples"].as_array().expect("Filename examples").iter().cloned();
    for good in examples.chain(at_limit_values(&spec, filename)) {
        let good = good.as_str().expect("file names are strings");
        assert!(validate_name("filename", good).is_ok(), "the spec accepts the name {good:?}, the code refuses it");
    }

    // The recording formats are the code's.
    let formats = &spec.0["components"]["schemas"]["RecordingFormat"];
    for f in formats["enum"].as_array().expect("RecordingFormat enum") {
        let f = f.as_str().expect("format name");
        assert_eq!(RecordingFormat::parse(f).map(RecordingFormat::as_str), Some(f), "RecordingFormat {f}");
    }
    for f in formats["x-invalid-examples"].as_array().expect("RecordingFormat x-invalid-examples") {
        assert!(RecordingFormat::parse(f.as_str().expect("string")).is_none(), "{f} is a recording format");
    }

    // Conditional requirements name real parameters.
    for m in spec.methods() {
        for (param, condition) in m.raw["x-required-if"].as_object().into_iter().flatten() {
            let names: Vec<&str> = m.params().iter().map(|p| p.name).collect();
            assert!(names.contains(&param.as_str()), "{}: x-required-if names {param}", m.name());
            for (other, _) in condition.as_object().expect("a condition is an object") {
                assert!(names.contains(&other.as_str()), "{}: x-required-if condition names {other}", m.name());
            }
        }
    }

    let notifications: Vec<&str> = spec.0["x-notifications"]
        .as_array()
        .expect("x-notifications")
        .iter()
        .map(|n| n["name"].as_str().expect("notification name"))
        .collect();
    for n in spec.0["x-transport"]["notificationsWithoutSubscription"].as_array().expect("a list") {
        assert!(notifications.contains(&n.as_str().expect("name")), "x-transport names notification {n}");
    }

    for n in spec.0["x-notifications"].as_array().expect("x-notifications") {
        let name = n["name"].as_str().expect("notification name");
        let schema = spec.notification_schema(name);
        for example in n["examples"].as_array().into_iter().flatten() {
            assert_eq!(example["method"], name);
            assert_conforms(&spec, schema, &example["params"], &format!("example of notification {name}"));
        }
    }

    // The error catalog has exactly the codes and messages of rpc::errors.
    let catalog: BTreeSet<i64> = spec.0["components"]["errors"]
        .as_object()
        .expect("components.errors")
        .values()
        .map(|e| e["code"].as_i64().expect("code"))
        .collect();
    let code_consts = [
        errors::PARSE_ERROR,
        errors::INVALID_REQUEST,
        errors::METHOD_NOT_FOUND,
        errors::INVALID_PARAMS,
        errors::INTERNAL,
        errors::UNAUTHENTICATED,
        errors::PERMISSION_DENIED,
        errors::INSUFFICIENT_STORAGE,
        errors::CAPABILITY_NOT_SUPPORTED,
        errors::NOT_FOUND,
        errors::INVALID_STATE,
        errors::UNSUPPORTED,
        errors::RATE_LIMITED,
        errors::DEPENDENCY_FAILED,
    ];
    assert_eq!(catalog, code_consts.iter().map(|c| *c as i64).collect(), "components.errors codes");
    let from_code: [ErrorObjectOwned; 14] = [
        errors::protocol(errors::PARSE_ERROR, "x"),
        errors::protocol(errors::INVALID_REQUEST, "x"),
        errors::protocol(errors::METHOD_NOT_FOUND, "x"),
        Error::invalid_param("device", "x").into(),
        Error::internal("x").into(),
        Error::Unauthenticated("x".into()).into(),
        Error::PermissionDenied { required: Role::Admin, have: Role::Viewer }.into(),
        Error::InsufficientStorage { available: 1, required: 2 }.into(),
        Error::CapabilityNotSupported("x".into()).into(),
        Error::NotFound { resource: Resource::Camera, id: "x".into() }.into(),
        Error::InvalidState { state: State::Stopped, allowed: &[State::Started] }.into(),
        Error::Unsupported("x").into(),
        Error::RateLimited { retry_after_ms: 1 }.into(),
        Error::Dependency { dependency: Dependency::Database, detail: "x".into() }.into(),
    ];
    for e in from_code {
        let wire = serde_json::to_value(&e).expect("error objects serialize");
        let entry = spec.catalog_error(e.code() as i64);
        assert_eq!(wire["message"], entry["message"], "message of error {}", e.code());
        assert_conforms(&spec, &entry["x-data-schema"], &wire["data"], &format!("data of error {}", e.code()));
    }

    // The transport defaults the spec states are the config's defaults.
    let defaults = camhub::config::Config::from_toml("").expect("the empty config is valid").server;
    let t = &spec.0["x-transport"];
    assert_eq!(t["maxMessageBytes"]["default"], defaults.max_message_bytes);
    assert_eq!(t["rateLimit"]["perSecond"]["default"], defaults.rate_limit_per_sec);
    assert_eq!(t["rateLimit"]["burst"]["default"], defaults.rate_limit_burst);
    assert_eq!(t["maxConnections"]["default"], defaults.max_connections);
    assert_eq!(t["slowClients"]["queue"]["default"], defaults.notification_queue);
    assert_eq!(t["rateLimit"]["error"], errors::RATE_LIMITED);
    assert_eq!(t["batches"]["error"], errors::INVALID_REQUEST);
    assert_eq!(t["maxMessageBytes"]["error"], errors::INVALID_REQUEST);

    // The topics the spec lists are the ones the server accepts.
    let topics: Vec<&str> = spec.0["components"]["schemas"]["Topic"]["enum"]
        .as_array()
        .expect("Topic enum")
        .iter()
        .map(|t| t.as_str().expect("topic"))
        .collect();
    assert_eq!(topics, camhub::events::TOPICS, "Topic enum");

    // The human guide covers every method and notification.
    let docs = std::fs::read_to_string(DOCS).unwrap_or_else(|e| panic!("read {DOCS}: {e}"));
    for m in spec.methods() {
        let row = format!("| `{}` | {} |", m.name(), m.role());
        assert!(docs.contains(&row), "docs/api.md has no methods-table row starting {row:?}");
    }
    for n in spec.0["x-notifications"].as_array().expect("x-notifications") {
        let name = n["name"].as_str().expect("name");
        assert!(docs.contains(&format!("`{name}`")), "docs/api.md does not mention `{name}`");
    }
    for (_, route) in spec.0["x-files"]["routes"].as_object().expect("x-files routes") {
        let route = route.as_str().expect("route");
        assert!(docs.contains(&format!("`GET {route}`")), "docs/api.md does not mention `GET {route}`");
    }
}

// ---- (b), (c), (d): the spec against a running server ----

#[tokio::test]
async fn spec_holds_against_a_running_server() {
    let spec = Spec::load();
    let cam = TestCam::start(2);
    // The walk makes more requests than the default burst allows (the rate limit has a test of its own).
    let limits = "rate_limit_per_sec = 2000\nrate_limit_burst = 4000";
    let hub = Camhub::start_with_server_keys(limits, &common::camera_toml("cam0", &cam.url(0)));
    let admin = hub.client("admin").await;
    let connected = admin.wait_status("cam0", SLOW, |s| s["status"] == "CONNECTED").await;
    assert!(connected.is_some(), "cam0 did not connect; log:\n{}", hub.log());

    every_method_exists_and_checks_its_role(&spec, &hub, &admin).await;
    params_are_checked_as_the_spec_says(&spec, &admin).await;
    read_results_match_the_spec(&spec, &admin).await;
    a_throwaway_stream_is_added_and_removed_as_the_spec_says(&spec, &hub, &cam).await;
    streaming_round_trip_as_the_spec_says(&spec, &hub).await;
    stream_keys_round_trip_as_the_spec_says(&spec, &hub).await;
    snapshots_and_recordings_round_trip_as_the_spec_says(&spec, &hub).await;
    discovery_as_the_spec_says(&spec, &hub, &cam).await;
}

/// (b) Every spec method exists, and the role the spec states is the one the server enforces.
async fn every_method_exists_and_checks_its_role(spec: &Spec, hub: &Camhub, admin: &Client) {
    let missing = admin.call("spec_no_such_method", json!({})).await.expect_err("an unknown method fails");
    assert_eq!(code(&missing), errors::METHOD_NOT_FOUND as i64, "{missing}");

    let anonymous = Client::connect(&hub.ws_url()).await;
    let viewer = hub.client("viewer").await;
    let operator = hub.client("operator").await;
    let callers: [(Option<&str>, &Client); 4] =
        [(None, &anonymous), (Some("viewer"), &viewer), (Some("operator"), &operator), (Some("admin"), admin)];
    // Empty params: the mutating methods refuse them (each needs a device or a file name), so nothing stored changes;
    // cleanup_old_files runs, and deletes nothing under the default policy.
    let params = json!({});
    for m in spec.methods() {
        let required = m.role();
        for (have, client) in callers {
            let who = have.unwrap_or("an unauthenticated client");
            let error = client.call(m.name(), params.clone()).await.err();
            if let Some(e) = &error {
                assert_ne!(
                    code(e),
                    errors::METHOD_NOT_FOUND as i64,
                    "{} is in the spec but not on the server",
                    m.name()
                );
                assert_documented(spec, &m, e, &params);
            }
            let c = error.as_ref().map(code);
            match have {
                _ if required == "public" => assert!(
                    !matches!(c, Some(UNAUTHENTICATED | PERMISSION_DENIED)),
                    "{} is public but {who} got {error:?}",
                    m.name()
                ),
                None => assert_eq!(c, Some(UNAUTHENTICATED), "{} called by {who}: {error:?}", m.name()),
                Some(have) if role_rank(have) < role_rank(required) => {
                    let e = error.as_ref().expect("refused");
                    assert_eq!(c, Some(PERMISSION_DENIED), "{} called by {who}: {e}", m.name());
                    assert_eq!(e["data"]["required_role"], required, "{}: {e}", m.name());
                    assert_eq!(e["data"]["have_role"], have, "{}: {e}", m.name());
                }
                Some(_) => assert!(
                    !matches!(c, Some(UNAUTHENTICATED | PERMISSION_DENIED)),
                    "{} needs {required} but {who} got {error:?}",
                    m.name()
                ),
            }
        }
    }
}

/// (c) Missing, wrong-typed, rule-breaking and unknown params are refused with -32602 naming the parameter, and values
/// right at a limit are not. Calls to the mutating methods here all fail, so none changes anything: in parameter
/// checking, or, for values at a limit, because they name no camera (start_recording checks duration and format
/// first) or no file.
async fn params_are_checked_as_the_spec_says(spec: &Spec, admin: &Client) {
    for m in spec.methods() {
        let base = m.base_params();
        let at_limit_base = match m.name() {
            "add_external_stream" | "remove_external_stream" | "create_stream_key" => None,
            _ if MUTATING.contains(&m.name()) && base.contains_key("device") => {
                Some(with(&base, "device", json!(ABSENT_CAMERA)))
            }
            _ => Some(Value::Object(base.clone())),
        };
        expect_invalid(spec, admin, &m, with(&base, UNKNOWN_PARAM, json!(true)), UNKNOWN_PARAM).await;
        let params = m.params();
        for p in params.iter().filter(|p| p.required) {
            expect_invalid(spec, admin, &m, without(&base, p.name), p.name).await;
        }
        for p in &params {
            expect_invalid(spec, admin, &m, with(&base, p.name, wrong_type(p.schema)), p.name).await;
            for bad in invalid_values(spec, p.schema) {
                expect_invalid(spec, admin, &m, with(&base, p.name, bad), p.name).await;
            }
            let Some(Value::Object(at_limit_base)) = &at_limit_base else { continue };
            for fine in at_limit_values(spec, p.schema) {
                let params = with(at_limit_base, p.name, fine);
                if let Err(e) = admin.call(m.name(), params.clone()).await {
                    let named = e["data"]["param"].as_str().unwrap_or_default();
                    let about_p = named == p.name || named.starts_with(&format!("{}.", p.name));
                    assert!(
                        !(code(&e) == INVALID_PARAMS && about_p),
                        "{} {params}: a value at the spec's limit is refused: {e}",
                        m.name()
                    );
                    assert_documented(spec, &m, &e, &params);
                }
            }
        }
        if !MUTATING.contains(&m.name()) {
            // The params the spec calls required are enough: the optional ones may be left out.
            let r = admin.call(m.name(), Value::Object(base.clone())).await;
            if let Err(e) = r {
                assert_ne!(code(&e), INVALID_PARAMS, "{} with only its required params {base:?}: {e}", m.name());
                assert_documented(spec, &m, &e, &Value::Object(base.clone()));
            }
        }
        // A parameter required only when another has some value: refused without it, accepted with it.
        for (param, condition) in m.raw["x-required-if"].as_object().into_iter().flatten() {
            let mut request = base.clone();
            for (other, value) in condition.as_object().expect("a condition is an object") {
                request.insert(other.clone(), value.clone());
            }
            expect_invalid(spec, admin, &m, without(&request, param), param).await;
            let schema = params.iter().find(|p| p.name == param).expect("a parameter of the method").schema;
            let complete = with(&request, param, example_of(schema));
            if let Err(e) = admin.call(m.name(), complete.clone()).await {
                assert_ne!(code(&e), INVALID_PARAMS, "{} {complete}: {e}", m.name());
                assert_documented(spec, &m, &e, &complete);
            }
        }
        if let Some(group) = m.raw["x-exactly-one-of"].as_array() {
            let names: Vec<&str> = group.iter().map(|n| n.as_str().expect("param name")).collect();
            let all: Map<String, Value> = params
                .iter()
                .filter(|p| names.contains(&p.name))
                .map(|p| (p.name.to_owned(), example_of(p.schema)))
                .collect();
            for request in [json!({}), Value::Object(all)] {
                let e = admin.call(m.name(), request.clone()).await.expect_err("exactly one is required");
                assert_eq!(code(&e), INVALID_PARAMS, "{} {request}: {e}", m.name());
                let named = e["data"]["param"].as_str().unwrap_or_default();
                assert!(names.contains(&named), "{} {request}: data.param {named:?} is not one of {names:?}", m.name());
            }
        }
    }
}

/// (d) Every method that does not change cameras or files, called with its spec example's params (device cam0),
/// returns what its result schema says. (set_retention_policy's example is the default policy, so the walk leaves the
/// policy as it found it.)
async fn read_results_match_the_spec(spec: &Spec, admin: &Client) {
    let skipped = |m: &Method<'_>| MUTATING.contains(&m.name()) || NEEDS_A_FILE.contains(&m.name());
    for m in spec.methods().into_iter().filter(|m| !skipped(m)) {
        let mut params = m.example_params();
        if m.name() == "authenticate" {
            params.insert("auth_token".into(), json!(common::token("admin", 3600)));
        }
        let params = Value::Object(params);
        let result =
            admin.call(m.name(), params.clone()).await.unwrap_or_else(|e| panic!("{} {params} failed: {e}", m.name()));
        let schema = m.result_schema();
        for field in schema["required"].as_array().into_iter().flatten() {
            let field = field.as_str().expect("field name");
            assert!(result.get(field).is_some(), "{} result lacks {field:?}: {result:#}", m.name());
        }
        assert_conforms(spec, schema, &result, &format!("result of {} {params}", m.name()));
        match m.name() {
            "get_camera_status" => assert_eq!(result["status"], "CONNECTED", "{result}"),
            "get_camera_capabilities" => assert_eq!(result["validation_status"], "CONFIRMED", "{result}"),
            "get_system_status" => assert_eq!(result["available_cameras"], json!(["cam0"]), "{result}"),
            "authenticate" => assert_eq!(result["role"], "admin", "{result}"),
            "get_server_info" => {
                let formats = &spec.0["components"]["schemas"]["RecordingFormat"]["enum"];
                assert_eq!(&result["supported_formats"], formats, "{result}");
            }
            "get_metrics" => assert_eq!(result["recording_metrics"]["active"], 0, "{result}"),
            "list_recordings" | "list_snapshots" => {
                assert_eq!((&result["files"], &result["total"]), (&json!([]), &json!(0)), "nothing yet: {result}")
            }
            "set_retention_policy" => {
                let policy = admin.call("get_storage_info", json!({})).await.expect("get_storage_info");
                let expected =
                    json!({ "policy_type": "age", "max_age_days": 30.0, "max_size_gb": null, "enabled": true });
                assert_eq!(policy["retention_policy"], expected, "the policy in force after {params}: {policy}");
            }
            _ => {}
        }
    }
}

/// (d) for discovery: a host probed for RTSP (the test camera, which serves none of the common paths: the device is
/// reported, nothing is found), and periodic scanning turned on and off. The spec test's camhub has no discovery
/// interfaces, so nothing is multicast.
async fn discovery_as_the_spec_says(spec: &Spec, hub: &Camhub, cam: &TestCam) {
    let operator = hub.client("operator").await;
    let admin = hub.client("admin").await;
    let host = format!("127.0.0.1:{}", cam.port);
    let params = json!({ "hosts": [host], "timeout_ms": 1000 });
    let found = call_conforming(spec, &operator, "discover_external_streams", params).await;
    assert_eq!((&found["total_found"], &found["scanned"]["interfaces"]), (&json!(0), &json!([])), "{found}");
    let device = found["devices"].as_array().and_then(|d| d.iter().find(|d| d["address"] == host.as_str()));
    let device = device.unwrap_or_else(|| panic!("no device {host}: {found:#}"));
    assert_eq!((&device["source"], &device["status"]), (&json!("rtsp_probe"), &json!("NO_STREAMS")), "{device}");
    assert!(found["errors"].to_string().contains("no video at the common paths"), "{found:#}");
    let nothing = call_conforming(spec, &operator, "discover_external_streams", json!({})).await;
    assert!(nothing["message"].as_str().is_some_and(|m| m.starts_with("nothing to scan")), "{nothing}");

    let on = call_conforming(spec, &admin, "set_discovery_interval", json!({ "scan_interval": 10 })).await;
    assert_eq!((&on["scan_interval"], &on["discovery_active"]), (&json!(10), &json!(true)), "{on}");
    let status = call_conforming(spec, &admin, "get_system_status", json!({})).await;
    assert_eq!(status["discovery_active"], true, "{status}");
    let off = call_conforming(spec, &admin, "set_discovery_interval", json!({ "scan_interval": 0 })).await;
    assert_eq!(off["scan_interval"], 0, "{off}");
}

/// (d) for the streaming methods: withdraw cam0 and publish it again, with the documented refusal on the way.
async fn streaming_round_trip_as_the_spec_says(spec: &Spec, hub: &Camhub) {
    let operator = hub.client("operator").await;
    let params = json!({ "device": "cam0" });
    let stop = spec.method("stop_streaming");
    let stopped = call_conforming(spec, &operator, stop.name(), params.clone()).await;
    assert_eq!(stopped["status"], "STOPPED", "{stopped}");
    let e = call_refused(spec, &operator, stop.name(), params.clone(), errors::INVALID_STATE).await;
    assert_eq!(e["data"]["state"], "STOPPED", "{e}");
    let status = call_conforming(spec, &operator, "get_stream_status", params.clone()).await;
    assert_eq!((&status["status"], &status["start_time"]), (&json!("INACTIVE"), &Value::Null), "{status}");
    let url = call_conforming(spec, &operator, "get_stream_url", params.clone()).await;
    assert_eq!(url["available"], false, "{url}");
    let camera = call_conforming(spec, &operator, "get_camera_status", params.clone()).await;
    assert_eq!(camera["streams"]["rtsp"], "", "a withdrawn camera has no stream URL: {camera}");
    let started = call_conforming(spec, &operator, "start_streaming", params.clone()).await;
    assert_eq!(started["status"], "STARTED", "{started}");
    let again = call_conforming(spec, &operator, "start_streaming", params.clone()).await;
    assert_eq!(again["start_time"], started["start_time"], "starting a published camera changes nothing");
    let camera = call_conforming(spec, &operator, "get_camera_status", params).await;
    assert_eq!(camera["streams"]["rtsp"], hub.rtsp_url("cam0"), "{camera}");
}

/// (d) for stream keys: one created (its key shown once), listed by prefix, revoked; the refusals the spec documents.
async fn stream_keys_round_trip_as_the_spec_says(spec: &Spec, hub: &Camhub) {
    let operator = hub.client("operator").await;
    let created = call_conforming(spec, &operator, "create_stream_key", json!({ "name": "Spec Pushed" })).await;
    let (device, key) = (created["device"].clone(), created["stream_key"].as_str().expect("key").to_owned());
    assert_eq!(device, "spec-pushed", "{created}");
    let e = call_refused(spec, &operator, "create_stream_key", json!({ "name": "spec pushed" }), errors::INVALID_STATE)
        .await;
    assert_eq!(e["data"]["state"], "CAMERA_EXISTS", "{e}");
    let listed = call_conforming(spec, &operator, "list_stream_keys", json!({})).await;
    let entry = listed["keys"].as_array().expect("keys").iter().find(|k| k["device"] == device).cloned();
    let entry = entry.unwrap_or_else(|| panic!("{device} listed: {listed}"));
    assert!(key.starts_with(entry["key_prefix"].as_str().expect("prefix")) && !listed.to_string().contains(&key));
    assert_eq!((&entry["publishing"], &entry["protocol"]), (&json!(false), &Value::Null), "{entry}");
    let camera = call_conforming(spec, &operator, "get_camera_status", json!({ "device": device })).await;
    assert_eq!((&camera["source_type"], &camera["status"]), (&json!("push"), &json!("DISCONNECTED")), "{camera}");
    let e = call_refused(spec, &operator, "revoke_stream_key", json!({ "device": "cam0" }), errors::NOT_FOUND).await;
    assert_eq!(e["data"]["resource"], "stream key", "{e}");
    let revoked = call_conforming(spec, &operator, "revoke_stream_key", json!({ "device": device })).await;
    assert_eq!(revoked["revoked"], true, "{revoked}");
    let e = call_refused(spec, &operator, "revoke_stream_key", json!({ "device": device }), errors::NOT_FOUND).await;
    assert_eq!(e["data"]["resource"], "camera", "{e}");
}

/// (d) for the mutating methods, and the notifications: add a stream (the test camera's second feed), see it announced
/// and connected, then remove it, by id and by URL; the refusals the spec documents on the way.
async fn a_throwaway_stream_is_added_and_removed_as_the_spec_says(spec: &Spec, hub: &Camhub, cam: &TestCam) {
    let add = spec.method("add_external_stream");
    let remove = spec.method("remove_external_stream");
    let operator = hub.client("operator").await;
    let r = operator
        .call("subscribe_events", json!({ "topics": ["camera.added", "camera.connected", "camera.removed"] }))
        .await;
    assert!(r.is_ok(), "{r:?}");
    let url = cam.url(1);
    let device = "spec-throwaway";

    let params = json!({ "stream_url": url, "stream_name": "Spec Throwaway" });
    let added = operator.call(add.name(), params.clone()).await.unwrap_or_else(|e| panic!("{params}: {e}"));
    assert_conforms(spec, add.result_schema(), &added, "result of add_external_stream");
    assert_eq!(added["device"], device, "{added}");

    let note =
        operator.wait_notification("event", SLOW, |p| p["topic"] == "camera.added" && p["device"] == device).await;
    let note = note.expect("an event notification for camera.added");
    assert_conforms(spec, spec.notification_schema("event"), &note, "event notification (camera.added)");
    let update = operator
        .wait_notification("camera_status_update", SLOW, |p| p["device"] == device && p["status"] == "CONNECTED")
        .await
        .unwrap_or_else(|| panic!("no camera_status_update CONNECTED for {device}; log:\n{}", hub.log()));
    assert_conforms(spec, spec.notification_schema("camera_status_update"), &update, "camera_status_update");
    let note =
        operator.wait_notification("event", SLOW, |p| p["topic"] == "camera.connected" && p["device"] == device).await;
    let note = note.expect("an event notification for camera.connected");
    assert_conforms(spec, spec.notification_schema("event"), &note, "event notification (camera.connected)");

    let streams = operator.call("get_external_streams", json!({})).await.expect("get_external_streams");
    assert_conforms(spec, spec.method("get_external_streams").result_schema(), &streams, "get_external_streams");
    let mine = streams["external_streams"].as_array().expect("array").iter().find(|s| s["device"] == device);
    assert_eq!(mine.map(|s| &s["origin"]), Some(&json!("api")), "{streams}");

    // Documented refusals that change nothing: the same URL again, removing a configured camera.
    let again = json!({ "stream_url": url, "stream_name": "Another Name" });
    let e = operator.call(add.name(), again.clone()).await.expect_err("a URL can be added once");
    assert_eq!(code(&e), errors::INVALID_STATE as i64, "{e}");
    assert_documented(spec, &add, &e, &again);
    let configured = json!({ "device": "cam0" });
    let e = operator.call(remove.name(), configured.clone()).await.expect_err("configured cameras stay");
    assert_eq!(code(&e), errors::INVALID_STATE as i64, "{e}");
    assert_documented(spec, &remove, &e, &configured);

    let params = json!({ "device": device });
    let removed = operator.call(remove.name(), params.clone()).await.unwrap_or_else(|e| panic!("{params}: {e}"));
    assert_conforms(spec, remove.result_schema(), &removed, "result of remove_external_stream");
    assert_eq!(removed["removed"], true, "{removed}");
    let note =
        operator.wait_notification("event", SLOW, |p| p["topic"] == "camera.removed" && p["device"] == device).await;
    let note = note.expect("an event notification for camera.removed");
    assert_conforms(spec, spec.notification_schema("event"), &note, "event notification (camera.removed)");

    let status = spec.method("get_camera_status");
    let e = operator.call(status.name(), params.clone()).await.expect_err("the camera is gone");
    assert_eq!((code(&e), &e["data"]["resource"]), (errors::NOT_FOUND as i64, &json!("camera")), "{e}");
    assert_documented(spec, &status, &e, &params);
    let e = operator.call(remove.name(), params.clone()).await.expect_err("removed twice");
    assert_eq!(code(&e), errors::NOT_FOUND as i64, "{e}");
    assert_documented(spec, &remove, &e, &params);

    // Once more, removed by URL this time.
    let params = json!({ "stream_url": url, "stream_name": "Spec Throwaway", "stream_type": "RTSP" });
    let added = operator.call(add.name(), params.clone()).await.unwrap_or_else(|e| panic!("{params}: {e}"));
    assert_conforms(spec, add.result_schema(), &added, "result of add_external_stream");
    let params = json!({ "stream_url": url });
    let removed = operator.call(remove.name(), params.clone()).await.unwrap_or_else(|e| panic!("{params}: {e}"));
    assert_conforms(spec, remove.result_schema(), &removed, "result of remove_external_stream");
    assert_eq!((&removed["removed"], &removed["device"]), (&json!(true), &json!(device)), "{removed}");
    let e = operator.call(remove.name(), params.clone()).await.expect_err("removed twice");
    assert_eq!((code(&e), &e["data"]["resource"]), (errors::NOT_FOUND as i64, &json!("stream")), "{e}");
    assert_documented(spec, &remove, &e, &params);
}

/// Calls `method` like `Client::call`, but waits up to `SLOW` for the response (snapshots decode and recordings
/// finalise on a loaded machine). Sent with a string id, so the response arrives among the client's other frames.
async fn call_slow(client: &Client, method: &str, params: &Value) -> Result<Value, Value> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = format!("slow-{}", NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    client.send_raw(&json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }).to_string());
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let frame =
            client.next_other(left).await.unwrap_or_else(|| panic!("no response to {method} {params} in {SLOW:?}"));
        if frame["id"] == id.as_str() {
            return match frame.get("error") {
                Some(e) => Err(e.clone()),
                None => Ok(frame["result"].clone()),
            };
        }
    }
}

/// Calls `method`, which must succeed and return what its result schema says.
async fn call_conforming(spec: &Spec, client: &Client, method: &str, params: Value) -> Value {
    let result = call_slow(client, method, &params).await.unwrap_or_else(|e| panic!("{method} {params}: {e}"));
    assert_conforms(spec, spec.method(method).result_schema(), &result, &format!("result of {method} {params}"));
    result
}

/// Calls `method`, which must fail with `expected`, an error its spec entry documents.
async fn call_refused(spec: &Spec, client: &Client, method: &str, params: Value, expected: i32) -> Value {
    let e = call_slow(client, method, &params).await.expect_err(&format!("{method} {params} is refused"));
    assert_eq!(code(&e), expected as i64, "{method} {params}: {e}");
    assert_documented(spec, &spec.method(method), &e, &params);
    e
}

/// Waits for a notification and checks it against its spec entry.
async fn conforming_notification(
    spec: &Spec,
    hub: &Camhub,
    client: &Client,
    method: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let note = client
        .wait_notification(method, SLOW, pred)
        .await
        .unwrap_or_else(|| panic!("no matching {method} notification; log:\n{}", hub.log()));
    assert_conforms(spec, spec.notification_schema(method), &note, &format!("{method} notification"));
    note
}

/// One HTTP/1.1 request on a real socket: (status, lowercased head, body).
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to camhub");
    s.set_read_timeout(Some(SLOW)).expect("timeout");
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    s.write_all(format!("{request}\r\n").as_bytes()).expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read the response");
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete head");
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status code");
    (status, head, raw[split + 4..].to_vec())
}

/// Downloads one file the way `x-files` says: credentials (Bearer or X-API-Key), Range, HEAD, content type, and the
/// refusals, each with a status `x-files` lists.
fn download_as_the_spec_says(spec: &Spec, hub: &Camhub, api_key: &str, kind: &str, file: &Value, content_type: &str) {
    let x = &spec.0["x-files"];
    let route = x["routes"][kind].as_str().expect("an x-files route");
    let url = file["download_url"].as_str().expect("download_url");
    let prefix = route.strip_suffix("{name}").expect("routes end in {name}");
    assert!(url.starts_with(prefix) && !url[prefix.len()..].contains('/'), "{url} is not under {route}");
    let size = file["file_size"].as_u64().expect("file_size") as usize;
    let bearer = format!("Bearer {}", hub.token("viewer"));
    let request = |method: &str, path: &str, headers: &[(&str, &str)]| {
        let (status, head, body) = http(hub.port, method, path, headers);
        assert!(x["status"][status.to_string()].is_string(), "{method} {path}: status {status} is not in x-files");
        (status, head, body)
    };
    let (status, head, _) = request("GET", url, &[]);
    assert_eq!(status, 401, "{url} without credentials: {head}");
    let (status, ..) = request("GET", url, &[("Authorization", "Bearer forged")]);
    assert_eq!(status, 401, "{url} with a forged token");
    let (status, head, body) = request("GET", url, &[("Authorization", &bearer)]);
    assert_eq!((status, body.len()), (200, size), "{url} with a Bearer token: {head}");
    assert!(head.contains(&format!("content-type: {content_type}")), "{url}: {head}");
    let (status, head, body) = request("GET", url, &[("X-API-Key", api_key)]);
    assert_eq!((status, body.len()), (200, size), "{url} with X-API-Key: {head}");
    let (status, head, body) = request("GET", url, &[("Authorization", &bearer), ("Range", "bytes=0-9")]);
    assert_eq!((status, body.len()), (206, 10), "{url} bytes=0-9: {head}");
    assert!(head.contains(&format!("content-range: bytes 0-9/{size}")), "{url}: {head}");
    let (status, head, _) = request("GET", url, &[("Authorization", &bearer), ("Range", &format!("bytes={size}-"))]);
    assert_eq!(status, 416, "{url} bytes={size}-: {head}");
    let (status, head, body) = request("HEAD", url, &[("Authorization", &bearer)]);
    assert_eq!((status, body.len()), (200, 0), "HEAD {url}: {head}");
    assert!(head.contains(&format!("content-length: {size}")), "HEAD {url}: {head}");
    for name in ["..%2Fcamhub.db", ".hidden", "a%5Cb"] {
        let (status, head, _) = request("GET", &format!("{prefix}{name}"), &[("Authorization", &bearer)]);
        assert_eq!(status, 400, "{prefix}{name}: {head}");
    }
    let (status, head, _) = request("GET", &format!("{prefix}spec-absent.mp4"), &[("Authorization", &bearer)]);
    assert_eq!(status, 404, "{prefix}spec-absent.mp4: {head}");
}

/// (d) for the file methods, and recording_status_update: snapshots taken (named and default), a recording started
/// and stopped after 2 s and one ended by its duration, each announced to a client that never subscribed; all of them
/// listed, described, downloaded and deleted; the refusals the spec documents on the way.
async fn snapshots_and_recordings_round_trip_as_the_spec_says(spec: &Spec, hub: &Camhub) {
    let operator = hub.client("operator").await;
    let admin = hub.client("admin").await;
    // Gets recording_status_update without subscribing to anything.
    let bystander = hub.client("viewer").await;
    let topics = json!({ "topics": ["recording.start", "recording.stop", "recording.error", "snapshot.taken"] });
    call_conforming(spec, &operator, "subscribe_events", topics).await;
    let event = |topic: &'static str, filename: String| {
        move |p: &Value| p["topic"] == topic && p["device"] == "cam0" && p["data"]["filename"] == filename.as_str()
    };

    // Snapshots: a named one (".jpg" is added), one with the default name, and the same name again.
    let named =
        call_conforming(spec, &operator, "take_snapshot", json!({ "device": "cam0", "filename": "spec-snap" })).await;
    assert_eq!(
        (&named["device"], &named["filename"], &named["status"]),
        (&json!("cam0"), &json!("spec-snap.jpg"), &json!("SUCCESS"))
    );
    assert_eq!(named["file_path"], named["download_url"], "{named}");
    let on_disk = std::fs::metadata(hub.dir.join("snapshots").join("spec-snap.jpg")).expect("the snapshot file").len();
    assert_eq!(named["file_size"], on_disk, "{named}");
    let taken = event("snapshot.taken", "spec-snap.jpg".into());
    let note = conforming_notification(spec, hub, &operator, "event", taken).await;
    assert_eq!(note["data"]["file_size"], on_disk, "{note}");
    let unnamed = call_conforming(spec, &operator, "take_snapshot", json!({ "device": "cam0" })).await;
    let unnamed_name = unnamed["filename"].as_str().expect("filename").to_owned();
    assert!(unnamed_name.starts_with("cam0_") && unnamed_name.ends_with(".jpg"), "{unnamed}");
    let again = json!({ "device": "cam0", "filename": "spec-snap.jpg" });
    call_refused(spec, &operator, "take_snapshot", again, errors::INVALID_STATE).await;

    // A recording stopped on request after about 2 s.
    let started = call_conforming(spec, &operator, "start_recording", json!({ "device": "cam0" })).await;
    let first = started["filename"].as_str().expect("filename").to_owned();
    assert_eq!((&started["status"], &started["format"]), (&json!("RECORDING"), &json!("fmp4")), "{started}");
    call_refused(spec, &operator, "start_recording", json!({ "device": "cam0" }), errors::INVALID_STATE).await;
    let metrics = call_conforming(spec, &admin, "get_metrics", json!({})).await;
    assert_eq!(metrics["recording_metrics"]["active"], 1, "{metrics}");
    let storage = call_conforming(spec, &admin, "get_storage_info", json!({})).await;
    assert_eq!(storage["active_recordings"], 1, "{storage}");
    let note =
        conforming_notification(spec, hub, &bystander, "recording_status_update", |p| p["status"] == "STARTED").await;
    assert_eq!((&note["device"], &note["filename"], &note["duration"]), (&json!("cam0"), &json!(first), &json!(0.0)));
    conforming_notification(spec, hub, &operator, "event", event("recording.start", first.clone())).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stopped = call_conforming(spec, &operator, "stop_recording", json!({ "device": "cam0" })).await;
    assert_eq!((&stopped["status"], &stopped["filename"]), (&json!("STOPPED"), &json!(first)), "{stopped}");
    assert_eq!((&stopped["start_time"], &stopped["format"]), (&started["start_time"], &started["format"]));
    let duration = stopped["duration"].as_f64().expect("duration");
    assert!(duration >= 1.5, "2 s of recording (plus pre-roll) lasted {duration} s: {stopped}");
    assert!(stopped["file_size"].as_u64().is_some_and(|n| n > 0), "{stopped}");
    call_refused(spec, &operator, "stop_recording", json!({ "device": "cam0" }), errors::INVALID_STATE).await;
    let note =
        conforming_notification(spec, hub, &bystander, "recording_status_update", |p| p["status"] == "STOPPED").await;
    assert_eq!((&note["filename"], &note["duration"]), (&json!(first), &stopped["duration"]), "{note}");
    assert_eq!(note["file_size"], stopped["file_size"], "{note}");
    conforming_notification(spec, hub, &operator, "event", event("recording.stop", first.clone())).await;

    // A recording in another container that its duration ends.
    let params = json!({ "device": "cam0", "duration": 2, "format": "mkv" });
    let timed = call_conforming(spec, &operator, "start_recording", params).await;
    let second = timed["filename"].as_str().expect("filename").to_owned();
    assert_eq!((&timed["format"], &timed["duration"]), (&json!("mkv"), &json!(2.0)), "{timed}");
    assert!(second.ends_with(".mkv"), "{timed}");
    let note = conforming_notification(spec, hub, &bystander, "recording_status_update", |p| {
        p["status"] == "STOPPED" && p["filename"] == second.as_str()
    })
    .await;
    assert!(note["duration"].as_f64().is_some_and(|d| d >= 1.5), "{note}");

    // Listed newest first, paged, described.
    let all = call_conforming(spec, &admin, "list_recordings", json!({})).await;
    let names: Vec<&str> =
        all["files"].as_array().expect("files").iter().map(|f| f["filename"].as_str().expect("name")).collect();
    assert_eq!((names, &all["total"]), (vec![second.as_str(), first.as_str()], &json!(2)), "{all}");
    let page = call_conforming(spec, &admin, "list_recordings", json!({ "limit": 1, "offset": 1 })).await;
    assert_eq!((&page["files"][0], &page["total"]), (&all["files"][1], &json!(2)), "{page}");
    for file in all["files"].as_array().expect("files") {
        let info = call_conforming(spec, &admin, "get_recording_info", json!({ "filename": file["filename"] })).await;
        assert_eq!(&info, file, "get_recording_info and list_recordings agree");
    }
    let snapshots = call_conforming(spec, &admin, "list_snapshots", json!({})).await;
    let mut names: Vec<&str> =
        snapshots["files"].as_array().expect("files").iter().map(|f| f["filename"].as_str().expect("name")).collect();
    names.sort();
    assert_eq!(names, [unnamed_name.as_str(), "spec-snap.jpg"], "{snapshots}");
    for file in snapshots["files"].as_array().expect("files") {
        let info = call_conforming(spec, &admin, "get_snapshot_info", json!({ "filename": file["filename"] })).await;
        assert_eq!(&info, file, "get_snapshot_info and list_snapshots agree");
    }
    let storage = call_conforming(spec, &admin, "get_storage_info", json!({})).await;
    let sizes = |list: &Value| {
        list["files"].as_array().expect("files").iter().map(|f| f["file_size"].as_u64().expect("size")).sum::<u64>()
    };
    assert_eq!(
        (&storage["recordings_size"], &storage["snapshots_size"]),
        (&json!(sizes(&all)), &json!(sizes(&snapshots)))
    );

    // Downloaded as x-files says.
    let key = hub.api_key("viewer");
    download_as_the_spec_says(spec, hub, &key, "snapshots", &snapshots["files"][0], "image/jpeg");
    download_as_the_spec_says(spec, hub, &key, "recordings", &all["files"][0], "video/x-matroska");
    download_as_the_spec_says(spec, hub, &key, "recordings", &all["files"][1], "video/mp4");

    // Deleted, then gone.
    for (kind, names) in [("recording", vec![first, second]), ("snapshot", vec!["spec-snap.jpg".into(), unnamed_name])]
    {
        for name in names {
            let params = json!({ "filename": name });
            let deleted = call_conforming(spec, &admin, &format!("delete_{kind}"), params.clone()).await;
            assert_eq!((&deleted["filename"], &deleted["deleted"]), (&json!(name), &json!(true)), "{deleted}");
            for method in [format!("delete_{kind}"), format!("get_{kind}_info")] {
                let e = call_refused(spec, &admin, &method, params.clone(), errors::NOT_FOUND).await;
                assert_eq!(e["data"]["resource"], kind, "{e}");
            }
            assert!(!hub.dir.join(format!("{kind}s")).join(&name).exists(), "{name} is still on disk");
        }
        let list = call_conforming(spec, &admin, &format!("list_{kind}s"), json!({})).await;
        assert_eq!((&list["files"], &list["total"]), (&json!([]), &json!(0)), "{list}");
    }
}

// ---- transport rules ----

#[tokio::test]
async fn transport_rules_hold_as_the_spec_says() {
    let spec = Spec::load();
    let t = &spec.0["x-transport"];
    let max_bytes = 2048;
    let server_keys = format!("max_message_bytes = {max_bytes}\nrate_limit_per_sec = 1\nrate_limit_burst = 3");
    let hub = Camhub::start_with_server_keys(&server_keys, "");
    let client = Client::connect(&hub.ws_url()).await;
    let wait = Duration::from_secs(10);

    // Refused before the rate limiter: batches, oversized frames, a missing jsonrpc version.
    client.send_raw(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#);
    let reply = client.next_other(wait).await.expect("a reply to a batch");
    assert_eq!(reply["error"]["code"], t["batches"]["error"], "{reply}");
    assert_eq!(reply["id"], t["batches"]["responseId"], "{reply}");

    let padding = "x".repeat(max_bytes);
    client
        .send_raw(&json!({ "jsonrpc": "2.0", "id": "big", "method": "ping", "params": { "p": padding } }).to_string());
    let reply = client.next_other(wait).await.expect("a reply to an oversized frame");
    assert_eq!(reply["error"]["code"], t["maxMessageBytes"]["error"], "{reply}");
    // The contract's clients wait on their id: the reply names it when the frame's start does (see tests/compat.rs).
    assert!(t["maxMessageBytes"]["responseId"].as_str().is_some_and(|r| r.starts_with("the request's id")), "{t}");
    assert_eq!(reply["id"], "big", "{reply}");

    client.send_raw(r#"{"id":"v","method":"ping"}"#);
    let reply = client.next_other(wait).await.expect("a reply to a request without jsonrpc");
    assert_eq!(reply["error"]["code"], t["jsonrpcVersion"]["error"], "{reply}");
    assert_eq!(reply["id"], "v", "{reply}");

    // String ids are echoed; a notification runs but gets no response. (Three requests: the whole burst.)
    client.send_raw(r#"{"jsonrpc":"2.0","id":"s-1","method":"ping"}"#);
    let reply = client.next_other(wait).await.expect("a reply to a string id");
    assert_eq!((&reply["id"], &reply["result"]), (&json!("s-1"), &json!("pong")), "{reply}");
    client.send_raw(r#"{"jsonrpc":"2.0","method":"ping"}"#);
    client.send_raw(r#"{"jsonrpc":"2.0","id":"after","method":"ping"}"#);
    let reply = client.next_other(wait).await.expect("a reply to the request after the notification");
    assert_eq!(reply["id"], "after", "the notification got a response: {reply}");
    let extra = client.next_other(Duration::from_millis(500)).await;
    assert!(extra.is_none(), "the notification got a response: {extra:?}");

    // Past the burst, -32040 with retry_after_ms; after waiting that long a call succeeds.
    let mut limited = None;
    for _ in 0..20 {
        if let Err(e) = client.call("ping", json!({})).await {
            limited = Some(e);
            break;
        }
    }
    let e = limited.expect("a burst past the limit is refused");
    assert_eq!(e["code"], t["rateLimit"]["error"], "{e}");
    let ping = spec.method("ping");
    assert_documented(&spec, &ping, &e, &json!({}));
    let retry = e["data"]["retry_after_ms"].as_u64().expect("retry_after_ms");
    assert!((1..=1000).contains(&retry), "retry_after_ms {retry} at 1 request per second");
    tokio::time::sleep(Duration::from_millis(retry + 50)).await;
    let r = client.call("ping", json!({})).await;
    assert_eq!(r, Ok(json!("pong")), "after waiting retry_after_ms");
}
