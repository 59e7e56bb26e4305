//! Standard output that a closed pipe does not turn into a panic.
//!
//! `println!` panics when stdout is gone (`agentctl ls | head -1`). Every
//! stdout line goes through [`write`](fn@write) instead: a reader that went away ends
//! the process quietly with status 0, as `ripgrep` does (the output
//! was not wanted any more; agents still running are ended by the host
//! watchdog, as on any host exit); any other write error is reported as
//! `error[io]` and exits 1.

use std::io::{self, Write as _};

/// Prints like `print!`, through [`write`](fn@write).
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*), false)
    };
}

/// Prints like `println!`, through [`write`](fn@write).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdout::write(format_args!($($arg)*), true)
    };
}

/// Writes `args` (and a newline) to stdout, control characters escaped
/// ([`crate::escape::terminal_safe`]: fields can come from agents and
/// stores); see the module docs for errors.
pub(crate) fn write(args: std::fmt::Arguments<'_>, newline: bool) {
    let text = match args.as_str() {
        Some(s) => std::borrow::Cow::Borrowed(s),
        None => std::borrow::Cow::Owned(args.to_string()),
    };
    let text = crate::escape::terminal_safe(&text);
    let mut stdout = io::stdout().lock();
    let written = stdout.write_all(text.as_bytes()).and_then(|()| {
        if newline {
            stdout.write_all(b"\n")?;
        }
        // Std's stdout flushes at each newline anyway; flushing here makes a
        // write error show up now, for `out!` without a newline too.
        stdout.flush()
    });
    if let Err(e) = written {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error[io]: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}
