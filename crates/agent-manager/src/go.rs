//! # From the Go package: every exported identifier and its Rust counterpart
//!
//! For people coming from codefly's Go `agents/manager`: v0.1.156, the Go
//! loader this crate rewrites, and v0.3.x (the load options of the sandbox and
//! authority layer, the stale-socket sweep, the admission sentinel), with
//! the agent kinds of its `resources` package. Each exported identifier is
//! listed beside its counterpart here, or the reason there is none. Paths
//! are relative to this crate (`agent_manager::…`).
//!
//! The big difference: Go's package is a set of globals (one active-agent
//! map, stores built from the environment on every call). Here a
//! [`Manager`](crate::Manager) holds them: build one, clone it freely.
//!
//! ## Constants
//!
//! | Go | Rust |
//! |---|---|
//! | `AgentSourceEnv` | [`reference::AGENT_SOURCE_ENV`](crate::reference::AGENT_SOURCE_ENV) (`"CODEFLY_AGENT_SOURCE"`) |
//! | `DefaultDialTimeout` (10 s) | [`SpawnOptions::get_dial_timeout`](crate::SpawnOptions::get_dial_timeout) of `SpawnOptions::new()` (10 s); per load [`LoadOptions::dial_timeout`](crate::LoadOptions::dial_timeout) |
//! | `DefaultStartupTimeout` (30 s) | [`SpawnOptions::new`](crate::SpawnOptions::new)'s startup timeout (30 s); per load [`LoadOptions::startup_timeout`](crate::LoadOptions::startup_timeout) |
//!
//! ## Sentinel errors
//!
//! Go callers switch with `errors.Is`; Rust callers match
//! [`ManagerError::kind`](crate::ManagerError::kind), a stable
//! [`ErrorKind`](crate::ErrorKind) (also what `agentctl` prints as `error[KIND]`).
//!
//! | Go | Rust kind | Rust error |
//! |---|---|---|
//! | `ErrAgentNil` | none | a `&AgentRef` cannot be nil: the type system rules the case out |
//! | `ErrAgentBinaryNotFound` | `ErrorKind::BinaryNotFound` | [`ManagerError::NotFound`](crate::ManagerError::NotFound), listing every store's answer |
//! | `ErrAgentSpawn` | `ErrorKind::Spawn` | [`ManagerError::Spawn`](crate::ManagerError::Spawn) |
//! | `ErrAgentHandshakeTimeout` | `ErrorKind::HandshakeTimeout` | `ManagerError::Spawn`, with the stderr tail |
//! | `ErrAgentHandshakeMalformed` | `ErrorKind::HandshakeMalformed` | `ManagerError::Spawn` |
//! | `ErrAgentVersionMismatch` | `ErrorKind::VersionMismatch` | `ManagerError::Spawn` |
//! | `ErrAgentDialTimeout` | `ErrorKind::DialTimeout` | `ManagerError::Spawn` (and `ErrorKind::NotServing` when health never says SERVING, `Unimplemented` included) |
//! | `ErrAgentAdmission` | `ErrorKind::Admission` | the sandbox a load asks for (`LoadOptions::sandbox(Sandbox)`) cannot be enforced on this machine (`sandbox::SandboxError::Admission`); nothing is started. Go's other admission causes (a missing principal, callback or secret) have no counterpart: see *`LoadOption`s* |
//! | `ErrStoreUnavailable` | `ErrorKind::StoreUnavailable` | [`store::StoreError::Unavailable`](crate::store::StoreError::Unavailable) (retryable); from the facade, [`ManagerError::StoresUnavailable`](crate::ManagerError::StoresUnavailable) listing every store's answer |
//! | `ErrStoreArtifactMissing` | `ErrorKind::ArtifactMissing` | [`store::StoreError::Missing`](crate::store::StoreError::Missing) |
//!
//! New kinds with no Go sentinel: `integrity`, `io`, `invalid-ref`,
//! `agent-exited`, `untrusted`, `config`, `not-locked`.
//!
//! ```
//! use agent_manager::{ErrorKind, ManagerError};
//!
//! fn remedy(e: &ManagerError) -> &'static str {
//!     match e.kind() {
//!         // Go: errors.Is(err, ErrAgentBinaryNotFound)
//!         ErrorKind::BinaryNotFound => "build the agent or configure a store",
//!         // Go: errors.Is(err, ErrStoreUnavailable)
//!         ErrorKind::StoreUnavailable => "retry later",
//!         ErrorKind::HandshakeTimeout => "read the agent's stderr tail",
//!         _ => "see the message",
//!     }
//! }
//! # let _ = remedy;
//! ```
//!
//! ## Functions
//!
//! | Go | Rust |
//! |---|---|
//! | `AgentSourceLocal()` | [`AgentSource::from_env`](crate::AgentSource::from_env)`()?.is_local()`, or [`Manager::source`](crate::Manager::source) |
//! | `Cleanup(unique)` | [`Manager::cleanup`](crate::Manager::cleanup)`(unique)` (same keys: `kind::publisher/name:version`) |
//! | `CleanupAll()` | [`Manager::cleanup_all`](crate::Manager::cleanup_all) |
//! | `CopyFile(src, dst)` | [`compat::copy_file`](crate::compat::copy_file) |
//! | `MoveFile(src, dst)` | [`compat::move_file`](crate::compat::move_file) |
//! | `PlatformSuffix()` | [`compat::platform_suffix`](crate::compat::platform_suffix), or `Platform::current().suffix()` |
//! | `FindLocalLatest(ctx, agent)` | [`AgentHome::find_local`](crate::AgentHome::find_local)`(&agent, spec)` (returns the version instead of mutating the agent) |
//! | `ResolveLatest(ctx, agent)` | [`Manager::resolve`](crate::Manager::resolve) (returns the resolved ref) |
//! | `PinToLatestRelease(ctx, agent)` | [`Manager::pin_to_latest_release`](crate::Manager::pin_to_latest_release) |
//! | `Load(ctx, agent, opts...)` | [`Manager::load`](crate::Manager::load)`(&agent)`, or [`Manager::load_with`](crate::Manager::load_with)`(&agent, LoadOptions)` |
//! | `Download(ctx, agent)` | none by that name: [`Manager::pull`](crate::Manager::pull) fetches from every configured store (Go's `Download` knew GitHub only), verifies and installs atomically |
//! | `DownloadURL(agent)` | none: there is no single URL. Each store has its own layout (see [`stores`](crate::stores)); a GitHub asset is `{prefix}-{name}_{version}_{os}_{arch}.tar.gz` of release `v{version}`, the prefix the kind's ([`AgentKind::prefix`](crate::reference::AgentKind::prefix)) |
//! | `Downloaded(ctx, agent)` | none by that name: `manager.installer().cached(&agent)?.is_some()` ([`Installer::cached`](crate::Installer::cached)), which also checks the binary against its install record |
//! | `SweepStaleAgentSockets()` | none to call: the first load in a process that creates a private socket directory removes those of dead hosts (`agent-h{pid}-…` in `$TMPDIR` and `/tmp`, only directories owned by this user whose host pid, with its start time, is gone) |
//! | `CountStaleAgentSockets()` | none: nothing reports them without removing them; the next load sweeps them |
//! | `ValidURL(s)` | none: each store validates its own location when built (`HttpStore::new` refuses a non-`http(s)` URL; `RegistryConfig::parse` a bad registry), and a bad configured value is kind `config` |
//!
//! ## Types and methods
//!
//! | Go | Rust |
//! |---|---|
//! | `AgentConn` | [`AgentConn`](crate::AgentConn) (cheap to clone; see the crate docs, *When an agent dies*) |
//! | `(*AgentConn).Close()` | [`AgentConn::close`](crate::AgentConn::close) (SIGTERM to the group, grace, SIGKILL; idempotent) |
//! | `(*AgentConn).GRPCConn()` | [`AgentConn::channel`](crate::AgentConn::channel) (sends the token on every call); `raw_channel` without it |
//! | `(*AgentConn).ProcessInfo()` | [`AgentConn::pid`](crate::AgentConn::pid) |
//! | `(*AgentConn).StderrTail()` | [`AgentConn::stderr_tail`](crate::AgentConn::stderr_tail); after a failed load [`ManagerError::stderr_tail`](crate::ManagerError::stderr_tail) |
//! | `ProcessInfo{PID}` | [`AgentConn::pid`](crate::AgentConn::pid) (also the process-group id); [`ActiveAgent`](crate::ActiveAgent) in [`Manager::active`](crate::Manager::active) |
//! | `AgentStore` | [`AgentStore`](crate::AgentStore) (`pull`, `available`, plus `versions` and `name`) |
//! | `(AgentStore).Pull` | [`AgentStore::pull`](crate::AgentStore::pull) (through the shared [`Installer`](crate::Installer)) |
//! | `(AgentStore).Available` | [`AgentStore::available`](crate::AgentStore::available) |
//! | `GithubSource{Owner, Repo}` | none public: the owner/repo mapping (`acme.corp` → `acme-corp/{prefix}-{name}`, e.g. `toolbox-grep`) is internal to the GitHub store, and only a guess about who owns an org (see [`stores`](crate::stores#the-github-owner-is-a-guess)) |
//! | `NixStore`, `NewNixStore(flake, log)` | `stores::nix::NixStore::new(flake)` (feature `nix`; logs through `tracing`) |
//! | `NewNixStoreFromEnv(log)` | `stores::nix::NixStore::from_env()` (`AGENT_NIX_FLAKE`; `None` when unset or no `nix`) |
//! | `(*NixStore).Available`, `.Pull` | the [`AgentStore`](crate::AgentStore) methods |
//! | `OCIStore`, `NewOCIStore(registry, scheme, log)` | `stores::oci::OciStore::new(RegistryConfig::parse(registry)?.with_scheme(scheme))` (feature `oci`) |
//! | `NewOCIStoreFromEnv(log)` | `stores::oci::OciStore::from_env()` (`AGENT_REGISTRY`, `AGENT_REGISTRY_SCHEME`, credentials) |
//! | `(*OCIStore).Available`, `.Pull` | the [`AgentStore`](crate::AgentStore) methods |
//! | (none) | `stores::http::HttpStore` (feature `http`) and `stores::github::GithubStore` (feature `github`) |
//!
//! ## `LoadOption`s
//!
//! | Go | Rust ([`LoadOptions`](crate::LoadOptions), a `Clone` value) |
//! |---|---|
//! | `LoadOption` | [`LoadOptions`](crate::LoadOptions), given to [`Manager::load_with`](crate::Manager::load_with); defaults for every load with [`ManagerBuilder::load_defaults`](crate::ManagerBuilder::load_defaults) |
//! | `WithDialTimeout(d)` | [`LoadOptions::dial_timeout`](crate::LoadOptions::dial_timeout) |
//! | `WithLogWriter(w)` | [`LoadOptions::stderr_sink`](crate::LoadOptions::stderr_sink) (a `Fn(&[u8])`, called off the async workers) |
//! | `WithStartupTimeout(d)` | [`LoadOptions::startup_timeout`](crate::LoadOptions::startup_timeout) |
//! | `WithWorkDir(dir)` | [`LoadOptions::workdir`](crate::LoadOptions::workdir) (also `CODEFLY_AGENT_WORKDIR`) |
//! | `WithEnv(vars...)` | [`LoadOptions::env`](crate::LoadOptions::env)`(key, value)`, once per variable (they accumulate and override the inherited environment) |
//! | `WithUDS()` | [`LoadOptions::unix_socket`](crate::LoadOptions::unix_socket)`(true)`: a private `0700` directory per spawn, removed when the agent is closed |
//! | `WithSandbox(sb)` | `LoadOptions::sandbox(Sandbox)` with a [`sandbox::Sandbox::policy`](crate::sandbox::Sandbox::policy); a policy this machine cannot enforce is `admission`, before anything starts |
//! | `WithoutSandbox()` | `LoadOptions::sandbox(`[`Sandbox::unconfined`](crate::sandbox::Sandbox::unconfined)`())`: the explicit, greppable choice to run with the caller's authority |
//! | `WithPrincipal(p)`, `WithoutPrincipal()` | none: principals and the policy decision point are codefly's authority layer, above the loader; the loader authenticates only its own connection (the per-spawn token). What an agent needs to know about its principal it gets through `LoadOptions::env` |
//! | `WithScopedAuthSecret(secret)` | none, as for principals: the secret reaches the agent as an environment variable (`CODEFLY_SCOPED_AUTHZ_SECRET`, base64url), which `LoadOptions::env` sets |
//! | `WithPermissionsCallback(decider)` | none, as for principals: the loader serves no callback socket |
//! | `WithProductionAdmission()` | none as one switch: of Go's production envelope the loader enforces the sandbox part (`LoadOptions::sandbox` with a policy: `admission` when it cannot be enforced); principal, callback and secret are the authority layer's |
//!
//! ## Agent kinds (`resources`)
//!
//! | Go | Rust |
//! |---|---|
//! | `AgentKind`, `ServiceAgent` … `SolutionAgent` (`codefly:service`, …) | [`AgentKind`](crate::reference::AgentKind) (`Service`, `Application`, `Module`, `Toolbox`, `Runnable`, `Provider`, `Solution`, `Job`; the `service:runtime\|builder\|code` aliases); `"codefly:toolbox".parse()` works |
//! | `AgentKindRegistration`, `AgentKindRegistry()` | [`KindSpec`](crate::reference::KindSpec), [`AgentKind::TABLE`](crate::reference::AgentKind::TABLE): kind, alias, cache directory, prefix, stores, whether it loads |
//! | `AgentKindRegistrationFor(kind)` | [`AgentKind::spec`](crate::reference::AgentKind::spec) |
//! | `(AgentKindRegistration).ExecutableName(name)`, `.GitHubRepository(name)` | [`AgentKind::artifact_name`](crate::reference::AgentKind::artifact_name) (`{prefix}-{name}`: executable, GitHub repository, Nix binary, OCI repository) |
//! | `(AgentKindRegistration).GitHubAsset(name, version, os, arch)` | none public: the GitHub store's asset name, `{prefix}-{name}_{version}_{os}_{arch}.tar.gz` |
//! | `.InstallSubdirectory` | [`AgentKind::cache_dir`](crate::reference::AgentKind::cache_dir) (`services`, `toolboxes`, `providers`, …) |
//! | `AgentResolutionSupport`, `.For(store)` | [`AgentKind::served_by`](crate::reference::AgentKind::served_by)`(store)`, [`AgentKind::refusal`](crate::reference::AgentKind::refusal) (the `artifact-missing` reason) |
//! | `AgentResolutionVerifiedArtifact` | [`AgentKind::needs_descriptor`](crate::reference::AgentKind::needs_descriptor): provider and solution load only behind [`store::descriptor`](crate::store::descriptor) |
//! | `.Operations.Load` (false for `job`) | [`AgentKind::loads`](crate::reference::AgentKind::loads); a load of a `job` is `invalid-ref` |
//! | `ParseAgent(ctx, kind, input)` | [`AgentRef::parse_as`](crate::AgentRef::parse_as)`(kind, input)` |
//! | `(*Agent).Unique()`, `.Identifier()` | [`AgentRef::unique`](crate::AgentRef::unique), [`AgentRef::identifier`](crate::AgentRef::identifier) |
//! | `(*Agent).IsService()` … `.IsSolution()` | `agent.kind().canonical() == AgentKind::Service` (…) |
//!
//! The Go program, in Rust:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use agent_manager::{LoadOptions, Manager};
//!
//! # async fn demo() -> Result<(), agent_manager::ManagerError> {
//! // Go: conn, err := manager.Load(ctx, agent, manager.WithWorkDir(dir),
//! //         manager.WithStartupTimeout(5*time.Second), manager.WithLogWriter(os.Stderr))
//! let manager = Manager::from_env()?;
//! let agent = "codefly.dev/go-generic:latest".parse()?;
//! let conn = manager
//!     .load_with(
//!         &agent,
//!         LoadOptions::new()
//!             .workdir("/tmp/project")
//!             .startup_timeout(Duration::from_secs(5))
//!             .stderr_sink(|chunk| eprint!("{}", String::from_utf8_lossy(chunk))),
//!     )
//!     .await?;
//! println!("pid {}", conn.pid()); // Go: conn.ProcessInfo().PID
//! let _tail = conn.stderr_tail(); // Go: conn.StderrTail()
//! conn.close().await; // Go: conn.Close()
//! manager.cleanup_all().await; // Go: manager.CleanupAll()
//! # Ok(()) }
//! ```
