//! `etcd-dynamic-config`: the operator CLI. Parses with clap, calls the library, reports
//! with anyhow.

mod output;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use etcd_dynamic_config::audit::Audit;
use etcd_dynamic_config::schema::Schema;
use etcd_dynamic_config::settings::DEFAULT_ROOT_KEY;
use etcd_dynamic_config::{EtcdClient, EtcdConfig, EtcdSettingsBuilder, Loaded};

use output::{Masking, Style};

/// `println!` that hands a failed write back instead of panicking: a closed pipe
/// (`watch | head -1`) ends the command quietly (see `main`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// `print!`, as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// A flag's value: `true` or `false` in any case, as every `EtcdSettings__*` flag.
fn parse_flag(text: &str) -> std::result::Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("expected true or false, found {text:?}")),
    }
}

/// `--timeout`: seconds, more than 0 and at most a day.
fn parse_timeout(text: &str) -> std::result::Result<Duration, String> {
    const MAX: f64 = 86_400.0;
    match text.trim().parse::<f64>() {
        Ok(seconds) if seconds > 0.0 && seconds <= MAX => Ok(Duration::from_secs_f64(seconds)),
        Ok(_) => Err(format!(
            "{text:?} is out of range: give more than 0 and at most {MAX} seconds"
        )),
        Err(_) => Err(format!(
            "{text:?} is not a number of seconds (e.g. 5 or 0.5)"
        )),
    }
}

/// The user running the command, for the audit trail.
fn os_user() -> String {
    ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|user| !user.is_empty()))
        .unwrap_or_else(|| "unknown".to_owned())
}

mod rollout;

/// Exit codes, as documented in `--help`.
mod exit {
    /// A check found problems, health is not synced, or a name is not set.
    pub(crate) const PROBLEMS: u8 = 1;
    /// etcd could not be reached, or refused the request.
    pub(crate) const ETCD: u8 = 3;
    /// A setting, schema, file or value is invalid.
    pub(crate) const INPUT: u8 = 4;
    /// A guarded write was refused: etcd changed since the revision given or read.
    pub(crate) const CONFLICT: u8 = 5;
}

const AFTER_HELP: &str = "\
CONNECTION
  Every option also comes from the environment the library reads:
  EtcdSettings__HostName, __UserName, __Password (the password only from there),
  __RootKey, __CaCertPath, __ClientCertPath, __ClientKeyPath, __Dev. Options win.

SECRETS
  Names marked secret in the schema, and names that look secret (password, secret,
  token, dsn, *_key, ...), are shown as ******** unless --show-secrets. Without
  --schema, the ControlUnit schema applies at the ControlUnit prefix.

HISTORY
  history, diff and rollback read etcd's own revisions, as far back as etcd keeps
  them (until it compacts). put, import and rollback print the revision they wrote;
  --expect-rev REV refuses the write (exit 5, nothing written) if anything under the
  prefix changed after REV.

EXIT CODES
  0  success
  1  check found problems, health is not synced, or the name has no value
  2  usage error
  3  etcd could not be reached or refused the request
  4  invalid setting, schema, file or value
  5  refused: etcd changed since the revision expected or read";

/// Inspect and change configuration kept in etcd, through the same schema and
/// connection settings as the service that reads it.
#[derive(Debug, Parser)]
#[command(name = "etcd-dynamic-config", version, after_long_help = AFTER_HELP)]
struct Cli {
    /// etcd endpoint URL(s), comma-separated [env: EtcdSettings__HostName]
    #[arg(long, global = true, value_name = "URLS")]
    endpoints: Option<String>,

    /// User name; the password comes from EtcdSettings__Password [env: EtcdSettings__UserName]
    #[arg(long, global = true, value_name = "NAME")]
    user: Option<String>,

    /// The configuration prefix, taken as given; without it EtcdSettings__RootKey, then the schema's, then /APPS/ControlUnit (EtcdSettings__Dev puts /dev in front of those)
    #[arg(long, global = true, value_name = "PREFIX")]
    prefix: Option<String>,

    /// CA bundle (PEM) for https:// endpoints [env: EtcdSettings__CaCertPath]
    #[arg(long, global = true, value_name = "FILE")]
    ca_cert: Option<PathBuf>,

    /// Client certificate (PEM) for mTLS [env: EtcdSettings__ClientCertPath]
    #[arg(long, global = true, value_name = "FILE", requires = "client_key")]
    client_cert: Option<PathBuf>,

    /// Client key (PEM) for mTLS [env: EtcdSettings__ClientKeyPath]
    #[arg(long, global = true, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,

    /// A TOML schema file (names, kinds, env vars, defaults, validators, secrets);
    /// without it every key under the prefix is shown, named by its path
    #[arg(long, global = true, value_name = "FILE")]
    schema: Option<PathBuf>,

    /// Show the values of secret names instead of ********
    #[arg(long, global = true)]
    show_secrets: bool,

    /// Record each write (put, import, rollback) in the audit trail under /_audit<prefix>:
    /// who, why, when, what changed (secrets masked)
    #[arg(long, global = true, env = "EtcdSettings__Audit", value_parser = parse_flag, default_value = "false", num_args = 0..=1, default_missing_value = "true")]
    audit: bool,

    /// Who writes, for the audit trail [default: the OS user]
    #[arg(long, global = true, value_name = "NAME")]
    author: Option<String>,

    /// Why, for the audit trail
    #[arg(long, global = true, value_name = "TEXT")]
    reason: Option<String>,

    /// How long to wait for etcd (more than 0, at most a day)
    #[arg(long, global = true, value_name = "SECONDS", default_value = "5", value_parser = parse_timeout)]
    timeout: Duration,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the value of one name (exit 1 when it has none)
    Get {
        /// The name, e.g. log_level or database.port
        name: String,
    },
    /// Print every name with its value and where it came from
    Dump {
        /// table (aligned, for people), json (stable, for programs), env (NAME=value)
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Print every change as it happens: revision, name, old → new
    Watch {
        /// Stop after this many changes (default: until interrupted)
        #[arg(long, value_name = "N")]
        max_changes: Option<usize>,
    },
    /// Write one value, after checking it against the schema
    Put {
        /// The name
        name: String,
        /// The value, as text
        value: String,
        /// Refuse (exit 5) if anything under the prefix changed after this revision
        #[arg(long, value_name = "REV")]
        expect_rev: Option<i64>,
    },
    /// Write every value of a .env or JSON file in one etcd transaction
    ///
    /// A .env file holds NAME=value lines, NAME being the env var (LOG_LEVEL) or the
    /// name (log_level); a JSON file is an object of names to values. Every value is
    /// checked against the schema first; nothing is written when one is rejected.
    Import {
        /// The file (.env or .json)
        file: PathBuf,
        /// Show what would change, and write nothing
        #[arg(long)]
        dry_run: bool,
        /// Write in transactions of at most N values instead of one, for imports larger
        /// than etcd takes at once: every value is checked first, then the writes are not
        /// atomic; if it stops midway, it says what was written
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..), conflicts_with = "expect_rev")]
        batch: Option<u16>,
        /// Refuse (exit 5) if anything under the prefix changed after this revision
        #[arg(long, value_name = "REV")]
        expect_rev: Option<i64>,
    },
    /// The values a name had, newest first, with the revision of each change
    History {
        /// The name
        name: String,
        /// Show at most this many changes
        #[arg(long, value_name = "N", default_value_t = 20)]
        limit: usize,
    },
    /// What changed under the prefix between two revisions: added, changed, removed
    Diff {
        /// The earlier revision
        #[arg(long, value_name = "REV")]
        from_rev: i64,
        /// The later revision (default: now)
        #[arg(long, value_name = "REV")]
        to_rev: Option<i64>,
    },
    /// Make the prefix what it was at a revision, in one guarded transaction
    ///
    /// Every key whose value differs from the one it had then is put back (or deleted if
    /// it did not exist then). The transaction is refused, writing nothing, if a key it
    /// touches was written after this command read it.
    Rollback {
        /// The revision to go back to
        #[arg(long, value_name = "REV")]
        to_rev: i64,
        /// Show what would change, and write nothing
        #[arg(long)]
        dry_run: bool,
        /// Refuse (exit 5) if anything under the prefix changed after this revision
        #[arg(long, value_name = "REV")]
        expect_rev: Option<i64>,
    },
    /// Print the values in a form `import` reads back
    Export {
        /// env (NAME=value with env var names) or json (an object of names)
        #[arg(long, value_enum, default_value_t = ExportFormat::Env)]
        format: ExportFormat,
    },
    /// Check what etcd holds against the schema: exit 0 when valid, 1 with every problem
    Check,
    /// Print the Markdown documentation table of the schema
    Doc,
    /// Connect and report health as the library does (exit 1 unless synced)
    Health {
        /// table or json
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Staged rollouts: changes some instances serve before all do (see the README's
    /// "Fleet and rollouts")
    Rollout {
        #[command(subcommand)]
        action: rollout::Action,
    },
    /// One line per instance that announces itself on the prefix (EtcdSettings__Instance):
    /// the revision it holds, how far behind it is, its state, the names it rejects.
    /// Exit 1 when one is behind or rejects a value
    Status {
        /// table or json
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// Wait (up to --timeout) until every live instance holds this revision (of a write
        /// to the prefix, as `put` prints it) or a later one; exit 1 naming those that do not
        #[arg(long, value_name = "REVISION")]
        wait_rev: Option<i64>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
    Env,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExportFormat {
    Env,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start: {error}");
            return ExitCode::from(exit::INPUT);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        // The reader went away (`| head`): nothing more to say, to no one.
        Err(error) if closed_pipe(&error) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::from(exit_code(&error))
        }
    }
}

fn closed_pipe(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The exit code for an error, from the library error inside it.
fn exit_code(error: &anyhow::Error) -> u8 {
    use etcd_dynamic_config::Error;
    match error.downcast_ref::<Error>() {
        Some(Error::Unavailable { .. } | Error::Refused { .. } | Error::StartTimeout { .. }) => {
            exit::ETCD
        }
        Some(Error::Missing(_)) => exit::PROBLEMS,
        Some(Error::Conflict { .. }) => exit::CONFLICT,
        _ => exit::INPUT,
    }
}

/// What every command needs: settings, schema, prefix, output style.
struct Context {
    builder: EtcdSettingsBuilder,
    schema: Schema,
    prefix: Option<String>,
    audit: Option<Audit>,
    masking: Masking,
    style: Style,
    /// `--timeout`: how long etcd has to answer, and `status --wait-rev` waits.
    timeout: Duration,
}

impl Context {
    fn new(cli: &Cli) -> Result<Self> {
        // The CLI reads a configuration; it is not one of its instances.
        let mut builder = EtcdSettingsBuilder::from_env()?
            .start_timeout(cli.timeout)
            .fail_fast(true)
            .no_announce();
        if let Some(endpoints) = &cli.endpoints {
            builder = builder.endpoints(endpoints);
        }
        if let Some(user) = &cli.user {
            let password = std::env::var("EtcdSettings__Password").unwrap_or_default();
            builder = builder.user(user, password);
        }
        if let Some(ca) = &cli.ca_cert {
            builder = builder.ca_cert_path(ca);
        }
        if let (Some(cert), Some(key)) = (&cli.client_cert, &cli.client_key) {
            builder = builder.client_identity(cert, key);
        }
        let schema = match &cli.schema {
            Some(path) => Schema::from_toml_file(path)?,
            // At the ControlUnit prefix, the ControlUnit schema (its secrets masked);
            // elsewhere every key, names that look secret masked.
            None if cli.prefix.is_none() && {
                let prefix = builder.clone().build()?.prefix();
                prefix == DEFAULT_ROOT_KEY || prefix == format!("/dev{DEFAULT_ROOT_KEY}")
            } =>
            {
                Schema::control_unit()
            }
            None => Schema::auto_discover(),
        };
        Ok(Self {
            timeout: cli.timeout,
            builder,
            schema,
            prefix: cli.prefix.clone(),
            audit: cli.audit.then(|| Audit {
                author: cli.author.clone().unwrap_or_else(os_user),
                reason: cli.reason.clone(),
            }),
            masking: Masking {
                show_secrets: cli.show_secrets,
            },
            style: Style::detect(),
        })
    }

    fn settings(&self) -> Result<etcd_dynamic_config::EtcdSettings> {
        Ok(self.builder.clone().build()?)
    }

    /// The prefix, by the library's one rule: `--prefix`, then `EtcdSettings__RootKey`,
    /// then the schema's, then the default.
    fn prefix(&self) -> Result<String> {
        Ok(self
            .settings()?
            .resolve_prefix(self.prefix.as_deref(), self.schema.prefix())?)
    }

    fn client(&self) -> Result<EtcdClient> {
        let client = EtcdClient::with_env(
            self.settings()?,
            self.schema.clone(),
            Arc::new(|name: &str| std::env::var(name).ok()),
        )?;
        let client = match &self.prefix {
            Some(prefix) => client.with_prefix(prefix)?,
            None => client,
        };
        Ok(match &self.audit {
            Some(audit) => client.with_audit(audit.clone()),
            None => client,
        })
    }

    fn config(&self) -> Result<EtcdConfig> {
        let mut builder = EtcdConfig::builder()
            .settings(self.settings()?)
            .schema(self.schema.clone());
        if let Some(prefix) = &self.prefix {
            builder = builder.prefix(prefix);
        }
        Ok(builder.build()?)
    }

    async fn load(&self) -> Result<Loaded> {
        Ok(self.client()?.load().await?)
    }
}

async fn run(cli: Cli) -> Result<u8> {
    let context = Context::new(&cli)?;
    match cli.command {
        Command::Get { name } => get(&context, &name).await,
        Command::Dump { format } => dump(&context, format).await,
        Command::Watch { max_changes } => watch(&context, max_changes).await,
        Command::Put {
            name,
            value,
            expect_rev,
        } => put(&context, &[(name, value)], expect_rev).await,
        Command::Import {
            file,
            dry_run,
            batch,
            expect_rev,
        } => import(&context, &file, dry_run, batch, expect_rev).await,
        Command::History { name, limit } => history(&context, &name, limit).await,
        Command::Diff { from_rev, to_rev } => diff(&context, from_rev, to_rev).await,
        Command::Rollback {
            to_rev,
            dry_run,
            expect_rev,
        } => rollback(&context, to_rev, dry_run, expect_rev).await,
        Command::Export { format } => export(&context, format).await,
        Command::Check => check(&context).await,
        Command::Doc => {
            let prefix = context.prefix()?;
            out!("{}", context.schema.markdown_table(&prefix));
            Ok(0)
        }
        Command::Health { format } => health(&context, format).await,
        Command::Status { format, wait_rev } => status(&context, format, wait_rev).await,
        Command::Rollout { action } => rollout::run(&context, action).await,
    }
}

async fn get(context: &Context, name: &str) -> Result<u8> {
    let loaded = context.load().await?;
    let Some(entry) = loaded.snapshot.entry(name) else {
        eprintln!("error: {name} has no value under {}", context.prefix()?);
        return Ok(exit::PROBLEMS);
    };
    outln!("{}", output::printable(&context.masking.text(&entry)));
    Ok(0)
}

async fn dump(context: &Context, format: Format) -> Result<u8> {
    let loaded = context.load().await?;
    let entries = output::sorted(&loaded.snapshot);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        Format::Table => {
            // Measured without making the cells, then written row by row.
            let mut widths = [0; 3];
            for (name, entry) in &entries {
                let row = [
                    output::shown_width(name),
                    output::shown_width(context.masking.shown(entry)),
                    output::shown_width(entry.source()),
                ];
                for (width, cell) in widths.iter_mut().zip(row) {
                    *width = (*width).max(cell);
                }
            }
            let mut table =
                context
                    .style
                    .start_table(&mut out, &["NAME", "VALUE", "SOURCE"], widths)?;
            for (name, entry) in &entries {
                table.row([name, &context.masking.shown(entry), &entry.source()])?;
            }
            writeln!(out, "revision {}", loaded.revision)?;
        }
        Format::Json => {
            let document = output::DumpDocument {
                prefix: context.prefix()?,
                problems: &loaded.problems,
                revision: loaded.revision,
                values: output::Values {
                    entries: &entries,
                    masking: context.masking,
                },
            };
            serde_json::to_writer_pretty(&mut out, &document)?;
            writeln!(out)?;
        }
        Format::Env => write_env(&mut out, context, &entries)?,
    }
    out.flush()?;
    drop(entries);
    exiting(loaded);
    Ok(0)
}

/// Lets go of a large configuration read once, without freeing it piece by piece: the
/// process ends right after (at 100,000 keys freeing took a quarter of `dump`'s time).
fn exiting(loaded: Loaded) {
    std::mem::forget(loaded);
}

/// `NAME=value` lines (env var names), written as they are made.
fn write_env(
    out: &mut impl std::io::Write,
    context: &Context,
    entries: &[(&str, etcd_dynamic_config::Entry<'_>)],
) -> std::io::Result<()> {
    for (name, entry) in entries {
        writeln!(
            out,
            "{}={}",
            context.schema.env_var(name),
            output::env_quote(&context.masking.text(entry))
        )?;
    }
    Ok(())
}

async fn export(context: &Context, format: ExportFormat) -> Result<u8> {
    let loaded = context.load().await?;
    let entries = output::sorted(&loaded.snapshot);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    match format {
        ExportFormat::Env => write_env(&mut out, context, &entries)?,
        ExportFormat::Json => {
            let values = output::Texts {
                entries: &entries,
                masking: context.masking,
            };
            serde_json::to_writer_pretty(&mut out, &values)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    drop(entries);
    exiting(loaded);
    Ok(0)
}

async fn put(
    context: &Context,
    values: &[(String, String)],
    expect_rev: Option<i64>,
) -> Result<u8> {
    refuse_masked(values)?;
    let client = context.client()?;
    let revision = match expect_rev {
        Some(expected) => client.put_values_expecting(values, &[], expected).await?,
        None => client.put_values(values, &[]).await?,
    };
    outln!("wrote {} value(s) at revision {revision}", values.len());
    Ok(0)
}

async fn import(
    context: &Context,
    file: &std::path::Path,
    dry_run: bool,
    batch: Option<u16>,
    expect_rev: Option<i64>,
) -> Result<u8> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let incoming = parse_import(context, file, &text)?;
    let loaded = context.load().await?;
    let mut changes = Vec::new();
    let mut unchanged = 0;
    for (name, value) in &incoming {
        match loaded.snapshot.entry(name) {
            Some(entry) if entry.value().to_string() == *value => unchanged += 1,
            Some(entry) => changes.push((
                name.clone(),
                Some(context.masking.text(&entry)),
                value.clone(),
            )),
            None => changes.push((name.clone(), None, value.clone())),
        }
    }
    for (name, old, new) in &changes {
        let secret = context.schema.is_secret(name) && !context.masking.show_secrets;
        let new = if secret {
            output::MASK.to_owned()
        } else {
            new.clone()
        };
        let (name, new) = (output::printable(name), output::printable(&new));
        match old {
            Some(old) => {
                let old = output::printable(old);
                outln!("{} {name}: {old} -> {new}", context.style.changed("~"));
            }
            None => outln!("{} {name} = {new}", context.style.added("+")),
        }
    }
    outln!("{} to change, {unchanged} unchanged", changes.len());
    if dry_run || changes.is_empty() {
        if dry_run {
            // Check the values all the same, so a dry run tells what a real run would.
            for (name, _, value) in &changes {
                context
                    .schema
                    .coerce(name, value.as_bytes())
                    .map_err(|reason| anyhow::anyhow!("{name}: {reason}"))
                    .map_err(|error| error.context("the import would be rejected"))?;
            }
            outln!("dry run: nothing written");
        }
        return Ok(0);
    }
    let writes: Vec<(String, String)> = changes
        .into_iter()
        .map(|(name, _, value)| (name, value))
        .collect();
    match batch {
        None => put(context, &writes, expect_rev).await.map_err(|error| {
            if matches!(
                error.downcast_ref::<etcd_dynamic_config::Error>(),
                Some(etcd_dynamic_config::Error::TooLarge { .. })
            ) {
                error.context(
                    "split the file, or import with --batch N (in several transactions, not atomic)",
                )
            } else {
                error
            }
        }),
        Some(size) => put_in_batches(context, &writes, usize::from(size)).await,
    }
}

/// A masked export cannot be imported by mistake.
fn refuse_masked(writes: &[(String, String)]) -> Result<()> {
    if let Some((name, _)) = writes.iter().find(|(_, value)| value == output::MASK) {
        bail!(
            "{name}: the value is the secret mask {}; export with --show-secrets to keep secrets",
            output::MASK
        );
    }
    Ok(())
}

/// Writes `writes` in transactions of at most `size`; says what was written if one fails.
async fn put_in_batches(context: &Context, writes: &[(String, String)], size: usize) -> Result<u8> {
    refuse_masked(writes)?;
    let client = context.client()?;
    let batches = writes.len().div_ceil(size);
    let mut written = 0;
    let mut index = 0;
    let result = client
        .put_values_batched(writes, size, |count, revision| {
            written += count;
            index += 1;
            // As it goes; a closed output shows at the summary line below.
            let _ = writeln!(
                std::io::stdout().lock(),
                "wrote batch {index}/{batches}: {count} value(s) at revision {revision}"
            );
        })
        .await;
    if let Err(error) = result {
        let rest = &writes[written..];
        // The first few names; a file of 100,000 must not print them all.
        let mut named: Vec<&str> = rest
            .iter()
            .take(SHOWN_NAMES)
            .map(|(name, _)| name.as_str())
            .collect();
        let more = format!("and {} more", rest.len().saturating_sub(SHOWN_NAMES));
        if rest.len() > SHOWN_NAMES {
            named.push(&more);
        }
        return Err(anyhow::Error::new(error).context(format!(
            "stopped at batch {}/{batches}: {written} value(s) written before it, {} not written: {}",
            index + 1,
            rest.len(),
            output::printable(&named.join(", "))
        )));
    }
    outln!("wrote {written} value(s) in {batches} transaction(s)");
    Ok(0)
}

/// How many names an error lists before it counts the rest.
const SHOWN_NAMES: usize = 10;

/// Name → value from a .env or JSON file.
fn parse_import(
    context: &Context,
    file: &std::path::Path,
    text: &str,
) -> Result<BTreeMap<String, String>> {
    Ok(parse_changes(context, file, text)?
        .into_iter()
        .map(|(name, value)| (name, value.unwrap_or_else(|| "null".to_owned())))
        .collect())
}

/// The names and values of a .env or JSON file; in JSON, `null` is `None`.
fn parse_changes(
    context: &Context,
    file: &std::path::Path,
    text: &str,
) -> Result<BTreeMap<String, Option<String>>> {
    let is_json =
        file.extension().is_some_and(|ext| ext == "json") || text.trim_start().starts_with('{');
    if is_json {
        let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
            .with_context(|| {
                format!("{} is not a JSON object of names to values", file.display())
            })?;
        return Ok(object
            .into_iter()
            .map(|(name, value)| {
                let text = match value {
                    serde_json::Value::Null => None,
                    serde_json::Value::String(text) => Some(text),
                    other => Some(other.to_string()),
                };
                (name, text)
            })
            .collect());
    }
    let by_env: BTreeMap<String, String> = context
        .schema
        .names()
        .map(|spec| (context.schema.env_var(spec.name()), spec.name().to_owned()))
        .collect();
    let mut values = BTreeMap::new();
    // dotenvy reads what `export` writes: quotes, escapes, multi-line values, comments.
    for pair in dotenvy::from_read_iter(text.as_bytes()) {
        let (key, value) = pair.map_err(|error| {
            anyhow::anyhow!(
                "{} is not a .env file of NAME=value lines: {error}",
                file.display()
            )
        })?;
        let key = key.as_str();
        let name = by_env.get(key).cloned().unwrap_or_else(|| {
            if key.chars().any(char::is_lowercase) {
                key.to_owned()
            } else {
                key.to_lowercase().replace("__", ".")
            }
        });
        values.insert(name, Some(value));
    }
    Ok(values)
}

/// A value as shown to people: masked when secret, control characters escaped.
fn shown(context: &Context, name: &str, value: Option<&str>) -> String {
    match value {
        None => "(absent)".to_owned(),
        Some(_) if context.schema.is_secret(name) && !context.masking.show_secrets => {
            output::MASK.to_owned()
        }
        Some(value) => output::printable(value).into_owned(),
    }
}

async fn history(context: &Context, name: &str, limit: usize) -> Result<u8> {
    let history = context.client()?.history(name, limit).await?;
    outln!(
        "{} (etcd key {}), newest first, at revision {}:",
        output::printable(name),
        output::printable(&history.key),
        history.head
    );
    for change in &history.changes {
        let value = match &change.value {
            None => "(deleted)".to_owned(),
            Some(value) => shown(context, name, Some(value)),
        };
        // Written before what etcd keeps: the range still holds it as the value now.
        let now = if history.kept_from.is_some_and(|kept| change.revision < kept) {
            " (the value now)"
        } else {
            ""
        };
        outln!("rev {:<8} {value}{now}", change.revision);
    }
    if history.changes.is_empty() {
        outln!("(no writes in etcd's history)");
    }
    if let Some(kept_from) = history.kept_from {
        outln!(
            "etcd keeps history from revision {kept_from} on: earlier values were compacted away"
        );
    }
    let trail = context.client()?.audit_trail().await?;
    let writes: Vec<_> = trail
        .iter()
        .rev()
        .filter_map(|record| {
            let change = record
                .changes
                .iter()
                .find(|change| change.key == history.key)?;
            Some((record, change))
        })
        .take(limit)
        .collect();
    if !writes.is_empty() {
        outln!("audit trail, newest first:");
    }
    for (record, change) in writes {
        let value = |value: &Option<String>| match value {
            None => "(absent)".to_owned(),
            Some(value) => shown(context, name, Some(value)),
        };
        let reason = record
            .reason
            .as_deref()
            .map(|reason| format!(": {}", output::printable(reason)))
            .unwrap_or_default();
        outln!(
            "rev {:<8} {} -> {}  by {} at {} ({}){reason}",
            record.revision,
            value(&change.old),
            value(&change.new),
            output::printable(&record.author),
            record.at,
            output::printable(&record.action),
        );
    }
    Ok(0)
}

async fn diff(context: &Context, from_rev: i64, to_rev: Option<i64>) -> Result<u8> {
    let client = context.client()?;
    let from = client.load_at(from_rev).await?;
    let to = match to_rev {
        Some(revision) => client.load_at(revision).await?,
        None => client.load().await?,
    };
    let etcd_values = |loaded: &Loaded| -> BTreeMap<String, String> {
        loaded
            .snapshot
            .iter()
            .filter(|(_, entry)| matches!(entry.source(), etcd_dynamic_config::Source::Etcd { .. }))
            .map(|(name, entry)| (name.to_owned(), entry.value().to_string()))
            .collect()
    };
    let (before, after) = (etcd_values(&from), etcd_values(&to));
    outln!(
        "changes from revision {} to {}:",
        from.revision,
        to.revision
    );
    let mut changes = 0;
    let names: std::collections::BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    for name in names {
        let (old, new) = (before.get(name), after.get(name));
        if old == new {
            continue;
        }
        changes += 1;
        let shown_name = output::printable(name);
        match (old, new) {
            (None, Some(new)) => outln!(
                "{} {shown_name} = {}",
                context.style.added("+"),
                shown(context, name, Some(new))
            ),
            (Some(old), None) => outln!(
                "{} {shown_name} (was {})",
                context.style.error("-"),
                shown(context, name, Some(old))
            ),
            _ => outln!(
                "{} {shown_name}: {} -> {}",
                context.style.changed("~"),
                shown(context, name, old.map(String::as_str)),
                shown(context, name, new.map(String::as_str))
            ),
        }
    }
    outln!("{changes} name(s) changed");
    Ok(0)
}

async fn rollback(
    context: &Context,
    to_rev: i64,
    dry_run: bool,
    expect_rev: Option<i64>,
) -> Result<u8> {
    let client = context.client()?;
    let plan = client.plan_rollback(to_rev).await?;
    let name_of = |key: &str| client.name_of_key(key).unwrap_or_else(|| key.to_owned());
    let rollouts = format!("{}{}", client.prefix(), etcd_dynamic_config::rollout::DIR);
    for (key, value) in &plan.puts {
        let name = name_of(key);
        // A rollout's document may hold secret values: never shown.
        let value = if key.starts_with(&rollouts) {
            "(a rollout document)".to_owned()
        } else {
            shown(context, &name, Some(value))
        };
        outln!(
            "{} {} ({}) = {value}",
            context.style.changed("~"),
            output::printable(&name),
            output::printable(key),
        );
    }
    for key in &plan.deletes {
        outln!(
            "{} {} ({}) deleted",
            context.style.error("-"),
            output::printable(&name_of(key)),
            output::printable(key)
        );
    }
    outln!(
        "{} to put back, {} to delete, to make the prefix what it was at revision {to_rev}",
        plan.puts.len(),
        plan.deletes.len()
    );
    if dry_run || plan.is_empty() {
        if dry_run {
            outln!("dry run: nothing written");
        }
        return Ok(0);
    }
    let revision = client.rollback(&plan, expect_rev).await?;
    outln!("rolled back to revision {to_rev}: wrote revision {revision}");
    Ok(0)
}

async fn check(context: &Context) -> Result<u8> {
    let loaded = context.load().await?;
    if loaded.problems.is_empty() {
        outln!(
            "{} {} names under {} at revision {} are valid",
            context.style.ok("ok"),
            loaded.snapshot.len(),
            context.prefix()?,
            loaded.revision
        );
        return Ok(0);
    }
    for problem in &loaded.problems {
        let problem = output::printable(&problem.to_string()).into_owned();
        outln!("{} {problem}", context.style.error("problem"));
    }
    outln!(
        "{} problem(s) at revision {}",
        loaded.problems.len(),
        loaded.revision
    );
    Ok(exit::PROBLEMS)
}

async fn health(context: &Context, format: Format) -> Result<u8> {
    let config = context.config()?;
    config.start().await?;
    let health = config.health();
    config.stop().await;
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&health)?),
        _ => {
            let rows: Vec<[String; 2]> = [
                ("state", format!("{:?}", health.state).to_lowercase()),
                ("prefix", health.prefix.clone()),
                ("revision", health.revision.to_string()),
                ("endpoint", health.endpoint.clone().unwrap_or_default()),
                ("connected", health.connected.to_string()),
                ("invalid names", health.invalid.len().to_string()),
            ]
            .into_iter()
            .map(|(key, value)| [key.to_owned(), value])
            .collect();
            out!("{}", context.style.table(&["", ""], &rows));
            for invalid in &health.invalid {
                outln!(
                    "{} {}: {} ({})",
                    context.style.error("invalid"),
                    invalid.name,
                    invalid.reason,
                    invalid.source
                );
            }
        }
    }
    // health() above stopped the engine; what matters is whether it had synced.
    Ok(if health.is_synced() {
        0
    } else {
        exit::PROBLEMS
    })
}

async fn status(context: &Context, format: Format, wait_rev: Option<i64>) -> Result<u8> {
    use etcd_dynamic_config::announce::InstanceRecord;

    let client = context.client()?;
    if let Some(revision) = wait_rev {
        let deadline = tokio::time::Instant::now() + context.timeout;
        loop {
            let fleet = client.fleet().await?;
            let behind: Vec<&InstanceRecord> = fleet
                .instances
                .iter()
                .filter(|record| record.holds() < revision)
                .collect();
            if behind.is_empty() {
                outln!(
                    "{} instance(s) hold revision {revision} or later",
                    fleet.instances.len()
                );
                return Ok(0);
            }
            if tokio::time::Instant::now() >= deadline {
                let names: Vec<String> = behind
                    .iter()
                    .map(|record| format!("{} (at {})", record.id, record.holds()))
                    .collect();
                eprintln!(
                    "error: after {} s, {} of {} instance(s) do not hold revision {revision}: {}",
                    context.timeout.as_secs_f64(),
                    behind.len(),
                    fleet.instances.len(),
                    names.join(", ")
                );
                return Ok(exit::PROBLEMS);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let fleet = client.fleet().await?;
    let behind = |record: &InstanceRecord| (fleet.last_write - record.holds()).max(0);
    let troubled = fleet
        .instances
        .iter()
        .any(|record| behind(record) > 0 || !record.rejected.is_empty());
    match format {
        Format::Json => {
            let instances: Vec<serde_json::Value> = fleet
                .instances
                .iter()
                .map(|record| {
                    let mut value = serde_json::to_value(record).expect("a record serializes");
                    value["behind"] = behind(record).into();
                    value
                })
                .collect();
            let document = serde_json::json!({
                "head": fleet.head,
                "last_write": fleet.last_write,
                "instances": instances,
            });
            outln!("{}", serde_json::to_string_pretty(&document)?);
        }
        _ if fleet.instances.is_empty() => {
            outln!("no instance announces itself on {}", client.prefix());
        }
        _ => {
            let rows: Vec<[String; 6]> = fleet
                .instances
                .iter()
                .map(|record| {
                    let labels: Vec<String> = record
                        .labels
                        .iter()
                        .map(|(key, value)| format!("{key}={value}"))
                        .collect();
                    [
                        output::printable(&record.id).into_owned(),
                        output::printable(&labels.join(",")).into_owned(),
                        record.holds().to_string(),
                        behind(record).to_string(),
                        serde_json::to_value(record.state)
                            .ok()
                            .and_then(|state| state.as_str().map(str::to_owned))
                            .unwrap_or_default(),
                        record.rejected.join(","),
                    ]
                })
                .collect();
            out!(
                "{}",
                context.style.table(
                    &[
                        "instance", "labels", "revision", "behind", "state", "rejected"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(if troubled { exit::PROBLEMS } else { 0 })
}

async fn watch(context: &Context, max_changes: Option<usize>) -> Result<u8> {
    use tokio_stream::StreamExt as _;

    let config = context.config()?;
    let report = config.start().await?;
    outln!(
        "watching {} from revision {}",
        config.prefix(),
        report.revision
    );
    let mut changes = config.changes();
    let mut seen = 0;
    loop {
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else { break };
                for item in &change.changes {
                    let show = |value: &Option<etcd_dynamic_config::Value>| match value {
                        None => "(absent)".to_owned(),
                        Some(_) if item.secret && !context.masking.show_secrets => output::MASK.to_owned(),
                        Some(value) => output::printable(&value.to_string()).into_owned(),
                    };
                    let name = output::printable(&item.name);
                    outln!("rev {}  {name}  {} -> {}", change.revision, show(&item.old), show(&item.new));
                    seen += 1;
                }
                if max_changes.is_some_and(|max| seen >= max) {
                    break;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    config.stop().await;
    Ok(0)
}
