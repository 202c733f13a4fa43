//! hello, join, send, history over a real WebSocket.

mod support;

use serde_json::json;
use support::TestServer;

#[tokio::test]
async fn hello_join_send_and_receive() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    assert_eq!(alice.hello["user"], "alice");
    assert_eq!(alice.hello["heartbeat_ms"], 25_000);
    assert!(alice.hello["session"].as_str().unwrap().starts_with("s-"));
    assert_eq!(alice.hello["rooms"], json!([]));

    let joined = alice.join("general").await;
    assert_eq!(joined["room"], "general");
    assert_eq!(joined["seq"], 0);
    assert_eq!(
        (joined["read"].clone(), joined["delivered"].clone()),
        (json!(0), json!(0))
    );
    assert!(joined["epoch"].is_string());

    let own_join = alice.push("member").await;
    assert_eq!(
        own_join["user"], "alice",
        "the joining user's own connections get the push too"
    );
    let mut bob = server.client("bob").await;
    bob.join("general").await;
    let member = alice.push("member").await;
    assert_eq!(
        member,
        json!({"type":"member","room":"general","user":"bob","action":"join"})
    );

    let sent = alice.say("general", "c-1", "hello").await;
    assert_eq!(
        (
            sent["room"].clone(),
            sent["seq"].clone(),
            sent["dup"].clone()
        ),
        (json!("general"), json!(1), json!(false))
    );
    let pushed = bob.push("message").await;
    assert_eq!(pushed["body"], "hello");
    assert_eq!(pushed["from"], "alice");
    assert_eq!(pushed["seq"], 1);
    assert_eq!(pushed["ts"], sent["ts"]);
    let own = alice.push("message").await;
    assert_eq!(
        own["cid"], "c-1",
        "the sender's connection gets its own message"
    );
    server.stop().await;
}
