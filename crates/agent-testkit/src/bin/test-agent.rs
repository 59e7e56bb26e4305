//! Misbehaving agents for tests, one mode per failure. (Implementation: issue #3.)
fn main() {}
