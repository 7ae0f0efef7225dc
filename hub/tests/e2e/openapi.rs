//! The OpenAPI document the hub serves matches the routes it really serves, both ways.

use crate::harness::*;
use qyt_hub::api::{route_table, Access};
use serde_json::Value;
use std::collections::BTreeSet;

/// Every `$ref` in `v`.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_document_matches_the_router() {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start(config(dir.path())).await;
    let (status, doc) = http_get(hub.http, "/api/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");

    let routes = route_table();
    let served: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.method.as_str().to_lowercase(), r.path.to_string()))
        .collect();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            documented.insert((method.clone(), path.clone()));
            // Every path parameter is declared.
            for name in path
                .split('{')
                .skip(1)
                .map(|p| p.split('}').next().unwrap())
            {
                let declared = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["in"] == "path" && p["name"] == name);
                assert!(declared, "{method} {path}: parameter {name} not declared");
            }
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
        }
    }
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "routes missing from the document: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );

    // The roles each operation admits are the router's.
    for r in &routes {
        let op = &doc["paths"][r.path][r.method.as_str().to_lowercase()];
        let roles: Vec<&str> = op["x-roles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        let expected: Vec<&str> = match r.access {
            Access::Open => vec!["open"],
            Access::Roles(kinds) => kinds.iter().map(|k| k.as_str()).collect(),
        };
        assert_eq!(roles, expected, "{} {}", r.method, r.path);
        let open = op["security"] == serde_json::json!([]);
        assert_eq!(
            open,
            r.access == Access::Open,
            "{} {}: security",
            r.method,
            r.path
        );
    }

    // Every schema it refers to is defined.
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{r}"));
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "{r} is not defined"
        );
    }

    // A route the document does not list is not served.
    let (status, body) = http_get(hub.http, "/api/nothing-here", Some(TOKEN)).await;
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("openapi.json"));
    hub.stop().await;
}
