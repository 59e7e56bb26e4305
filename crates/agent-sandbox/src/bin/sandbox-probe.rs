//! Tries each way out of a sandbox and prints one line per probe: `NAME ok` or
//! `NAME fail REASON`. The crate's tests run it unconfined and confined and compare.
//!
//! Arguments, each optional: `--secret PATH` (read), `--outside PATH` (write),
//! `--granted PATH` (write), `--tcp ADDR`, `--udp ADDR`, `--environ PID --marker TEXT`
//! (look for TEXT in that process's environment), `--proc-self`, `--tmpdir` (write into
//! `$TMPDIR`), `--child` (run the probes again in a child process; its lines are
//! prefixed `child-`), `--unix PATH` (last: listen there and serve one connection from
//! the host, as an agent does).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

fn report(name: &str, r: Result<(), String>) {
    match r {
        Ok(()) => println!("{name} ok"),
        Err(e) => println!("{name} fail {e}"),
    }
}

fn write_file(path: &str) -> Result<(), String> {
    std::fs::write(path, b"written by sandbox-probe").map_err(|e| e.to_string())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if let Some(p) = value("--secret") {
        report(
            "secret-read",
            std::fs::read_to_string(&p)
                .map(drop)
                .map_err(|e| e.to_string()),
        );
    }
    if let Some(p) = value("--outside") {
        report("outside-write", write_file(&p));
    }
    if let Some(p) = value("--granted") {
        report("granted-write", write_file(&p));
    }
    if args.iter().any(|a| a == "--tmpdir") {
        let dir = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
        report("tmpdir-write", write_file(&format!("{dir}/probe")));
    }
    if args.iter().any(|a| a == "--proc-self") {
        report(
            "proc-self-read",
            std::fs::read_to_string("/proc/self/status")
                .map(drop)
                .map_err(|e| e.to_string()),
        );
    }
    if let Some(a) = value("--tcp") {
        let r = a
            .parse::<SocketAddr>()
            .map_err(|e| e.to_string())
            .and_then(|addr| {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
                    .map_err(|e| e.to_string())?;
                s.write_all(b"probe").map_err(|e| e.to_string())
            });
        report("tcp-connect", r);
    }
    if let Some(a) = value("--udp") {
        let r = UdpSocket::bind("0.0.0.0:0")
            .and_then(|s| s.send_to(b"probe", &a))
            .map(drop)
            .map_err(|e| e.to_string());
        report("udp-send", r);
    }
    if let (Some(pid), Some(marker)) = (value("--environ"), value("--marker")) {
        let r = std::fs::File::open(format!("/proc/{pid}/environ"))
            .and_then(|mut f| {
                let mut b = Vec::new();
                f.read_to_end(&mut b).map(|_| b)
            })
            .map_err(|e| e.to_string())
            .and_then(|b| {
                let found = b
                    .split(|c| *c == 0)
                    .any(|kv| String::from_utf8_lossy(kv).contains(marker.as_str()));
                if found {
                    Ok(())
                } else {
                    Err("read, but no marker".to_owned())
                }
            });
        report("environ-marker", r);
    }
    if args.iter().any(|a| a == "--child") {
        let mut rest: Vec<&String> = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--child" => {}
                "--unix" => {
                    it.next();
                }
                _ => rest.push(a),
            }
        }
        let r = std::env::current_exe()
            .and_then(|exe| std::process::Command::new(exe).args(rest).output())
            .map_err(|e| e.to_string());
        match r {
            Ok(out) => {
                for line in String::from_utf8_lossy(&out.stdout).lines() {
                    println!("child-{line}");
                }
                report("child-spawn", Ok(()));
            }
            Err(e) => report("child-spawn", Err(e)),
        }
    }
    if let Some(p) = value("--unix") {
        serve_once(&p);
    }
}

/// Listens on a unix socket, says so, and answers one connection within five seconds.
fn serve_once(path: &str) {
    let listener = match std::os::unix::net::UnixListener::bind(path) {
        Ok(l) => l,
        Err(e) => return report("unix-listen", Err(e.to_string())),
    };
    report("unix-listen", Ok(()));
    let _ = std::io::stdout().flush();
    let r = listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            loop {
                match listener.accept() {
                    Ok((mut s, _)) => return s.write_all(b"hello\n").map_err(|e| e.to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if std::time::Instant::now() > deadline {
                            return Err("no connection from the host".to_owned());
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        });
    report("unix-serve", r);
}
