//! A 300 MiB stderr flood keeps host memory flat (own test binary: the
//! measurement is this process's peak RSS, so nothing else may run beside it).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use agent_echo::pb::EchoRequest;
use agent_echo::pb::echo_client::EchoClient;
use agent_spawn::{STDERR_RING_CAPACITY, SpawnOptions, spawn};
use agent_testkit::{bin_path, vm_hwm_kib, vm_rss_kib, wait_group_gone};

const FLOOD_MIB: u64 = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stderr_flood_keeps_host_memory_flat() {
    let agent = bin_path("test-agent");
    let hwm_before = vm_hwm_kib();
    let rss_before = vm_rss_kib();

    let opts = SpawnOptions::new()
        .arg("stderr-flood")
        .arg(FLOOD_MIB.to_string())
        .grace(Duration::from_millis(300));
    let conn = spawn(&agent, opts).await.unwrap();
    let mut done = false;
    for _ in 0..3000 {
        // Still answering while it floods.
        let reply = EchoClient::new(conn.channel())
            .echo(EchoRequest {
                message: "x".into(),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().message, "x");
        if conn.stderr_tail().contains("stderr-flood: done") {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(done, "the flood did not finish within 300 s");

    let tail = conn.stderr_tail();
    assert!(
        tail.len() <= STDERR_RING_CAPACITY,
        "{} bytes kept",
        tail.len()
    );
    assert!(tail.ends_with("stderr-flood: done\n"));

    let hwm_growth_mib = vm_hwm_kib().saturating_sub(hwm_before) / 1024;
    let rss_growth_mib = vm_rss_kib().saturating_sub(rss_before) / 1024;
    eprintln!(
        "after {FLOOD_MIB} MiB of stderr: peak RSS +{hwm_growth_mib} MiB, RSS +{rss_growth_mib} MiB"
    );
    assert!(hwm_growth_mib < 64, "peak RSS grew {hwm_growth_mib} MiB");

    conn.close().await;
    assert!(wait_group_gone(conn.pid(), Duration::from_secs(10)));
}
