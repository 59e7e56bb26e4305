//! Pulls one agent from an HTTP store into a home and reports wall time and
//! peak RSS: `pull BASE_URL REF HOME` → `{"ms":…,"vmhwm_kib":…,"size":…}`.
//!
//! Measuring against curl: serve a directory holding
//! `codefly.dev/big/1.0.0/service-big_linux_amd64` (+ `.sha256`) with the
//! `serve_dir` example, then compare
//! `curl -s -o OUT http://ADDR/codefly.dev/big/1.0.0/service-big_linux_amd64`
//! with `pull http://ADDR codefly.dev/big:1.0.0 HOME` (fresh HOME each run).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Instant;

use agent_store::{AgentHome, AgentRef, Installer, Platform, StoreChain};
use agent_store_http::HttpStore;

fn vmhwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    assert!(args.len() == 4, "usage: pull BASE_URL REF HOME");
    let started = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let installed = rt.block_on(async {
        let store = HttpStore::new(args[1].clone()).unwrap();
        let agent: AgentRef = args[2].parse().unwrap();
        let installer = Installer::new(AgentHome::new(&args[3]));
        StoreChain::new(vec![Arc::new(store)])
            .pull(&agent, &Platform::current(), &installer)
            .await
            .unwrap()
    });
    println!(
        "{{\"ms\":{},\"vmhwm_kib\":{},\"size\":{}}}",
        started.elapsed().as_millis(),
        vmhwm_kib(),
        installed.size
    );
}
