//! RFC 8555 §8.2: while a challenge is being validated the server says when
//! to ask again (`Retry-After`) on the challenge and its authorization, and
//! stops saying it once the outcome is known. Without it lego waits 5 s
//! before its first poll (found driving lego dns-01 through RFC 2136).

mod acme_support;

use acme_support::*;
use serde_json::Value;

#[tokio::test]
async fn retry_after_while_processing_only() {
    // A listener that never answers keeps the validation busy for a while.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let h = start(port, port).await;
    let acct = h.new_account(Key::es256()).await;
    let (_, order) = h.new_order(&acct, &["a.acme.test"]).await;
    let authz_url = order["authorizations"][0].as_str().expect("authz").to_string();
    let r = h.post_as(&acct, &h.path_of(&authz_url), b"").await;
    assert_eq!(r.header("retry-after"), None, "a pending authorization with nothing in flight");
    let ch_url = r.json()["challenges"][0]["url"].as_str().expect("url").to_string();

    let r = h.post_as(&acct, &h.path_of(&ch_url), b"{}").await;
    assert_eq!((r.status, r.json()["status"].as_str()), (200, Some("processing")));
    assert_eq!(r.header("retry-after").as_deref(), Some("1"), "challenge accepted for validation");
    let r = h.post_as(&acct, &h.path_of(&ch_url), b"").await;
    assert_eq!(r.header("retry-after").as_deref(), Some("1"), "processing challenge, POST-as-GET");
    let r = h.post_as(&acct, &h.path_of(&ch_url), b"{}").await;
    assert_eq!(r.header("retry-after").as_deref(), Some("1"), "processing challenge, answered again");
    let r = h.post_as(&acct, &h.path_of(&authz_url), b"").await;
    assert_eq!(r.json()["status"], "pending");
    assert_eq!(r.header("retry-after").as_deref(), Some("1"), "authorization with a challenge in flight");

    let mut last = Value::Null;
    for _ in 0..150 {
        let r = h.post_as(&acct, &h.path_of(&authz_url), b"").await;
        last = r.json();
        if last["status"] == "invalid" {
            assert_eq!(r.header("retry-after"), None, "a finished authorization");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(last["status"], "invalid", "{last}");
    let r = h.post_as(&acct, &h.path_of(&ch_url), b"").await;
    assert_eq!(r.json()["status"], "invalid");
    assert_eq!(r.header("retry-after"), None, "a finished challenge");
    drop(silent);
    h.shutdown().await;
}
