//! The SMS route's log line, as the log sees it.
//!
//! A binary of its own, with one test and a global subscriber: tracing's maximum level and
//! per-callsite caches are global, so a test's own subscriber beside other tests' threads may
//! see nothing (this case once did, on a clean clone).

#[allow(dead_code, unreachable_pub)]
#[path = "../../examples/axum.rs"]
mod axum_example;

use http::StatusCode;

/// Issue 29, finding 8d: the SMS route logged each number with its code at INFO, so whoever
/// reads the log could sign in as anyone who asked for a code.
#[tokio::test(flavor = "current_thread")]
async fn the_sms_route_logs_a_digest_not_the_number_or_its_code() {
    use std::sync::{Arc, Mutex};
    use tower_redis_http::store::Store;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .without_time()
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let demo = axum_example::common::Demo::in_memory().unwrap();
    let mobile = "13800138000";
    let answer = demo.sms_code(mobile).await;
    assert_eq!(answer.status, StatusCode::OK);
    let code = demo.stores.get("verify_codes").unwrap();
    let code = code.get(&format!("sms_{mobile}")).await.unwrap().unwrap();
    let code = String::from_utf8(code.to_vec()).unwrap();
    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(log.contains("verification code"), "nothing logged: {log}");
    // whole words, so that a digest's hex digits cannot stand for the code by chance
    let words: Vec<&str> = log.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    assert!(!log.contains(mobile), "the number is logged: {log}");
    assert!(!words.contains(&code.as_str()), "the code is logged: {log}");
    assert!(
        log.contains(&axum_example::common::digest(mobile)),
        "no digest: {log}"
    );
}
