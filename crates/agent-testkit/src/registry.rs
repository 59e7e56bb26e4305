//! A real OCI registry for tests: Debian's `docker-registry` (the CNCF
//! distribution registry) on a free loopback port, with its storage in a
//! temporary directory. Killed and reaped on drop.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The registry binary Debian's `docker-registry` package installs.
const DEFAULT_BINARY: &str = "/usr/bin/docker-registry";

/// A running `docker-registry serve` process, owned by the test.
#[derive(Debug)]
pub struct LocalRegistry {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl LocalRegistry {
    /// Starts a registry on `127.0.0.1:<free port>` and waits until `GET /v2/`
    /// answers.
    ///
    /// The binary is `$DOCKER_REGISTRY_BIN`, else `docker-registry` on `PATH`,
    /// else `/usr/bin/docker-registry`.
    ///
    /// # Errors
    /// When the binary is missing (install it with
    /// `apt-get install docker-registry`), or the registry does not come up
    /// within 30 seconds (the error carries its log).
    pub fn start() -> Result<LocalRegistry> {
        Self::start_inner(None)
    }

    /// Like [`LocalRegistry::start`], but requiring HTTP basic auth: `htpasswd`
    /// holds `user:bcrypt-hash` lines (the registry accepts bcrypt only;
    /// `$2b$04$…` keeps tests fast).
    ///
    /// # Errors
    /// As [`LocalRegistry::start`].
    pub fn start_with_htpasswd(htpasswd: &str) -> Result<LocalRegistry> {
        Self::start_inner(Some(htpasswd))
    }

    fn start_inner(htpasswd: Option<&str>) -> Result<LocalRegistry> {
        let binary = find_binary().context(
            "docker-registry not found: install it with `apt-get install docker-registry` \
             (or set DOCKER_REGISTRY_BIN); OCI tests need a real registry",
        )?;
        let dir = tempfile::Builder::new()
            .prefix("agent-registry-")
            .tempdir()
            .context("creating the registry's temp dir")?;
        let storage = dir.path().join("storage");
        fs::create_dir_all(&storage).context("creating the registry storage dir")?;

        // Ask the OS for a free port, then hand it to the registry. Another
        // process could take it in between; `start` then fails with the log.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free loopback port")?
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));

        let auth = match htpasswd {
            Some(lines) => {
                let path = dir.path().join("htpasswd");
                fs::write(&path, lines).context("writing the htpasswd file")?;
                format!(
                    "auth:\n  htpasswd:\n    realm: agent-tests\n    path: {}\n",
                    path.display()
                )
            }
            None => String::new(),
        };
        let config = format!(
            "version: 0.1\n\
             log:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n  \
             cache:\n    blobdescriptor: inmemory\n\
             http:\n  addr: {addr}\n  secret: agent-manager-tests\n{auth}",
            storage = storage.display(),
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).context("writing the registry config")?;
        let log_path = dir.path().join("registry.log");
        let log = fs::File::create(&log_path).context("creating the registry log")?;
        let log2 = log
            .try_clone()
            .context("duplicating the registry log handle")?;

        let child = Command::new(&binary)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let mut reg = LocalRegistry { child, addr, dir };
        reg.wait_ready(Duration::from_secs(30))?;
        Ok(reg)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().context("polling the registry")? {
                bail!(
                    "docker-registry exited early ({status}); log:\n{}",
                    self.log_text()
                );
            }
            if v2_answers(self.addr) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "docker-registry did not answer GET /v2/ on {} within {limit:?}; log:\n{}",
                    self.addr,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `127.0.0.1:PORT`.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The filesystem storage root (`docker/registry/v2/...` lives below it).
    #[must_use]
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// The path of a blob's data file in the storage dir, for `sha256:<hex>` or `<hex>`.
    #[must_use]
    pub fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let prefix = hex.get(..2).unwrap_or(hex);
        self.storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(prefix)
            .join(hex)
            .join("data")
    }

    /// Everything the registry has logged so far (access log included).
    #[must_use]
    pub fn log_text(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The log file's path.
    #[must_use]
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("registry.log")
    }

    /// How many `GET` requests for `sha256:<hex>` blob `digest` the access log shows
    /// (any repository).
    #[must_use]
    pub fn blob_gets(&self, digest: &str) -> usize {
        let needle = format!("/blobs/{digest}");
        self.log_text()
            .lines()
            .filter(|l| l.contains("\"GET ") && l.contains(&needle))
            .count()
    }
}

impl Drop for LocalRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DOCKER_REGISTRY_BIN") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join("docker-registry");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    let p = Path::new(DEFAULT_BINARY);
    p.is_file().then(|| p.to_path_buf())
}

/// Whether `GET /v2/` gets an HTTP answer (200, or 401 for a registry with auth).
fn v2_answers(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).is_ok()
        && (buf.starts_with(b"HTTP/1.0 200")
            || buf.starts_with(b"HTTP/1.1 200")
            || buf.ends_with(b"401"))
}
