//! Endpoint coverage: every operation × status declared in `openapi/leadlex.json` was
//! answered at least once during the integration suite, and every response example in
//! the spec was a response the server actually gave (request ids and balances aside),
//! as recorded by `tests/api`'s spec check. Ignored by default because it reads what a full run of `tests/api` recorded:
//! `scripts/test` runs it right after the suite (`-- --ignored`).

use std::{collections::BTreeSet, path::Path};

#[test]
#[ignore = "run by scripts/test after the full integration suite"]
fn every_declared_status_of_every_operation_is_exercised() {
    let spec: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/leadlex.json")).unwrap())
            .unwrap();
    let mut declared = BTreeSet::new();
    for item in spec["paths"].as_object().unwrap().values() {
        for op in item.as_object().unwrap().values() {
            let id = op["operationId"].as_str().unwrap();
            for (status, response) in op["responses"].as_object().unwrap() {
                declared.insert(format!("{id} {status}"));
                for media in response["content"].as_object().into_iter().flatten().map(|(_, m)| m) {
                    for name in media["examples"].as_object().into_iter().flatten().map(|(n, _)| n) {
                        declared.insert(format!("example {id} {status} {name}"));
                    }
                }
            }
        }
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("contract-coverage");
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|_| panic!("{} missing: run the integration suite first", dir.display())) {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        seen.extend(text.lines().map(str::to_string));
    }
    let missing: Vec<&String> = declared.difference(&seen).collect();
    assert!(missing.is_empty(), "never exercised by the integration suite (a status, or an example no response matched): {missing:?}");
}
