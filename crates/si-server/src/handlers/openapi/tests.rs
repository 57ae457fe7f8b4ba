use std::collections::BTreeSet;

use serde_json::Value;

use super::DOCUMENT;
use crate::endpoints;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

fn document() -> Value {
    serde_json::from_slice(DOCUMENT).unwrap()
}

/// Every operation the document describes, as `(METHOD, path)`.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().unwrap();
    paths
        .iter()
        .flat_map(|(path, item)| {
            let item = item.as_object().unwrap();
            METHODS
                .iter()
                .filter(|method| item.contains_key(**method))
                .map(|method| (method.to_uppercase(), path.clone()))
        })
        .collect()
}

#[test]
fn it_is_json_and_openapi_3_1() {
    let doc = document();
    let version = doc["openapi"].as_str().unwrap();
    assert!(version.starts_with("3.1."), "{version}");
    assert!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string());
}

#[test]
fn every_route_is_documented_and_every_documented_operation_is_a_route() {
    let doc = document();
    let routes: BTreeSet<(String, String)> = endpoints::all()
        .iter()
        .map(|(method, path, _)| (method.to_string(), (*path).to_owned()))
        .collect();
    let documented = documented(&doc);
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes not in openapi.json: {undocumented:?}"
    );
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        unrouted.is_empty(),
        "openapi.json describes no such route: {unrouted:?}"
    );
}

#[test]
fn what_needs_a_bearer_token_says_so() {
    let doc = document();
    for (method, path, endpoint) in endpoints::all() {
        let operation = &doc["paths"][*path][method.as_str().to_lowercase()];
        let security = operation["security"].as_array().unwrap();
        let optional = security.iter().any(|s| s.as_object().unwrap().is_empty());
        let bearer = security.iter().any(|s| !s.as_object().unwrap().is_empty());
        assert_eq!(
            endpoint.needs_bearer(),
            bearer && !optional,
            "{method} {path}: {security:?}"
        );
        // Everything that needs a token can be refused one.
        if endpoint.needs_bearer() {
            assert!(operation["responses"]["401"].is_object(), "{method} {path}");
        }
        // Any connection may be refused before its request is read; beyond
        // that, everything but health checks and scrapes is rate-limited per
        // address and audited (503 when the audit trail cannot be written).
        for status in ["429", "503"] {
            assert!(
                operation["responses"][status].is_object(),
                "{method} {path}: {status}"
            );
        }
    }
}

/// Every `$ref` in `value`, as a JSON pointer into the document.
fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(target)) => found.push(target),
                    _ => refs(value, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_and_every_status_is_one() {
    let doc = document();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let pointer = target.strip_prefix('#').unwrap();
        assert!(
            doc.pointer(pointer).is_some(),
            "{target} resolves to nothing"
        );
    }
    for (method, path) in documented(&doc) {
        let operation = &doc["paths"][&path][method.to_lowercase()];
        for status in operation["responses"].as_object().unwrap().keys() {
            let code: u16 = status.parse().unwrap();
            assert!((100..600).contains(&code), "{method} {path}: {status}");
        }
    }
}
