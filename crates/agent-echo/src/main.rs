//! The example agent binary.
fn main() {}
