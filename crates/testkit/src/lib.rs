//! Real etcd members for tests: started on free loopback ports in temporary directories,
//! killed, restarted, frozen and compacted on demand.
//!
//! Every test starts its own members, so tests run in parallel without sharing state.
//! The `etcd` binary comes from `ETCD_BIN` or from `PATH` (Debian package `etcd-server`);
//! when it is missing, starting a member panics with a message saying how to install it:
//! a test that needs etcd never passes without one.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

mod certs;

pub use certs::TestCerts;

use std::sync::Arc;

use etcd_client::{Certificate, Client, CompactionOptions, ConnectOptions, Identity, TlsOptions};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How long a member (or a cluster) may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How many times a member is started on fresh ports when its ports were taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// The path of the etcd binary: `ETCD_BIN`, or `etcd` found on `PATH`.
///
/// # Panics
///
/// When no etcd binary can be found, with a message saying how to install one.
pub fn etcd_binary() -> PathBuf {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(find_etcd)
        .clone()
        .unwrap_or_else(|message| panic!("{message}"))
}

fn find_etcd() -> Result<PathBuf, String> {
    find_etcd_in(std::env::var_os("ETCD_BIN"), std::env::var_os("PATH"))
}

fn find_etcd_in(
    etcd_bin: Option<std::ffi::OsString>,
    path: Option<std::ffi::OsString>,
) -> Result<PathBuf, String> {
    if let Some(bin) = etcd_bin {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("ETCD_BIN={} is not a file", bin.display()))
        };
    }
    let path = path.unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            "these tests need a real etcd server, and none was found: install it with \
             `apt-get install etcd-server` (Debian) or set ETCD_BIN to an etcd binary; \
             `scripts/test.sh` installs it for you"
                .to_owned()
        })
}

/// Reserves a loopback port no other member of this process has been given.
fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    loop {
        let listener =
            TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port for etcd");
        let port = listener.local_addr().expect("local address").port();
        if given.insert(port) {
            return port;
        }
    }
}

/// How members are started: TLS, client certificates, extra flags.
#[derive(Debug, Clone, Default)]
pub struct MemberOptions {
    /// Flags appended to every member's command line, e.g. `--auth-token-ttl=2`.
    pub extra_args: Vec<String>,
    tls: Option<Arc<TestCerts>>,
    client_cert_auth: bool,
}

impl MemberOptions {
    /// Serves clients over TLS (`https://`) with the server certificate of `certs`.
    #[must_use]
    pub fn tls(mut self, certs: Arc<TestCerts>) -> Self {
        self.tls = Some(certs);
        self
    }

    /// Requires a client certificate signed by the CA (mTLS); implies TLS.
    #[must_use]
    pub fn client_cert_auth(mut self, certs: Arc<TestCerts>) -> Self {
        self.tls = Some(certs);
        self.client_cert_auth = true;
        self
    }

    /// Appends a flag to the members' command lines.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }
}

/// A copy of a member's data directory, from [`EtcdMember::backup`].
#[derive(Debug)]
pub struct Backup(TempDir);

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// One etcd process with its own data directory and loopback ports.
///
/// Dropping it kills the process and removes its data.
#[derive(Debug)]
pub struct EtcdMember {
    name: String,
    client_port: u16,
    peer_port: u16,
    initial_cluster: String,
    /// Shared by every member of one cluster, unique across clusters.
    cluster_token: String,
    options: MemberOptions,
    dir: TempDir,
    child: Option<Child>,
}

impl EtcdMember {
    /// Starts a single-member cluster and waits until it serves requests.
    ///
    /// # Panics
    ///
    /// When etcd is missing or does not become ready in time (with its log).
    pub async fn start() -> Self {
        Self::start_with(MemberOptions::default()).await
    }

    /// Starts a single-member cluster with extra flags and waits until it serves requests.
    ///
    /// # Panics
    ///
    /// When etcd is missing or does not become ready in time (with its log).
    pub async fn start_with(options: MemberOptions) -> Self {
        let mut last_log = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut member = Self::configure("solo", free_port(), free_port(), options.clone());
            member.initial_cluster = format!("solo={}", member.peer_url());
            member.spawn();
            match member.wait_ready().await {
                Ok(()) => return member,
                Err(log) if log.contains("address already in use") => last_log = log,
                Err(log) => panic!("etcd did not start:\n{log}"),
            }
        }
        panic!("etcd did not start after {PORT_ATTEMPTS} attempts on fresh ports:\n{last_log}");
    }

    fn configure(name: &str, client_port: u16, peer_port: u16, options: MemberOptions) -> Self {
        etcd_binary();
        let dir = tempfile::Builder::new()
            .prefix("testkit-etcd-")
            .tempdir()
            .expect("create a temporary directory for etcd");
        Self {
            name: name.to_owned(),
            client_port,
            peer_port,
            initial_cluster: String::new(),
            cluster_token: format!("testkit-{}", dir.path().display()),
            options,
            dir,
            child: None,
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:40123` (`https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    /// Options that let a plain `etcd-client` connect to this member: the CA and, for
    /// mTLS, the client certificate. Add `.with_user(..)` when auth is on.
    ///
    /// # Panics
    ///
    /// When the certificate files cannot be read.
    pub fn connect_options(&self) -> ConnectOptions {
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        if let Some(certs) = &self.options.tls {
            let read = |path: PathBuf| std::fs::read(&path).expect("read a test certificate");
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(certs.ca())));
            if self.options.client_cert_auth {
                tls = tls.identity(Identity::from_pem(
                    read(certs.client_cert()),
                    read(certs.client_key()),
                ));
            }
            options = options.with_tls(tls);
        }
        options
    }

    /// The client port on 127.0.0.1.
    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("etcd.log")
    }

    /// Connects a plain `etcd-client` to this member alone.
    ///
    /// # Panics
    ///
    /// When the member does not answer.
    pub async fn client(&self) -> Client {
        let endpoint = self.endpoint();
        Client::connect([endpoint.as_str()], Some(self.connect_options()))
            .await
            .unwrap_or_else(|error| panic!("connect to {endpoint}: {error}"))
    }

    /// The process id of the running member.
    ///
    /// # Panics
    ///
    /// When the member is not running.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("member is not running").id()
    }

    /// Whether the process is running (it may be frozen).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "member {} is already running",
            self.name
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the etcd log file");
        let data_dir = self.dir.path().join("data");
        let client_url = self.endpoint();
        let peer_url = self.peer_url();
        let mut args: Vec<String> = vec![
            "--name".into(),
            self.name.clone(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--listen-client-urls".into(),
            client_url.clone(),
            "--advertise-client-urls".into(),
            client_url,
            "--listen-peer-urls".into(),
            peer_url.clone(),
            "--initial-advertise-peer-urls".into(),
            peer_url,
            "--initial-cluster".into(),
            self.initial_cluster.clone(),
            "--initial-cluster-state".into(),
            "new".into(),
            "--initial-cluster-token".into(),
            self.cluster_token.clone(),
            "--heartbeat-interval".into(),
            "50".into(),
            "--election-timeout".into(),
            "500".into(),
            "--logger".into(),
            "zap".into(),
            "--log-level".into(),
            "warn".into(),
        ];
        if let Some(certs) = &self.options.tls {
            args.push(format!("--cert-file={}", certs.server_cert().display()));
            args.push(format!("--key-file={}", certs.server_key().display()));
            if self.options.client_cert_auth {
                args.push("--client-cert-auth".into());
                args.push(format!("--trusted-ca-file={}", certs.ca().display()));
            }
        }
        args.extend(self.options.extra_args.iter().cloned());
        let mut command = command_dying_with_parent(&etcd_binary());
        command
            .args(&args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file handle"))
            .stderr(log);
        self.child = Some(command.spawn().expect("spawn etcd"));
    }

    /// Polls the member until it answers a request, or returns its log when it exits or
    /// times out.
    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let endpoint = self.endpoint();
        let options = self.connect_options();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("etcd exited with {status}:\n{}", self.log()));
            }
            if probe(&endpoint, options.clone()).await {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd at {endpoint} not ready after {READY_TIMEOUT:?}:\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The member's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Kills the process with SIGKILL and waits for it to exit. Its data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the process again on the same ports and data, and waits until it serves
    /// requests (for a cluster member: until the cluster has quorum).
    ///
    /// # Panics
    ///
    /// When the member does not come back in time.
    pub async fn restart(&mut self) {
        self.spawn();
        if let Err(log) = self.wait_ready().await {
            panic!("etcd member {} did not restart:\n{log}", self.name);
        }
    }

    /// Kills the process, deletes its data and starts it again empty on the same
    /// address: the same cluster id (it derives from the same flags) with its revision
    /// back at 1. With `new_cluster`, under another cluster token: another cluster id.
    ///
    /// # Panics
    ///
    /// When the member does not come back in time.
    pub async fn wipe(&mut self, new_cluster: bool) {
        self.kill();
        std::fs::remove_dir_all(self.dir.path().join("data")).expect("delete etcd's data");
        if new_cluster {
            self.cluster_token.push_str("-again");
        }
        self.restart().await;
    }

    /// Kills the process and copies its data directory: a backup to
    /// [`restore`](Self::restore) later. The member stays down.
    ///
    /// # Panics
    ///
    /// When the data cannot be copied.
    pub fn backup(&mut self) -> Backup {
        self.kill();
        let backup = tempfile::Builder::new()
            .prefix("testkit-backup-")
            .tempdir()
            .expect("create a backup directory");
        copy_dir(&self.dir.path().join("data"), backup.path()).expect("copy etcd's data");
        Backup(backup)
    }

    /// Kills the process, replaces its data with `backup` and starts it again: etcd
    /// restored from an older backup, same cluster id, lower revision.
    ///
    /// # Panics
    ///
    /// When the data cannot be replaced or the member does not come back in time.
    pub async fn restore(&mut self, backup: &Backup) {
        self.kill();
        let data = self.dir.path().join("data");
        std::fs::remove_dir_all(&data).expect("delete etcd's data");
        copy_dir(backup.0.path(), &data).expect("restore etcd's data");
        self.restart().await;
    }

    /// Freezes the process with SIGSTOP: connections stay open and nothing answers.
    pub fn freeze(&self) {
        self.signal(Signal::SIGSTOP);
    }

    /// Resumes a frozen process with SIGCONT.
    pub fn thaw(&self) {
        self.signal(Signal::SIGCONT);
    }

    fn signal(&self, signal: Signal) {
        let pid = i32::try_from(self.pid()).expect("pid fits in i32");
        kill(Pid::from_raw(pid), signal).expect("signal etcd");
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `program` so that it is killed when the process that started it dies, where
/// `setpriv` is available: a test runner that is killed leaves no etcd behind.
fn command_dying_with_parent(program: &Path) -> Command {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    let setpriv = SETPRIV.get_or_init(|| {
        ["/usr/bin/setpriv", "/bin/setpriv"]
            .iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
    });
    match setpriv {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.arg("--pdeathsig=KILL").arg("--").arg(program);
            command
        }
        None => Command::new(program),
    }
}

/// Whether `endpoint` serves a linearizable read within two seconds. A member with auth
/// on answers an anonymous read with an auth error: that counts as serving.
async fn probe(endpoint: &str, options: ConnectOptions) -> bool {
    let attempt = async {
        let mut client = Client::connect([endpoint], Some(options)).await.ok()?;
        match client.get("testkit-probe", None).await {
            Ok(_) => Some(()),
            Err(etcd_client::Error::GRpcStatus(status))
                if status.message().contains("user name is empty")
                    || status.message().contains("invalid auth token") =>
            {
                Some(())
            }
            Err(_) => None,
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(()))
    )
}

/// Turns authentication on: a `root` user with `root_password`, then `auth enable`.
/// From then on clients need credentials.
///
/// # Panics
///
/// When etcd refuses.
pub async fn enable_auth(client: &mut Client, root_password: &str) {
    client
        .user_add("root", root_password, None)
        .await
        .expect("add the root user");
    client
        .user_grant_role("root", "root")
        .await
        .expect("grant root the root role");
    client.auth_enable().await.expect("enable auth");
}

/// Adds `user` with `password` and a role allowing only reads of keys under `prefix`.
///
/// # Panics
///
/// When etcd refuses.
pub async fn add_reader(client: &mut Client, user: &str, password: &str, prefix: &str) {
    use etcd_client::{Permission, PermissionType};
    let role = format!("{user}-reader");
    client.role_add(role.as_str()).await.expect("add the role");
    client
        .role_grant_permission(
            role.as_str(),
            Permission::new(PermissionType::Read, prefix).with_prefix(),
        )
        .await
        .expect("grant read on the prefix");
    client
        .user_add(user, password, None)
        .await
        .expect("add the user");
    client
        .user_grant_role(user, role.as_str())
        .await
        .expect("grant the role");
}

/// Connects a plain `etcd-client` to `endpoints`.
///
/// # Panics
///
/// When the endpoints do not answer.
pub async fn connect(endpoints: &[String]) -> Client {
    let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
    Client::connect(endpoints, Some(options))
        .await
        .unwrap_or_else(|error| panic!("connect to {endpoints:?}: {error}"))
}

/// Compacts the key-value history up to `revision` (physically, so it is gone when this
/// returns).
///
/// # Panics
///
/// When etcd refuses.
pub async fn compact(client: &mut Client, revision: i64) {
    client
        .compact(revision, Some(CompactionOptions::new().with_physical()))
        .await
        .unwrap_or_else(|error| panic!("compact at revision {revision}: {error}"));
}

/// The current revision of the cluster `client` talks to.
///
/// # Panics
///
/// When etcd does not answer.
pub async fn current_revision(client: &mut Client) -> i64 {
    let response = client
        .get("testkit-probe", None)
        .await
        .expect("read the revision");
    response.header().expect("response header").revision()
}

/// A cluster of etcd members on loopback, each with its own ports and data directory.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<EtcdMember>,
}

impl EtcdCluster {
    /// Starts a cluster of `size` members and waits until every member serves requests.
    ///
    /// # Panics
    ///
    /// When etcd is missing or the cluster does not form in time (with the logs).
    pub async fn start(size: usize) -> Self {
        Self::start_with(size, MemberOptions::default()).await
    }

    /// Starts a cluster of `size` members with extra flags.
    ///
    /// # Panics
    ///
    /// When etcd is missing or the cluster does not form in time (with the logs).
    pub async fn start_with(size: usize, options: MemberOptions) -> Self {
        let mut last_error = String::new();
        for _ in 0..PORT_ATTEMPTS {
            let mut members: Vec<EtcdMember> = (0..size)
                .map(|i| {
                    EtcdMember::configure(
                        &format!("m{i}"),
                        free_port(),
                        free_port(),
                        options.clone(),
                    )
                })
                .collect();
            let initial_cluster = members
                .iter()
                .map(|member| format!("{}={}", member.name, member.peer_url()))
                .collect::<Vec<_>>()
                .join(",");
            let token = members[0].cluster_token.clone();
            for member in &mut members {
                member.initial_cluster.clone_from(&initial_cluster);
                member.cluster_token.clone_from(&token);
                member.spawn();
            }
            let mut failure = String::new();
            for member in &mut members {
                if let Err(log) = member.wait_ready().await {
                    let _ = writeln!(failure, "member {}: {log}", member.name);
                }
            }
            if failure.is_empty() {
                return Self { members };
            }
            if !failure.contains("address already in use") {
                panic!("etcd cluster did not form:\n{failure}");
            }
            last_error = failure;
        }
        panic!("etcd cluster did not form after {PORT_ATTEMPTS} attempts:\n{last_error}");
    }

    /// The client URLs of all members, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(EtcdMember::endpoint).collect()
    }

    /// One member, to kill, freeze or restart.
    pub fn member(&mut self, index: usize) -> &mut EtcdMember {
        &mut self.members[index]
    }

    /// All members.
    pub fn members(&self) -> &[EtcdMember] {
        &self.members
    }

    /// Connects a plain `etcd-client` to every member.
    ///
    /// # Panics
    ///
    /// When the members do not answer.
    pub async fn client(&self) -> Client {
        connect(&self.endpoints()).await
    }

    /// Removes member `index` from the cluster through another member, then stops its
    /// process: the cluster goes on with one member less. Its endpoint stays in
    /// [`endpoints`](Self::endpoints) order as a dead address.
    ///
    /// # Panics
    ///
    /// When the remaining members do not accept the removal.
    pub async fn remove_member(&mut self, index: usize) {
        let name = self.members[index].name.clone();
        let others: Vec<String> = self
            .members
            .iter()
            .enumerate()
            .filter(|(i, member)| *i != index && member.is_running())
            .map(|(_, member)| member.endpoint())
            .collect();
        let mut client = connect(&others).await;
        let list = client.member_list().await.expect("list the members");
        let id = list
            .members()
            .iter()
            .find(|member| member.name() == name)
            .unwrap_or_else(|| panic!("member {name} is not in the cluster"))
            .id();
        // etcd refuses a removal while the others are not all caught up (strict
        // reconfiguration check): try again for a while.
        let mut last_error = None;
        for _ in 0..40 {
            match client.member_remove(id).await {
                Ok(_) => {
                    self.members[index].kill();
                    return;
                }
                Err(error) => last_error = Some(error),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        panic!("member {name} could not be removed: {last_error:?}");
    }
}

/// What a [`FaultProxy`] does with the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward everything.
    Pass,
    /// Keep connections open but forward nothing, as a frozen peer would.
    Stall,
    /// Forward every chunk after this delay.
    Slow(Duration),
    /// Close every connection and refuse new ones.
    Cut,
}

/// A loopback TCP proxy in front of an etcd member that can cut, stall or slow its
/// connections: for faults etcd itself cannot show, such as a client cut off while etcd
/// goes on.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    mode: tokio::sync::watch::Sender<ProxyMode>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port forwarding to `127.0.0.1:target_port`.
    ///
    /// # Panics
    ///
    /// When no loopback port can be bound.
    pub async fn start(target_port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind the proxy port");
        let port = listener.local_addr().expect("proxy address").port();
        let (mode, mode_receiver) = tokio::sync::watch::channel(ProxyMode::Pass);
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *mode_receiver.borrow() == ProxyMode::Cut {
                    drop(inbound); // refused while cut
                    continue;
                }
                let mode = mode_receiver.clone();
                tokio::spawn(async move {
                    let Ok(outbound) =
                        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, target_port)).await
                    else {
                        return;
                    };
                    let (inbound_read, inbound_write) = inbound.into_split();
                    let (outbound_read, outbound_write) = outbound.into_split();
                    tokio::join!(
                        pump(inbound_read, outbound_write, mode.clone()),
                        pump(outbound_read, inbound_write, mode),
                    );
                });
            }
        });
        Self { port, mode, task }
    }

    /// The proxy's client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes every proxied connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.mode.send_replace(ProxyMode::Cut);
    }

    /// Holds every byte until [`restore`](Self::restore); connections stay open.
    pub fn stall(&self) {
        self.mode.send_replace(ProxyMode::Stall);
    }

    /// Delays every chunk by `delay`.
    pub fn slow(&self, delay: Duration) {
        self.mode.send_replace(ProxyMode::Slow(delay));
    }

    /// Forwards everything again.
    pub fn restore(&self) {
        self.mode.send_replace(ProxyMode::Pass);
    }
}

/// Copies one direction of a connection, obeying the proxy's mode before each chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: tokio::sync::watch::Receiver<ProxyMode>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = mode.wait_for(|mode| *mode == ProxyMode::Cut) => return,
        };
        let Ok(count) = read else { return };
        if count == 0 {
            return;
        }
        loop {
            let current = *mode.borrow_and_update();
            match current {
                ProxyMode::Pass => break,
                ProxyMode::Slow(delay) => {
                    tokio::time::sleep(delay).await;
                    break;
                }
                ProxyMode::Stall => {
                    if mode.changed().await.is_err() {
                        return;
                    }
                }
                ProxyMode::Cut => return,
            }
        }
        if to.write_all(&buffer[..count]).await.is_err() {
            return;
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.mode.send_replace(ProxyMode::Cut);
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_etcd_says_how_to_install_it() {
        let empty = tempfile::tempdir().unwrap();
        let message = find_etcd_in(None, Some(empty.path().into())).unwrap_err();
        assert!(message.contains("apt-get install etcd-server"), "{message}");
        assert!(message.contains("ETCD_BIN"), "{message}");

        let message = find_etcd_in(Some("/nonexistent/etcd".into()), None).unwrap_err();
        assert!(
            message.contains("ETCD_BIN=/nonexistent/etcd is not a file"),
            "{message}"
        );
    }

    #[test]
    fn etcd_is_found_on_the_path() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("etcd"), "").unwrap();
        assert_eq!(
            find_etcd_in(None, Some(dir.path().into())).unwrap(),
            dir.path().join("etcd")
        );
    }
}
