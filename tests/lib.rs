//! Workspace-level tests: one test binary, `tests/tests/it/main.rs`, with a module per file.
