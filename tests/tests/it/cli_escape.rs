//! What an agent or a store wrote never drives the user's terminal: control
//! characters in everything `agentctl` prints are escaped.

use crate::common;

use common::{Home, ctl};

/// An agent that retitles and clears the terminal on its stderr, then
/// fails: `agentctl load` reports it (its stderr tail included), and no ESC
/// or BEL byte reaches stdout or stderr.
#[test]
fn an_agents_escape_sequences_are_shown_not_obeyed() {
    let home = Home::new();
    let bin = home.binary("services", "codefly.dev", "evil", "1.0.0");
    std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
    common::write_script(
        &bin,
        "printf '\\033]0;pwned\\007\\033[2Jcleared\\n' >&2\nexit 3\n",
    );
    for args in [
        &["load", "codefly.dev/evil:1.0.0"][..],
        &["load", "codefly.dev/evil:1.0.0", "--json"][..],
    ] {
        let r = ctl(&home, args);
        assert_eq!(r.code, 1, "{}", r.stderr);
        assert!(
            r.stderr.contains("cleared"),
            "the tail is shown: {}",
            r.stderr
        );
        assert!(r.stderr.contains("\\x1b]0;pwned\\x07"), "{}", r.stderr);
        for (what, text) in [("stdout", &r.stdout), ("stderr", &r.stderr)] {
            assert!(
                !text.bytes().any(|b| b == 0x1b || b == 0x07),
                "{what} carries a raw control byte: {text:?}"
            );
        }
    }
}
