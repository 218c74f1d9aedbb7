//! Evidence of refused HELLOs, over real QUIC on loopback (issue #23 §3, PROTOCOL.md §3.4):
//! every refusal is counted by reason; an address refused again and again is reported once per
//! window to the audit hook the binary hands in; a token that does not verify is refused
//! `TOKEN_BAD_SIGNATURE` with the same message whatever buoy it names (registered or not), and
//! a verified token is refused `BUOY_NOT_REGISTERED` before `DEVICE_REVOKED`.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bluewave_wire::{REFUSALS_AUDIT_THRESHOLD, RefusalAudit, RefuseReason, Refused};

use crate::common::{HelloAnswer, TestServer, token_for};

const NAMES: &[&str] = &["salinity_psu", "ph"];

/// The audit hook of these tests: keeps what it was told.
#[derive(Default)]
struct Recorded(Mutex<Vec<(IpAddr, u32, RefuseReason)>>);

impl RefusalAudit for Recorded {
    fn repeated_refusals(&self, peer: IpAddr, refusals: u32, reason: RefuseReason) {
        self.0.lock().unwrap().push((peer, refusals, reason));
    }
}

fn refused(answer: HelloAnswer) -> Refused {
    match answer {
        HelloAnswer::Refused(refused) => refused,
        other => panic!("expected REFUSED, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_refusals_are_counted_by_reason_and_audited_once_per_address() {
    let server = TestServer::start().await;
    server.add_device("buoy-1");
    let audit = Arc::new(Recorded::default());
    assert!(server.handle().set_refusal_audit(audit.clone()));
    assert!(!server.handle().set_refusal_audit(Arc::new(Recorded::default())), "set once only");
    let client = server.raw_client();
    let forged = "forged-token-for-buoy-1-0123456789";
    for _ in 0..REFUSALS_AUDIT_THRESHOLD + 5 {
        let (_connection, answer) = client.hello(forged, NAMES).await;
        assert_eq!(refused(answer).reason, RefuseReason::TokenBadSignature);
    }
    // A capacity refusal is counted but is no authentication evidence.
    let (_connection, answer) = client.hello("", NAMES).await;
    assert_eq!(refused(answer).reason, RefuseReason::TokenMissing);
    let metrics = server.handle().metrics();
    assert_eq!(metrics.refused(RefuseReason::TokenBadSignature), u64::from(REFUSALS_AUDIT_THRESHOLD) + 5);
    assert_eq!(metrics.refused(RefuseReason::TokenMissing), 1);
    // The hook runs on the blocking pool: wait for it.
    while audit.0.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let loopback: IpAddr = [127, 0, 0, 1].into();
    assert_eq!(
        *audit.0.lock().unwrap(),
        vec![(loopback, REFUSALS_AUDIT_THRESHOLD, RefuseReason::TokenBadSignature)]
    );
    assert_eq!(server.handle().refusals_audited(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_reasons_follow_the_documented_order_and_leak_nothing() {
    let server = TestServer::start().await;
    server.add_device("buoy-1");
    server.add_device("buoy-2");
    server.add_token("ghost", &token_for("ghost")); // issued, buoy never registered
    let client = server.raw_client();

    // Tokens nobody issued: one answer, one message, whichever buoy they name.
    let mut answers = Vec::new();
    for forged in ["test-token-buoy-1-0123456789abcdeX", "test-token-ghost-0123456789abcdeX"] {
        let (_connection, answer) = client.hello(forged, NAMES).await;
        answers.push(refused(answer));
    }
    assert_eq!(answers[0].reason, RefuseReason::TokenBadSignature);
    assert_eq!(answers[0], answers[1]);
    assert_eq!(answers[0].message, "device token does not verify");

    // A verified token of a revoked device of a registered buoy: DEVICE_REVOKED.
    assert_eq!(server.revoke("buoy-2"), 0);
    let (_connection, answer) = client.hello(&token_for("buoy-2"), NAMES).await;
    let revoked = refused(answer);
    assert_eq!(
        (revoked.reason, revoked.message.as_str()),
        (RefuseReason::DeviceRevoked, "device buoy-2 was revoked")
    );

    // A verified token whose buoy is not registered: BUOY_NOT_REGISTERED, revoked or not.
    let (_connection, answer) = client.hello(&token_for("ghost"), NAMES).await;
    let ghost = refused(answer);
    assert_eq!(
        (ghost.reason, ghost.message.as_str()),
        (RefuseReason::BuoyNotRegistered, "buoy ghost is not registered")
    );
    assert_eq!(server.revoke("ghost"), 0);
    let (_connection, answer) = client.hello(&token_for("ghost"), NAMES).await;
    assert_eq!(refused(answer), ghost);
    let metrics = server.handle().metrics();
    assert_eq!(metrics.refused(RefuseReason::BuoyNotRegistered), 2);
    assert_eq!(metrics.refused(RefuseReason::DeviceRevoked), 1);
    assert_eq!(metrics.refused(RefuseReason::TokenBadSignature), 2);
}
