//! The committed contract files match the code, and the sandbox speaks the vendor wire
//! formats it claims (its answers validate against the committed vendor schemas).

use std::path::Path;

use leadlex::sandbox::Sandbox;
use serde_json::{json, Value};

#[test]
fn committed_contract_files_match_the_code() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi");
    for (path, generated) in leadlex::api::spec::committed_files() {
        let committed = std::fs::read_to_string(dir.join(path)).unwrap_or_default();
        assert!(committed == generated, "openapi/{path} differs from the code: regenerate with `cargo run -- spec --write openapi`");
    }
}

#[test]
fn spec_spells_headers_as_the_public_docs() {
    let spec = leadlex::api::spec::openapi_value();
    let op = &spec["paths"]["/v1/email/enrich"]["post"];
    for (status, resp) in op["responses"].as_object().unwrap() {
        let headers = resp["headers"].as_object().unwrap();
        for h in ["X-Request-ID", "X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"] {
            assert!(headers.contains_key(h), "{status} declares {h}");
        }
    }
    for status in ["409", "429", "503"] {
        assert!(op["responses"][status]["headers"].get("Retry-After").is_some(), "{status} declares Retry-After");
    }
    for status in ["200", "400", "401", "402", "403", "404", "422", "429"] {
        assert!(op["responses"].get(status).is_some(), "{status} is declared");
    }
    assert_eq!(op["parameters"][0]["name"], "Idempotency-Key");
    assert_eq!(spec["components"]["securitySchemes"]["ApiKeyAuth"]["scheme"], "bearer");
}

fn validator(file: &str, definition: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/vendors").join(file);
    let root: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let schema = json!({"$defs": root["$defs"], "$ref": format!("#/$defs/{definition}")});
    jsonschema::validator_for(&schema).expect("schema compiles")
}

fn assert_valid(v: &jsonschema::Validator, instance: &Value) {
    let errors: Vec<String> = v.iter_errors(instance).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{instance}: {errors:?}");
}

#[tokio::test]
async fn sandbox_answers_validate_against_the_vendor_schemas() {
    let sandbox = Sandbox::spawn("127.0.0.1:0", std::time::Duration::ZERO).await.unwrap();
    let base = format!("http://{}", sandbox.addr);
    let http = reqwest::Client::new();
    let get = |path: String, auth: (&'static str, &'static str)| {
        let http = http.clone();
        async move {
            let r = http.get(path).header(auth.0, auth.1).send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let a = ("X-Api-Key", "sandbox");
    let b = ("Authorization", "Bearer sandbox");
    let (pdl_person, pdl_company, pdl_error) = (
        validator("vendor_a.json", "PersonEnrichResponse"),
        validator("vendor_a.json", "CompanyEnrichResponse"),
        validator("vendor_a.json", "ErrorResponse"),
    );
    let (cb_combined, cb_company, cb_error) = (
        validator("vendor_b.json", "CombinedResponse"),
        validator("vendor_b.json", "Company"),
        validator("vendor_b.json", "ErrorResponse"),
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..40 {
        let email = format!("person.{i}@company{i}.com");
        let domain = format!("company{i}.com");
        let (s, body) = get(format!("{base}/vendor_a/v5/person/enrich?email={email}&titlecase=true"), a).await;
        assert_valid(if s == 200 { &pdl_person } else { &pdl_error }, &body);
        seen.insert(("a-person", s));
        let (s, body) = get(format!("{base}/vendor_a/v5/company/enrich?website={domain}"), a).await;
        assert_valid(if s == 200 { &pdl_company } else { &pdl_error }, &body);
        seen.insert(("a-company", s));
        let (s, body) = get(format!("{base}/vendor_b/v2/combined/find?email={email}"), b).await;
        assert_valid(if s == 200 { &cb_combined } else { &cb_error }, &body);
        seen.insert(("b-person", s));
        let (s, body) = get(format!("{base}/vendor_b/v2/companies/find?domain={domain}"), b).await;
        assert_valid(if s == 200 { &cb_company } else { &cb_error }, &body);
        seen.insert(("b-company", s));
    }
    let (s, body) = get(format!("{base}/vendor_b/v2/combined/find?email=queued.1@acme.com"), b).await;
    assert_eq!(s, 202);
    assert_valid(&cb_error, &body);
    let (s, body) = get(format!("{base}/vendor_a/v5/company/enrich?website=acme.com"), ("X-Other", "x")).await;
    assert_eq!(s, 401);
    assert_valid(&pdl_error, &body);
    for kind in ["a-person", "a-company", "b-person", "b-company"] {
        assert!(seen.contains(&(kind, 200)) && seen.contains(&(kind, 404)), "{kind}: both matches and misses checked");
    }
}

#[test]
fn sandbox_is_deterministic_and_vendors_overlap_partially() {
    use leadlex::lookup::vendors::VendorName::{VendorA, VendorB};
    use leadlex::sandbox::data::knows;
    let domains: Vec<String> = (0..1000).map(|i| format!("d{i}.com")).collect();
    let count = |f: &dyn Fn(&str) -> bool| domains.iter().filter(|d| f(d)).count();
    let both = count(&|d| knows(VendorA, d) && knows(VendorB, d));
    let only_a = count(&|d| knows(VendorA, d) && !knows(VendorB, d));
    let only_b = count(&|d| !knows(VendorA, d) && knows(VendorB, d));
    let neither = count(&|d| !knows(VendorA, d) && !knows(VendorB, d));
    assert!(both > 200 && only_a > 200 && only_b > 100 && neither > 50, "{both} {only_a} {only_b} {neither}");
    let d = leadlex::sandbox::data::QueryDomain::parse("d7.com").unwrap();
    assert_eq!(format!("{:?}", leadlex::sandbox::data::company(&d)), format!("{:?}", leadlex::sandbox::data::company(&d)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_serves_the_committed_spec_as_json_and_yaml() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite).await;
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi/leadlex.json")).unwrap())
            .unwrap();
    let json = app.request(app.client.get(format!("{}/openapi.json", app.base))).await;
    assert_eq!(json.status, 200);
    assert_eq!(json.json(), committed, "/openapi.json is the committed spec");
    let yaml = app.request(app.client.get(format!("{}/openapi.yaml", app.base))).await;
    assert_eq!(yaml.header("content-type"), Some("application/yaml; charset=utf-8"));
    let from_yaml: Value = serde_yaml::from_slice(&yaml.bytes).unwrap();
    assert_eq!(from_yaml, committed, "/openapi.yaml says the same");
}

#[test]
fn the_only_api_key_in_the_spec_is_the_documented_placeholder() {
    let text = leadlex::api::spec::openapi_json_text();
    let keys: std::collections::BTreeSet<&str> = text
        .match_indices("wbk_")
        .map(|(at, _)| &text[at..at + text[at..].find(|c: char| !c.is_ascii_alphanumeric() && c != '_').unwrap_or(text.len() - at)])
        .filter(|k| k.len() > 20)
        .collect();
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        [leadlex::api::keys::EXAMPLE_SECRET],
        "a secret-shaped example must be the placeholder"
    );
    assert!(leadlex::auth::is_well_formed(leadlex::api::keys::EXAMPLE_SECRET), "it has a key's shape");
}
