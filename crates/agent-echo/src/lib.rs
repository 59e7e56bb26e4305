//! `agent-echo`: the example agent (Echo service + health). (Implementation: issue #3.)
