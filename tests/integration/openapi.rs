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

/// JSON Schema and OpenAPI keywords a schema object of this document may hold. A key outside
/// the list is almost always YAML that did not say what it meant: an unquoted comma in a flow
/// mapping (`{ description: Units per token, 8 decimals. }`) ends the value and turns the rest
/// into a key of its own.
const SCHEMA_KEYWORDS: &[&str] = &[
    "$ref",
    "additionalProperties",
    "allOf",
    "anyOf",
    "const",
    "contentMediaType",
    "contentSchema",
    "default",
    "description",
    "else",
    "enum",
    "examples",
    "format",
    "if",
    "items",
    "maxItems",
    "maxLength",
    "maximum",
    "minItems",
    "minLength",
    "minimum",
    "not",
    "oneOf",
    "pattern",
    "properties",
    "required",
    "then",
    "type",
];

fn check_schema(schema: &serde_yaml::Value, at: &str, stray: &mut Vec<String>) {
    let Some(map) = schema.as_mapping() else {
        return;
    };
    for (key, value) in map {
        let key = key.as_str().unwrap_or("<not a string>");
        if !SCHEMA_KEYWORDS.contains(&key) {
            stray.push(format!("{at}: {key:?}"));
        }
        match key {
            "properties" => {
                for (name, sub) in value.as_mapping().into_iter().flatten() {
                    check_schema(
                        sub,
                        &format!("{at}/{}", name.as_str().unwrap_or("?")),
                        stray,
                    );
                }
            }
            "allOf" | "anyOf" | "oneOf" => {
                for (i, sub) in value.as_sequence().into_iter().flatten().enumerate() {
                    check_schema(sub, &format!("{at}/{key}/{i}"), stray);
                }
            }
            "items" | "not" | "if" | "then" | "else" | "additionalProperties" | "contentSchema" => {
                check_schema(value, &format!("{at}/{key}"), stray);
            }
            _ => {}
        }
    }
}

/// Every `schema` of a parameter, header or media type, found anywhere in the document.
fn check_schemas_under(node: &serde_yaml::Value, at: &str, stray: &mut Vec<String>) {
    match node {
        serde_yaml::Value::Mapping(map) => {
            for (key, value) in map {
                let key = key.as_str().unwrap_or("?");
                if key == "schema" {
                    check_schema(value, &format!("{at}/schema"), stray);
                } else {
                    check_schemas_under(value, &format!("{at}/{key}"), stray);
                }
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                check_schemas_under(item, &format!("{at}/{i}"), stray);
            }
        }
        _ => {}
    }
}

#[test]
fn schemas_hold_only_schema_keywords() {
    let spec = spec();
    let mut stray = Vec::new();
    for (name, schema) in spec["components"]["schemas"].as_mapping().unwrap() {
        check_schema(
            schema,
            &format!("#/components/schemas/{}", name.as_str().unwrap()),
            &mut stray,
        );
    }
    check_schemas_under(&spec["paths"], "#/paths", &mut stray);
    for part in ["parameters", "headers", "responses"] {
        check_schemas_under(
            &spec["components"][part],
            &format!("#/components/{part}"),
            &mut stray,
        );
    }
    assert!(
        stray.is_empty(),
        "keys that are no schema keyword: {stray:#?}"
    );
}
