//! Declares the `agent_portable` cfg (`RUSTFLAGS="--cfg agent_portable"`
//! selects the portable process backend on Linux).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(agent_portable)");
}
