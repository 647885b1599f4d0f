//! The OpenAPI document parses, covers every route, and is served.

use crate::common::*;
use std::collections::BTreeSet;

fn spec() -> serde_yaml::Value {
    serde_yaml::from_str(include_str!("../../openapi.yaml")).expect("openapi.yaml parses")
}

#[test]
fn every_route_has_a_spec_entry_and_every_entry_a_route() {
    let spec = spec();
    assert_eq!(spec["openapi"].as_str(), Some("3.1.0"));
    let paths = spec["paths"].as_mapping().expect("paths");
    let mut in_spec = BTreeSet::new();
    for (path, item) in paths {
        for (method, op) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap().to_uppercase();
            assert!(
                op["responses"].as_mapping().is_some_and(|r| !r.is_empty()),
                "{method} {path:?} has no responses"
            );
            in_spec.insert((method, path.as_str().unwrap().to_owned()));
        }
    }
    let in_code: BTreeSet<(String, String)> = checkout_server::http::route_table()
        .into_iter()
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
        .collect();
    let missing: Vec<_> = in_code.difference(&in_spec).collect();
    assert!(
        missing.is_empty(),
        "routes without a spec entry: {missing:?}"
    );
    let stale: Vec<_> = in_spec.difference(&in_code).collect();
    assert!(stale.is_empty(), "spec entries without a route: {stale:?}");
}

#[test]
fn every_reference_resolves() {
    let text = include_str!("../../openapi.yaml");
    let spec = spec();
    for line in text.lines() {
        if let Some(start) = line.find("$ref: '#/") {
            let rest = &line[start + 9..];
            let reference = &rest[..rest.find('\'').unwrap()];
            let mut node = &spec;
            for part in reference.split('/') {
                node = &node[part];
            }
            assert!(!node.is_null(), "dangling $ref {reference}");
        }
    }
}

#[tokio::test]
async fn the_spec_is_served() {
    let app = TestApp::spawn().await;
    let res = app
        .client
        .get(format!("{}/openapi.yaml", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/yaml");
    let body = res.text().await.unwrap();
    assert_eq!(body, include_str!("../../openapi.yaml"));
}
