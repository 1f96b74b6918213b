//! Connection settings: the seed-compatible `EtcdSettings__*` environment, and a builder.
//!
//! | variable | meaning |
//! | --- | --- |
//! | `EtcdSettings__HostName` | endpoint URL(s), `http://` or `https://`, comma-separated for a cluster |
//! | `EtcdSettings__UserName`, `EtcdSettings__Password` | etcd authentication |
//! | `EtcdSettings__RootKey` | the prefix (default `/APPS/ControlUnit`) |
//! | `EtcdSettings__CaCertPath` | CA bundle (PEM) to verify the server |
//! | `EtcdSettings__ClientCertPath`, `EtcdSettings__ClientKeyPath` | client certificate and key (PEM) for mTLS |
//! | `EtcdSettings__Dev` | `true`: the prefix gets `/dev` in front |
//! | `USE_LOCAL_CONFIG` | `true`: do not contact etcd; values come from env vars |
//! | `EtcdSettings__StartTimeout` | how long `start` waits for etcd (`5s`, `500ms`, `2`; default 5 s) |
//! | `EtcdSettings__FailFast` | `true`: `start` fails when etcd does not answer, instead of falling back |
//! | `EtcdSettings__CacheFile` | a last-known-good cache file (off when unset) |
//! | `EtcdSettings__CacheSecrets` | `true`: secret names are written to the cache file too |
//!
//! Code wins over environment: start from [`EtcdSettingsBuilder::from_env`] and override.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustls_pki_types::pem::{self, PemObject};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};

/// `EtcdSettings__HostName`
pub const HOST_NAME: &str = "EtcdSettings__HostName";
/// `EtcdSettings__UserName`
pub const USER_NAME: &str = "EtcdSettings__UserName";
/// `EtcdSettings__Password`
pub const PASSWORD: &str = "EtcdSettings__Password";
/// `EtcdSettings__RootKey`
pub const ROOT_KEY: &str = "EtcdSettings__RootKey";
/// `EtcdSettings__CaCertPath`
pub const CA_CERT_PATH: &str = "EtcdSettings__CaCertPath";
/// `EtcdSettings__ClientCertPath`
pub const CLIENT_CERT_PATH: &str = "EtcdSettings__ClientCertPath";
/// `EtcdSettings__ClientKeyPath`
pub const CLIENT_KEY_PATH: &str = "EtcdSettings__ClientKeyPath";
/// `EtcdSettings__Dev`
pub const DEV: &str = "EtcdSettings__Dev";
/// `USE_LOCAL_CONFIG`
pub const USE_LOCAL_CONFIG: &str = "USE_LOCAL_CONFIG";
/// `EtcdSettings__StartTimeout`
pub const START_TIMEOUT: &str = "EtcdSettings__StartTimeout";
/// `EtcdSettings__FailFast`
pub const FAIL_FAST: &str = "EtcdSettings__FailFast";
/// `EtcdSettings__CacheFile`
pub const CACHE_FILE: &str = "EtcdSettings__CacheFile";
/// `EtcdSettings__CacheSecrets`
pub const CACHE_SECRETS: &str = "EtcdSettings__CacheSecrets";

/// `EtcdSettings__Instance`: the instance id; set, the configuration announces itself
/// (see [`crate::announce`]).
pub const INSTANCE: &str = "EtcdSettings__Instance";
/// `EtcdSettings__InstanceLabels`: `key=value,key=value`.
pub const INSTANCE_LABELS: &str = "EtcdSettings__InstanceLabels";
/// `EtcdSettings__InstanceTtl`: how long the record outlives the instance (default 15 s).
pub const INSTANCE_TTL: &str = "EtcdSettings__InstanceTtl";
/// `EtcdSettings__InstanceApp`: the application's name, and version after a space.
pub const INSTANCE_APP: &str = "EtcdSettings__InstanceApp";

/// How long `start` waits for etcd when nothing says otherwise.
pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(5);

/// The endpoint used when `EtcdSettings__HostName` is not set: etcd's own default.
pub const DEFAULT_ENDPOINT: &str = "http://localhost:2379";
/// The prefix used when `EtcdSettings__RootKey` is not set (the ControlUnit schema).
pub const DEFAULT_ROOT_KEY: &str = "/APPS/ControlUnit";

/// Validated connection settings.
///
/// `Debug` never shows the password.
#[derive(Clone)]
pub struct EtcdSettings {
    endpoints: Vec<String>,
    user: Option<(String, SecretString)>,
    /// `EtcdSettings__RootKey`, validated, when set.
    root_key: Option<String>,
    ca_cert: Option<CaCert>,
    identity: Option<ClientIdentity>,
    dev: bool,
    use_local_config: bool,
    start_timeout: Duration,
    fail_fast: bool,
    cache_file: Option<PathBuf>,
    cache_secrets: bool,
    announce: Option<crate::announce::Announce>,
}

/// A CA bundle read from disk at build time, so an unreadable file fails early.
#[derive(Clone)]
pub(crate) struct CaCert {
    pub(crate) path: PathBuf,
    pub(crate) pem: Vec<u8>,
}

/// A client certificate and its key, read at build time. The key never leaves this
/// struct in any printed form.
#[derive(Clone)]
pub(crate) struct ClientIdentity {
    pub(crate) cert_path: PathBuf,
    pub(crate) cert_pem: Vec<u8>,
    pub(crate) key_pem: secrecy::SecretSlice<u8>,
}

impl EtcdSettings {
    /// Reads the settings from the process environment.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] naming the first malformed variable.
    pub fn from_env() -> Result<Self> {
        EtcdSettingsBuilder::from_env()?.build()
    }

    /// Reads the settings through `lookup` (a variable name → its value), so tests and
    /// programs can supply their own environment.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] naming the first malformed variable.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        EtcdSettingsBuilder::from_lookup(lookup)?.build()
    }

    /// An empty builder: `http://localhost:2379`, no auth, prefix `/APPS/ControlUnit`.
    #[must_use]
    pub fn builder() -> EtcdSettingsBuilder {
        EtcdSettingsBuilder::default()
    }

    /// The endpoint URLs.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The user name, when authentication is configured.
    pub fn user_name(&self) -> Option<&str> {
        self.user.as_ref().map(|(name, _)| name.as_str())
    }

    /// The prefix these settings name on their own: `EtcdSettings__RootKey` or
    /// `/APPS/ControlUnit`, with the `EtcdSettings__Dev` rule. Never ends with `/`. A
    /// configuration's prefix also depends on its schema: see
    /// [`resolve_prefix`](Self::resolve_prefix).
    pub fn prefix(&self) -> String {
        self.dev_rule(self.root_key.as_deref().unwrap_or(DEFAULT_ROOT_KEY))
    }

    /// The prefix a configuration owns, by the one rule that [`EtcdConfig`],
    /// [`EtcdClient`] and the CLI follow; the first that is set wins:
    ///
    /// 1. `explicit` ([`EtcdConfigBuilder::prefix`], [`EtcdClient::with_prefix`], the
    ///    CLI's `--prefix`), taken as given;
    /// 2. `EtcdSettings__RootKey` (or [`EtcdSettingsBuilder::root_key`]);
    /// 3. the schema's prefix (`prefix = …` in a schema file);
    /// 4. `/APPS/ControlUnit`.
    ///
    /// `EtcdSettings__Dev` puts `/dev` in front of 2 to 4. A trailing `/` is dropped.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] naming where an empty prefix, or one that does not start with
    /// `/`, came from.
    ///
    /// [`EtcdConfig`]: crate::EtcdConfig
    /// [`EtcdClient`]: crate::EtcdClient
    /// [`EtcdClient::with_prefix`]: crate::EtcdClient::with_prefix
    /// [`EtcdConfigBuilder::prefix`]: crate::EtcdConfigBuilder::prefix
    pub fn resolve_prefix(
        &self,
        explicit: Option<&str>,
        schema_prefix: Option<&str>,
    ) -> Result<String> {
        if let Some(explicit) = explicit {
            return parse_prefix(EXPLICIT_PREFIX, explicit);
        }
        if self.root_key.is_some() {
            return Ok(self.prefix());
        }
        match schema_prefix {
            Some(prefix) => Ok(self.dev_rule(&parse_prefix(SCHEMA_PREFIX, prefix)?)),
            None => Ok(self.prefix()),
        }
    }

    fn dev_rule(&self, root: &str) -> String {
        if self.dev {
            format!("/dev{root}")
        } else {
            root.to_owned()
        }
    }

    /// The CA bundle path, when one is configured.
    pub fn ca_cert_path(&self) -> Option<&Path> {
        self.ca_cert.as_ref().map(|ca| ca.path.as_path())
    }

    /// Whether values come from env vars only (`USE_LOCAL_CONFIG=true`).
    pub fn use_local_config(&self) -> bool {
        self.use_local_config
    }

    /// How long `start` waits for etcd.
    pub fn start_timeout(&self) -> Duration {
        self.start_timeout
    }

    /// The same settings with another start timeout (`EtcdConfigBuilder::start_timeout`).
    pub(crate) fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Whether `start` fails when etcd does not answer, instead of falling back.
    pub fn fail_fast(&self) -> bool {
        self.fail_fast
    }

    /// The last-known-good cache file, when enabled.
    pub fn cache_file(&self) -> Option<&Path> {
        self.cache_file.as_deref()
    }

    /// Whether secret names are written to the cache file.
    pub fn cache_secrets(&self) -> bool {
        self.cache_secrets
    }

    /// What this instance announces of itself, when it does.
    pub fn announce(&self) -> Option<&crate::announce::Announce> {
        self.announce.as_ref()
    }

    pub(crate) fn credentials(&self) -> Option<(&str, &str)> {
        self.user
            .as_ref()
            .map(|(name, password)| (name.as_str(), password.expose_secret()))
    }

    pub(crate) fn ca_cert(&self) -> Option<&CaCert> {
        self.ca_cert.as_ref()
    }

    pub(crate) fn identity(&self) -> Option<&ClientIdentity> {
        self.identity.as_ref()
    }

    /// The client certificate path, when mTLS is configured.
    pub fn client_cert_path(&self) -> Option<&Path> {
        self.identity
            .as_ref()
            .map(|identity| identity.cert_path.as_path())
    }
}

impl fmt::Debug for EtcdSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSettings")
            .field("endpoints", &self.endpoints)
            .field("user_name", &self.user_name())
            .field("password", &self.user.as_ref().map(|_| "[REDACTED]"))
            .field("prefix", &self.prefix())
            .field("ca_cert_path", &self.ca_cert_path())
            .field("client_cert_path", &self.client_cert_path())
            .field("use_local_config", &self.use_local_config)
            .field("start_timeout", &self.start_timeout)
            .field("fail_fast", &self.fail_fast)
            .field("cache_file", &self.cache_file)
            .field("cache_secrets", &self.cache_secrets)
            .field("announce", &self.announce)
            .finish()
    }
}

/// Builds [`EtcdSettings`]; every setting is checked in [`build`](Self::build).
#[derive(Default, Clone)]
pub struct EtcdSettingsBuilder {
    endpoints: Option<String>,
    user_name: Option<String>,
    password: Option<SecretString>,
    root_key: Option<String>,
    ca_cert_path: Option<PathBuf>,
    client_cert_path: Option<PathBuf>,
    client_key_path: Option<PathBuf>,
    dev: bool,
    use_local_config: bool,
    start_timeout: Option<Duration>,
    fail_fast: bool,
    cache_file: Option<PathBuf>,
    cache_secrets: bool,
    announce: Option<crate::announce::Announce>,
}

impl fmt::Debug for EtcdSettingsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdSettingsBuilder")
            .field("endpoints", &self.endpoints)
            .field("user_name", &self.user_name)
            .field("password", &self.password.as_ref().map(|_| "[REDACTED]"))
            .field("root_key", &self.root_key)
            .field("ca_cert_path", &self.ca_cert_path)
            .field("client_cert_path", &self.client_cert_path)
            .field("client_key_path", &self.client_key_path)
            .field("dev", &self.dev)
            .field("use_local_config", &self.use_local_config)
            .field("start_timeout", &self.start_timeout)
            .field("fail_fast", &self.fail_fast)
            .field("cache_file", &self.cache_file)
            .field("cache_secrets", &self.cache_secrets)
            .field("announce", &self.announce)
            .finish()
    }
}

impl EtcdSettingsBuilder {
    /// A builder pre-filled from the process environment.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] when a boolean variable is not a boolean.
    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// A builder pre-filled through `lookup` (a variable name → its value).
    ///
    /// Empty variables count as unset.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] when a boolean variable is not a boolean.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).filter(|value| !value.trim().is_empty());
        Ok(Self {
            endpoints: get(HOST_NAME),
            user_name: get(USER_NAME),
            password: get(PASSWORD).map(SecretString::from),
            root_key: get(ROOT_KEY),
            ca_cert_path: get(CA_CERT_PATH).map(PathBuf::from),
            client_cert_path: get(CLIENT_CERT_PATH).map(PathBuf::from),
            client_key_path: get(CLIENT_KEY_PATH).map(PathBuf::from),
            dev: get(DEV).map_or(Ok(false), |value| parse_flag(DEV, &value))?,
            use_local_config: get(USE_LOCAL_CONFIG)
                .map_or(Ok(false), |value| parse_flag(USE_LOCAL_CONFIG, &value))?,
            start_timeout: get(START_TIMEOUT)
                .map(|value| {
                    crate::value::parse_duration(&value)
                        .map_err(|reason| setting(START_TIMEOUT, reason))
                })
                .transpose()?,
            fail_fast: get(FAIL_FAST).map_or(Ok(false), |value| parse_flag(FAIL_FAST, &value))?,
            cache_file: get(CACHE_FILE).map(PathBuf::from),
            cache_secrets: get(CACHE_SECRETS)
                .map_or(Ok(false), |value| parse_flag(CACHE_SECRETS, &value))?,
            announce: crate::announce::Announce::from_settings(
                get(INSTANCE),
                get(INSTANCE_LABELS).as_deref(),
                get(INSTANCE_TTL)
                    .map(|value| {
                        crate::value::parse_duration(&value)
                            .map_err(|reason| setting(INSTANCE_TTL, reason))
                    })
                    .transpose()?,
                get(INSTANCE_APP).as_deref(),
            )?,
        })
    }

    /// Endpoint URL(s), comma-separated, each `http://host:port` or `https://host:port`.
    #[must_use]
    pub fn endpoints(mut self, endpoints: impl Into<String>) -> Self {
        self.endpoints = Some(endpoints.into());
        self
    }

    /// User name and password for etcd authentication.
    #[must_use]
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.user_name = Some(name.into());
        self.password = Some(SecretString::from(password.into()));
        self
    }

    /// The configuration prefix, e.g. `/apps/myapp/prod`.
    #[must_use]
    pub fn root_key(mut self, root_key: impl Into<String>) -> Self {
        self.root_key = Some(root_key.into());
        self
    }

    /// A CA bundle (PEM) to verify the servers of `https://` endpoints.
    #[must_use]
    pub fn ca_cert_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert_path = Some(path.into());
        self
    }

    /// A client certificate and key (PEM) for members that require client certificates
    /// (`--client-cert-auth`).
    #[must_use]
    pub fn client_identity(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert_path = Some(cert.into());
        self.client_key_path = Some(key.into());
        self
    }

    /// Puts `/dev` in front of the prefix (the ControlUnit development rule).
    #[must_use]
    pub fn dev(mut self, dev: bool) -> Self {
        self.dev = dev;
        self
    }

    /// Serve values from env vars only and never contact etcd.
    #[must_use]
    pub fn use_local_config(mut self, local: bool) -> Self {
        self.use_local_config = local;
        self
    }

    /// How long `start` waits for etcd before falling back (default 5 s).
    #[must_use]
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = Some(timeout);
        self
    }

    /// `start` fails when etcd does not answer in time, instead of serving the cache
    /// file, env vars and defaults.
    #[must_use]
    pub fn fail_fast(mut self, fail_fast: bool) -> Self {
        self.fail_fast = fail_fast;
        self
    }

    /// Keeps a last-known-good copy of the configuration in this file, and starts from it
    /// when etcd does not answer.
    #[must_use]
    pub fn cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache_file = Some(path.into());
        self
    }

    /// Writes secret names to the cache file too (off by default).
    #[must_use]
    pub fn cache_secrets(mut self, cache_secrets: bool) -> Self {
        self.cache_secrets = cache_secrets;
        self
    }

    /// Keeps a record of this instance in etcd while it runs (see [`crate::announce`]).
    #[must_use]
    pub fn announce(mut self, announce: crate::announce::Announce) -> Self {
        self.announce = Some(announce);
        self
    }

    /// Keeps no record, whatever `EtcdSettings__Instance` says: for tools that read a
    /// configuration without being one of its instances.
    #[must_use]
    pub fn no_announce(mut self) -> Self {
        self.announce = None;
        self
    }

    /// Checks every setting and reads the CA bundle.
    ///
    /// # Errors
    ///
    /// [`Error::Setting`] naming the setting: a malformed or mixed-scheme endpoint list, a
    /// user without password (or the reverse), a prefix that is empty or does not start
    /// with `/`, a CA bundle that cannot be read or holds no certificate, an `https://`
    /// endpoint without a CA bundle.
    pub fn build(self) -> Result<EtcdSettings> {
        let endpoints = parse_endpoints(self.endpoints.as_deref().unwrap_or(DEFAULT_ENDPOINT))?;
        let user = match (self.user_name, self.password) {
            (Some(name), Some(password)) => Some((name, password)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(setting(PASSWORD, "a user name is set but no password"));
            }
            (None, Some(_)) => {
                return Err(setting(USER_NAME, "a password is set but no user name"));
            }
        };
        let root_key = self
            .root_key
            .as_deref()
            .map(|root_key| parse_prefix(ROOT_KEY, root_key))
            .transpose()?;
        let ca_cert = self.ca_cert_path.map(read_ca_cert).transpose()?;
        let tls = endpoints[0].starts_with("https://");
        if tls && ca_cert.is_none() {
            return Err(setting(
                CA_CERT_PATH,
                "https:// endpoints need a CA bundle to verify the server",
            ));
        }
        if !tls && ca_cert.is_some() {
            return Err(setting(
                HOST_NAME,
                "a CA bundle is set but the endpoints are http://; use https://",
            ));
        }
        let identity = match (self.client_cert_path, self.client_key_path) {
            (None, None) => None,
            (Some(_), None) => {
                return Err(setting(
                    CLIENT_KEY_PATH,
                    "a client certificate is set but no key",
                ));
            }
            (None, Some(_)) => {
                return Err(setting(
                    CLIENT_CERT_PATH,
                    "a client key is set but no certificate",
                ));
            }
            (Some(cert), Some(key)) => Some(read_identity(cert, &key)?),
        };
        if !tls && identity.is_some() {
            return Err(setting(
                HOST_NAME,
                "a client certificate is set but the endpoints are http://; use https://",
            ));
        }
        let start_timeout = self.start_timeout.unwrap_or(DEFAULT_START_TIMEOUT);
        if start_timeout.is_zero() {
            return Err(setting(START_TIMEOUT, "must be longer than zero"));
        }
        if let Some(path) = &self.cache_file
            && !crate::cache::directory_of(path).is_dir()
        {
            return Err(setting(
                CACHE_FILE,
                format!("{}: its directory does not exist", path.display()),
            ));
        }
        if let Some(announce) = &self.announce {
            announce.validate()?;
        }
        Ok(EtcdSettings {
            endpoints,
            user,
            root_key,
            ca_cert,
            identity,
            dev: self.dev,
            use_local_config: self.use_local_config,
            start_timeout,
            fail_fast: self.fail_fast,
            cache_file: self.cache_file,
            cache_secrets: self.cache_secrets,
            announce: self.announce,
        })
    }
}

fn setting(setting: &'static str, reason: impl Into<String>) -> Error {
    Error::Setting {
        setting,
        reason: reason.into(),
    }
}

/// A setting's flag: `true` or `false`, in any case. Nothing else: the Python original
/// honours only `true`, so reading `1` or `yes` as true could silently switch a seed-era
/// environment to another tree (`EtcdSettings__Dev`) or away from etcd.
fn parse_flag(name: &'static str, text: &str) -> Result<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(setting(
            name,
            format!("expected true or false, found {text:?}"),
        )),
    }
}

fn parse_endpoints(text: &str) -> Result<Vec<String>> {
    let endpoints = text
        .split(',')
        .map(str::trim)
        .filter(|endpoint| !endpoint.is_empty())
        .map(parse_endpoint)
        .collect::<Result<Vec<_>>>()?;
    let Some(first) = endpoints.first() else {
        return Err(setting(HOST_NAME, "no endpoint given"));
    };
    let scheme = first.split("://").next();
    if endpoints
        .iter()
        .any(|endpoint| endpoint.split("://").next() != scheme)
    {
        return Err(setting(
            HOST_NAME,
            format!("mixes http:// and https:// endpoints: {text:?}"),
        ));
    }
    Ok(endpoints)
}

/// Checks `scheme://host[:port][/]` and returns it without the trailing slash.
fn parse_endpoint(endpoint: &str) -> Result<String> {
    let invalid = |why: &str| setting(HOST_NAME, format!("{endpoint:?}: {why}"));
    let Some((scheme, rest)) = endpoint.split_once("://") else {
        return Err(invalid("expected http://host:port or https://host:port"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(invalid("the scheme must be http or https"));
    }
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#', '@', ' ']) {
        return Err(invalid("expected only host and port after the scheme"));
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(invalid("unclosed [ in an IPv6 address"));
        };
        (host, after.strip_prefix(':'))
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(invalid("the host is empty"));
    }
    if let Some(port) = port
        && port.parse::<u16>().map_or(true, |port| port == 0)
    {
        return Err(invalid("the port must be a number from 1 to 65535"));
    }
    Ok(format!("{scheme}://{authority}"))
}

/// How [`Error::Setting`] names a prefix given in code or on the command line.
const EXPLICIT_PREFIX: &str = "prefix";
/// How [`Error::Setting`] names a schema's prefix.
const SCHEMA_PREFIX: &str = "the schema's prefix";

/// A prefix as given by `source`, without its trailing `/`.
fn parse_prefix(source: &'static str, text: &str) -> Result<String> {
    let trimmed = text.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Err(setting(
            source,
            "the prefix is empty; a configuration must own a prefix such as /apps/myapp",
        ));
    }
    // `apps/x` is `/apps/x`, as the Python original reads it.
    Ok(if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    })
}

fn read_file(setting_name: &'static str, path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|error| {
        setting(
            setting_name,
            format!("cannot read {}: {error}", path.display()),
        )
    })
}

/// Checks that `pem` holds at least one certificate and nothing malformed.
fn check_certificates(setting_name: &'static str, path: &Path, pem: &[u8]) -> Result<()> {
    let mut found = false;
    for certificate in CertificateDer::pem_slice_iter(pem) {
        certificate.map_err(|error| {
            setting(
                setting_name,
                format!("{} is not valid PEM: {error}", path.display()),
            )
        })?;
        found = true;
    }
    if !found {
        return Err(setting(
            setting_name,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(())
}

fn read_identity(cert_path: PathBuf, key_path: &Path) -> Result<ClientIdentity> {
    let cert_pem = read_file(CLIENT_CERT_PATH, &cert_path)?;
    check_certificates(CLIENT_CERT_PATH, &cert_path, &cert_pem)?;
    let key_pem = secrecy::SecretSlice::from(read_file(CLIENT_KEY_PATH, key_path)?);
    // The error names the file and what is wrong, never the key's bytes.
    PrivateKeyDer::from_pem_slice(key_pem.expose_secret()).map_err(|error| {
        let reason = match error {
            pem::Error::NoItemsFound => "holds no PEM private key".to_owned(),
            other => format!("is not a valid PEM private key: {other}"),
        };
        setting(CLIENT_KEY_PATH, format!("{} {reason}", key_path.display()))
    })?;
    Ok(ClientIdentity {
        cert_path,
        cert_pem,
        key_pem,
    })
}

fn read_ca_cert(path: PathBuf) -> Result<CaCert> {
    let pem = read_file(CA_CERT_PATH, &path)?;
    check_certificates(CA_CERT_PATH, &path, &pem)?;
    Ok(CaCert { path, pem })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<EtcdSettings> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect();
        EtcdSettings::from_lookup(|name| vars.get(name).cloned())
    }

    fn setting_error(result: Result<EtcdSettings>) -> (&'static str, String) {
        match result {
            Err(Error::Setting { setting, reason }) => (setting, reason),
            other => panic!("expected a setting error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_the_python_original() {
        let settings = from(&[]).unwrap();
        assert_eq!(settings.endpoints(), ["http://localhost:2379"]);
        assert_eq!(settings.prefix(), "/APPS/ControlUnit");
        assert_eq!(settings.user_name(), None);
        assert!(!settings.use_local_config());
    }

    #[test]
    fn reads_the_seed_environment() {
        let settings = from(&[
            (HOST_NAME, "http://10.0.0.1:2379, http://10.0.0.2:2379/"),
            (USER_NAME, "app"),
            (PASSWORD, "hunter2"),
            (ROOT_KEY, "/apps/myapp/"),
            (DEV, "TRUE"),
            (USE_LOCAL_CONFIG, "False"),
        ])
        .unwrap();
        assert_eq!(
            settings.endpoints(),
            ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        assert_eq!(settings.credentials(), Some(("app", "hunter2")));
        assert_eq!(settings.prefix(), "/dev/apps/myapp");
        assert!(!settings.use_local_config());
    }

    #[test]
    fn flags_are_true_or_false_and_nothing_else() {
        for (text, expected) in [("true", true), ("TRUE", true), (" False ", false)] {
            assert_eq!(
                from(&[(DEV, text)]).unwrap().prefix().starts_with("/dev"),
                expected
            );
        }
        // The Python original honours only `true`: `1` or `yes` would silently read
        // another tree there and here.
        for text in ["1", "yes", "on", "0", "no"] {
            let (setting, reason) = setting_error(from(&[(DEV, text)]));
            assert_eq!(setting, DEV, "{text:?}");
            assert!(reason.contains("expected true or false"), "{reason}");
        }
        let (setting, _) = setting_error(from(&[(USE_LOCAL_CONFIG, "1")]));
        assert_eq!(setting, USE_LOCAL_CONFIG);
        assert_eq!(from(&[(ROOT_KEY, "apps/x/")]).unwrap().prefix(), "/apps/x");
    }

    #[test]
    fn code_wins_over_environment() {
        let settings = EtcdSettingsBuilder::from_lookup(|name| {
            (name == ROOT_KEY).then(|| "/from/env".to_owned())
        })
        .unwrap()
        .root_key("/from/code")
        .build()
        .unwrap();
        assert_eq!(settings.prefix(), "/from/code");
    }

    #[test]
    fn one_rule_resolves_the_prefix() {
        let plain = from(&[]).unwrap();
        let env = from(&[(ROOT_KEY, "/from/env/")]).unwrap();
        let dev = from(&[(ROOT_KEY, "/from/env"), (DEV, "true")]).unwrap();
        let dev_default = from(&[(DEV, "true")]).unwrap();
        let schema = Some("/from/schema/");
        let cases = [
            (&plain, None, None, "/APPS/ControlUnit"),
            (&plain, None, schema, "/from/schema"),
            (&plain, Some("/flag/"), schema, "/flag"),
            (&env, None, schema, "/from/env"),
            (&env, Some("/flag"), schema, "/flag"),
            (&dev, None, schema, "/dev/from/env"),
            (&dev, Some("/flag"), schema, "/flag"),
            (&dev_default, None, schema, "/dev/from/schema"),
            (&dev_default, None, None, "/dev/APPS/ControlUnit"),
        ];
        for (settings, explicit, schema, expected) in cases {
            assert_eq!(
                settings.resolve_prefix(explicit, schema).unwrap(),
                expected,
                "{explicit:?} {schema:?} {settings:?}"
            );
        }
        let wrong = |result: Result<String>| match result {
            Err(Error::Setting { setting, reason }) => (setting, reason),
            other => panic!("expected a setting error, got {other:?}"),
        };
        // Without its leading `/`, as the Python original reads it.
        assert_eq!(
            plain.resolve_prefix(Some("staging/"), None).unwrap(),
            "/staging"
        );
        assert_eq!(wrong(plain.resolve_prefix(Some(" / "), None)).0, "prefix");
        let (source, reason) = wrong(plain.resolve_prefix(None, Some("/")));
        assert_eq!(source, "the schema's prefix");
        assert!(reason.contains("empty"), "{reason}");
        // A set root key wins over the schema, so the schema's is not looked at.
        assert_eq!(env.resolve_prefix(None, Some("")).unwrap(), "/from/env");
    }

    #[test]
    fn malformed_settings_name_the_variable() {
        type Vars = &'static [(&'static str, &'static str)];
        let cases: &[(Vars, &str, &str)] = &[
            (
                &[(HOST_NAME, "localhost:2379")],
                HOST_NAME,
                "expected http://",
            ),
            (&[(HOST_NAME, "ftp://x:1")], HOST_NAME, "scheme"),
            (&[(HOST_NAME, "http://:2379")], HOST_NAME, "host is empty"),
            (&[(HOST_NAME, "http://h:99999")], HOST_NAME, "port"),
            (
                &[(HOST_NAME, "http://h:2379/v3")],
                HOST_NAME,
                "only host and port",
            ),
            (&[(HOST_NAME, " , ")], HOST_NAME, "no endpoint"),
            (&[(HOST_NAME, "http://a:1,https://b:2")], HOST_NAME, "mixes"),
            (&[(DEV, "maybe")], DEV, "expected true or false"),
            (&[(USE_LOCAL_CONFIG, "2")], USE_LOCAL_CONFIG, "found \"2\""),
            (&[(USER_NAME, "app")], PASSWORD, "no password"),
            (
                &[(START_TIMEOUT, "soon")],
                START_TIMEOUT,
                "expected a duration",
            ),
            (&[(START_TIMEOUT, "0s")], START_TIMEOUT, "longer than zero"),
            (&[(FAIL_FAST, "sure")], FAIL_FAST, "expected true or false"),
            (
                &[(CACHE_FILE, "/nonexistent/dir/cache.json")],
                CACHE_FILE,
                "its directory does not exist",
            ),
            (&[(PASSWORD, "pw")], USER_NAME, "no user name"),
            (&[(ROOT_KEY, "/")], ROOT_KEY, "empty"),
            (
                &[(CA_CERT_PATH, "/nonexistent/ca.pem")],
                CA_CERT_PATH,
                "cannot read /nonexistent/ca.pem",
            ),
            (
                &[(HOST_NAME, "https://h:2379")],
                CA_CERT_PATH,
                "need a CA bundle",
            ),
        ];
        for (vars, expected_setting, expected_reason) in cases {
            let (setting, reason) = setting_error(from(vars));
            assert_eq!(setting, *expected_setting, "for {vars:?}");
            assert!(
                reason.contains(expected_reason),
                "for {vars:?}: {reason:?} lacks {expected_reason:?}"
            );
        }
    }

    #[test]
    fn ca_bundle_must_hold_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let path_text = path.display().to_string();
        let (setting, reason) = setting_error(from(&[
            (HOST_NAME, "https://127.0.0.1:2379"),
            (CA_CERT_PATH, &path_text),
        ]));
        assert_eq!(setting, CA_CERT_PATH);
        assert!(reason.contains("holds no PEM certificate"), "{reason}");
        // The markers alone are not a certificate.
        std::fs::write(
            &path,
            "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let (setting, reason) = setting_error(from(&[
            (HOST_NAME, "https://127.0.0.1:2379"),
            (CA_CERT_PATH, &path_text),
        ]));
        assert_eq!(setting, CA_CERT_PATH);
        assert!(reason.contains("is not valid PEM"), "{reason}");
    }

    #[test]
    fn a_client_identity_needs_a_certificate_and_a_private_key() {
        let certs = testkit::TestCerts::generate();
        let text = |path: std::path::PathBuf| path.display().to_string();
        let (ca, cert, key) = (
            text(certs.ca()),
            text(certs.client_cert()),
            text(certs.client_key()),
        );
        let with = |cert: &str, key: &str| {
            from(&[
                (HOST_NAME, "https://127.0.0.1:2379"),
                (CA_CERT_PATH, &ca),
                (CLIENT_CERT_PATH, cert),
                (CLIENT_KEY_PATH, key),
            ])
        };
        assert!(with(&cert, &key).is_ok());
        let (setting, reason) = setting_error(with(&cert, &cert));
        assert_eq!(setting, CLIENT_KEY_PATH);
        assert!(reason.contains("holds no PEM private key"), "{reason}");
        let (setting, reason) = setting_error(with(&key, &key));
        assert_eq!(setting, CLIENT_CERT_PATH);
        assert!(reason.contains("holds no PEM certificate"), "{reason}");
        // A damaged key: named, its bytes never shown.
        let dir = tempfile::tempdir().unwrap();
        let damaged = dir.path().join("key.pem");
        let pem = std::fs::read_to_string(certs.client_key()).unwrap();
        let body = pem.lines().nth(1).unwrap().to_owned();
        std::fs::write(&damaged, pem.replace(&body, &format!("{body}%%%"))).unwrap();
        let (setting, reason) = setting_error(with(&cert, &text(damaged)));
        assert_eq!(setting, CLIENT_KEY_PATH);
        assert!(
            reason.contains("is not a valid PEM private key"),
            "{reason}"
        );
        assert!(!reason.contains(&body[..20]), "{reason}");
    }

    #[test]
    fn every_setting_reaches_its_accessor_from_the_environment_and_from_code() {
        let unset = from(&[]).unwrap();
        assert_eq!(unset.ca_cert_path(), None);
        assert_eq!(unset.client_cert_path(), None);
        assert!(unset.ca_cert().is_none() && unset.identity().is_none());
        assert_eq!(unset.start_timeout(), Duration::from_secs(5));
        assert!(!unset.fail_fast());
        assert_eq!(unset.cache_file(), None);
        assert!(!unset.cache_secrets());
        assert!(unset.announce().is_none());

        let certs = testkit::TestCerts::generate();
        let (ca, cert, key) = (certs.ca(), certs.client_cert(), certs.client_key());
        let text = |path: &Path| path.display().to_string();
        let env = from(&[
            (HOST_NAME, "https://127.0.0.1:2379"),
            (USER_NAME, "app"),
            (PASSWORD, "pw"),
            (CA_CERT_PATH, &text(&ca)),
            (CLIENT_CERT_PATH, &text(&cert)),
            (CLIENT_KEY_PATH, &text(&key)),
            (USE_LOCAL_CONFIG, "true"),
            (START_TIMEOUT, "750ms"),
            (FAIL_FAST, "true"),
            (CACHE_FILE, "/var/cache/app.json"),
            (CACHE_SECRETS, "true"),
            (INSTANCE, "web-1"),
        ])
        .unwrap();
        let code = EtcdSettings::builder()
            .endpoints("https://127.0.0.1:2379")
            .user("app", "pw")
            .ca_cert_path(&ca)
            .client_identity(&cert, &key)
            .use_local_config(true)
            .start_timeout(Duration::from_millis(750))
            .fail_fast(true)
            .cache_file("/var/cache/app.json")
            .cache_secrets(true)
            .announce(crate::announce::Announce::new("web-1"))
            .build()
            .unwrap();
        for (settings, source) in [(env, "environment"), (code, "code")] {
            assert_eq!(settings.user_name(), Some("app"), "{source}");
            assert_eq!(settings.ca_cert_path(), Some(ca.as_path()), "{source}");
            assert_eq!(
                settings.client_cert_path(),
                Some(cert.as_path()),
                "{source}"
            );
            let read = std::fs::read(&ca).unwrap();
            assert_eq!(
                settings.ca_cert().map(|ca| &ca.pem),
                Some(&read),
                "{source}"
            );
            let read = std::fs::read(&cert).unwrap();
            let identity = settings.identity().map(|identity| &identity.cert_pem);
            assert_eq!(identity, Some(&read), "{source}");
            assert!(settings.use_local_config(), "{source}");
            assert_eq!(
                settings.start_timeout(),
                Duration::from_millis(750),
                "{source}"
            );
            assert!(settings.fail_fast(), "{source}");
            let file = Path::new("/var/cache/app.json");
            assert_eq!(settings.cache_file(), Some(file), "{source}");
            assert!(settings.cache_secrets(), "{source}");
            let id = settings.announce().map(crate::announce::Announce::id);
            assert_eq!(id, Some("web-1"), "{source}");
        }
        // `no_announce` drops only the record the environment asked for.
        let lookup = |name: &str| match name {
            INSTANCE => Some(String::from("web-1")),
            ROOT_KEY => Some(String::from("/a")),
            _ => None,
        };
        let builder = EtcdSettingsBuilder::from_lookup(lookup).unwrap();
        let quiet = builder.no_announce().build().unwrap();
        assert!(quiet.announce().is_none());
        assert_eq!(quiet.prefix(), "/a");
        // `dev` from code, as from the environment (see `reads_the_seed_environment`).
        let dev = EtcdSettings::builder().root_key("/a").dev(true).build();
        assert_eq!(dev.unwrap().prefix(), "/dev/a");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let settings = from(&[(USER_NAME, "app"), (PASSWORD, "s3cr3t-pw")]).unwrap();
        let builder = EtcdSettings::builder().user("app", "s3cr3t-pw");
        for text in [format!("{settings:?}"), format!("{builder:?}")] {
            assert!(!text.contains("s3cr3t-pw"), "{text}");
            assert!(text.contains("REDACTED"), "{text}");
        }
    }

    #[test]
    fn ipv6_endpoints_are_accepted() {
        let settings = from(&[(HOST_NAME, "http://[::1]:2379")]).unwrap();
        assert_eq!(settings.endpoints(), ["http://[::1]:2379"]);
    }
}
