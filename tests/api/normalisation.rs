//! Each normalisation rule, observed from outside: differently spelt inputs share one
//! cache entry (the second call says `source: cached`).

use serde_json::json;

use crate::helpers::{sandbox_input, spawn_app, Backend, TestApp};
use crate::on_both_backends;

on_both_backends!(spellings_of_one_input_share_the_cache, email_and_domain_together_use_the_domain_as_company);

async fn source(app: &TestApp, key: &str, body: serde_json::Value) -> String {
    let r = app.enrich(key, body.clone()).await;
    assert_eq!(r.status, 200, "{body}: {}", String::from_utf8_lossy(&r.bytes));
    r.json()["data"]["source"].as_str().unwrap().to_string()
}

async fn spellings_of_one_input_share_the_cache(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.funded(100).await;
    let pairs = [
        (json!({"email": "jane@acme.com"}), json!({"email": "  JANE@Acme.COM\t"})),
        (json!({"domain": "acme.com"}), json!({"domain": "https://www.ACME.com/about?x=1"})),
        (json!({"domain": "acme.com"}), json!({"domain": " www.acme.com. "})),
        (json!({"domain": "acme.com"}), json!({"domain": "acme.com:443/path"})),
    ];
    for (first, second) in pairs {
        source(&app, &key, first.clone()).await;
        assert_eq!(source(&app, &key, second.clone()).await, "cached", "{second} normalises like {first}");
    }
    // Internationalised domains are looked up as punycode.
    use leadlex::{lookup::vendors::VendorName, sandbox::data::knows};
    let (unicode, puny) = (0..1000)
        .map(|i| format!("bücher{i}.de"))
        .map(|u| {
            let p = idna::domain_to_ascii(&u).unwrap();
            (u, p)
        })
        .find(|(_, p)| knows(VendorName::VendorA, p) || knows(VendorName::VendorB, p))
        .unwrap();
    assert!(puny.starts_with("xn--"));
    let r = app.enrich(&key, json!({"domain": unicode.to_uppercase()})).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["company"]["domain"], puny.as_str());
    assert_eq!(source(&app, &key, json!({"domain": puny})).await, "cached");
}

async fn email_and_domain_together_use_the_domain_as_company(backend: Backend) {
    let app = spawn_app(backend).await;
    let (_, key) = app.funded(100).await;
    let email = sandbox_input("jane{i}@gmail.com", |a, _| a);
    let alone = app.enrich(&key, json!({"email": email})).await.json();
    assert!(alone["data"].get("company").is_none(), "free-mail addresses have no company: {alone}");
    let both = app.enrich(&key, json!({"email": email, "domain": "acme.com"})).await.json();
    assert_eq!(both["data"]["company"]["name"], "Acme Corp");
    assert_eq!(both["data"]["person"], alone["data"]["person"]);
    assert_ne!(both["data"]["source"], "cached", "a different question than the email alone");
    // The email's own domain as `domain` adds nothing: same cache entry as the email alone.
    let same = app.enrich(&key, json!({"email": "jane@acme.com"})).await;
    assert_eq!(same.status, 200);
    assert_eq!(source(&app, &key, json!({"email": "jane@acme.com", "domain": "acme.com"})).await, "cached");
}
