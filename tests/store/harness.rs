//! The test harness itself: what a newcomer without redis-server sees.

use crate::support::TestRedis;

#[test]
fn missing_redis_server_fails_naming_the_package_to_install() {
    let panic = std::panic::catch_unwind(|| {
        TestRedis::start_binary("/nonexistent/bin/redis-server", &[]);
    })
    .expect_err("starting a missing binary must fail");
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .expect("a text panic message");
    assert!(
        message.contains("redis-server is not installed"),
        "{message}"
    );
    assert!(
        message.contains("apt-get install redis-server"),
        "{message}"
    );
}

#[test]
fn each_server_is_isolated_and_stops_when_dropped() {
    let first = TestRedis::start();
    let second = TestRedis::start();
    assert_ne!(first.port(), second.port());
    first.command(&["SET", "only-here", "1"]);
    assert_eq!(second.command(&["GET", "only-here"]), "(nil)");
    let port = first.port();
    drop(first);
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}
