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

use etcd_client::{Client, CompactionOptions, ConnectOptions};
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
    if let Some(bin) = std::env::var_os("ETCD_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("ETCD_BIN={} is not a file", bin.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
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

/// Extra command-line flags for members, e.g. a short auth token TTL.
#[derive(Debug, Clone, Default)]
pub struct MemberOptions {
    /// Flags appended to every member's command line.
    pub extra_args: Vec<String>,
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
        Self {
            name: name.to_owned(),
            client_port,
            peer_port,
            initial_cluster: String::new(),
            options,
            dir: tempfile::Builder::new()
                .prefix("testkit-etcd-")
                .tempdir()
                .expect("create a temporary directory for etcd"),
            child: None,
        }
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
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
        connect(&[self.endpoint()]).await
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
            format!("testkit-{}", self.dir.path().display()),
            "--heartbeat-interval".into(),
            "50".into(),
            "--election-timeout".into(),
            "500".into(),
            "--logger".into(),
            "zap".into(),
            "--log-level".into(),
            "warn".into(),
        ];
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
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("etcd exited with {status}:\n{}", self.log()));
            }
            if probe(&endpoint).await {
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

/// Whether a linearizable read succeeds against `endpoint` within a second.
async fn probe(endpoint: &str) -> bool {
    let options = ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(1));
    let attempt = async {
        let mut client = Client::connect([endpoint], Some(options)).await.ok()?;
        client.get("testkit-probe", None).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), attempt).await,
        Ok(Some(_))
    )
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
            for member in &mut members {
                member.initial_cluster.clone_from(&initial_cluster);
                member.spawn();
            }
            let mut failure = String::new();
            for member in &mut members {
                if let Err(log) = member.wait_ready().await {
                    let _ = write!(failure, "member {}: {log}\n", member.name);
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
}

/// A loopback TCP proxy in front of an etcd member that can cut connections: for faults
/// etcd itself cannot show, such as a client cut off while etcd goes on.
#[derive(Debug)]
pub struct FaultProxy {
    port: u16,
    cut: tokio::sync::watch::Sender<bool>,
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
        let (cut, cut_receiver) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if *cut_receiver.borrow() {
                    drop(inbound); // refused while cut
                    continue;
                }
                let mut cut_receiver = cut_receiver.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) =
                        tokio::net::TcpStream::connect((Ipv4Addr::LOCALHOST, target_port)).await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_receiver.wait_for(|cut| *cut) => {}
                    }
                });
            }
        });
        Self { port, cut, task }
    }

    /// The proxy's client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Closes every proxied connection and refuses new ones until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.cut.send_replace(true);
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.cut.send_replace(true);
        self.task.abort();
    }
}
