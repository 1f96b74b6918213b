//! The naming rules: etcd key paths → configuration names.

/// Turns one CamelCase key segment into snake_case, as the Python original does:
/// `CategorizationApiUrl` → `categorization_api_url`, `AIHttpTimeout` →
/// `ai_http_timeout`, `LogSQLLevel` → `log_sql_level`.
///
/// An underscore goes before an upper-case letter that follows a lower-case letter or a
/// digit, or that starts a capitalised word after an acronym. Existing separators are
/// kept and never doubled.
pub fn snake_case(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len() + 4);
    push_snake_case(segment, &mut out);
    out
}

/// [`snake_case`], appended to `out` (one allocation for a whole name).
fn push_snake_case(segment: &str, out: &mut String) {
    if segment.is_ascii() {
        push_snake_case_ascii(segment, out);
    } else {
        push_snake_case_chars(segment, out);
    }
}

/// [`push_snake_case`] for any text, char by char.
fn push_snake_case_chars(segment: &str, out: &mut String) {
    let mut chars = segment.chars().peekable();
    let mut prev: Option<char> = None;
    while let Some(c) = chars.next() {
        if c.is_uppercase()
            && let Some(prev) = prev
        {
            let next_is_lower = chars.peek().is_some_and(|next| next.is_lowercase());
            if prev.is_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_uppercase() && next_is_lower)
            {
                out.push('_');
            }
        }
        out.extend(c.to_lowercase());
        prev = Some(c);
    }
}

/// [`push_snake_case`] for ASCII text: what lies between upper-case letters is copied
/// as it is, a run at a time (called for every segment of every key of a list).
fn push_snake_case_ascii(segment: &str, out: &mut String) {
    let bytes = segment.as_bytes();
    let mut copied = 0;
    for (i, &c) in bytes.iter().enumerate() {
        if !c.is_ascii_uppercase() {
            continue;
        }
        out.push_str(&segment[copied..i]);
        if let Some(&prev) = i.checked_sub(1).and_then(|before| bytes.get(before)) {
            let next_is_lower = bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase);
            if prev.is_ascii_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_ascii_uppercase() && next_is_lower)
            {
                out.push('_');
            }
        }
        out.push(char::from(c.to_ascii_lowercase()));
        copied = i + 1;
    }
    out.push_str(&segment[copied..]);
}

/// The auto-discovered name of a key path relative to the prefix: each `/`-separated
/// segment in snake_case, joined with `.` (`Database/MaxPool` → `database.max_pool`).
///
/// `None` for a path with an empty segment (`a//b`, a trailing `/`), which names nothing.
pub fn name_from_path(relative: &str) -> Option<String> {
    let mut name = String::with_capacity(relative.len() + 4);
    push_name_from_path(relative, &mut name).then_some(name)
}

/// [`name_from_path`], appended to `name`; `false` (and `name` partly written) for a path
/// that names nothing.
pub(crate) fn push_name_from_path(relative: &str, name: &mut String) -> bool {
    // Called for every key of a list. `/` is found byte by byte: `str::split('/')` calls
    // `memcmp` for every match (about half of naming a key, in `perf`).
    let mut rest = relative;
    loop {
        let (segment, tail) = match rest.bytes().position(|b| b == b'/') {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        if segment.is_empty() {
            return false;
        }
        push_snake_case(segment, name);
        match tail {
            Some(tail) => {
                name.push('.');
                rest = tail;
            }
            None => return true,
        }
    }
}

/// The key segment whose snake_case is `segment`: `max_pool` → `MaxPool`. Used to show
/// (and write) the key of an auto-discovered name.
pub fn pascal_case(segment: &str) -> String {
    segment
        .split('_')
        .map(|word| {
            let mut chars = word.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// Words that make a name look secret; see [`looks_secret`].
pub const SECRET_WORDS: [&str; 10] = [
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "dsn",
    "credential",
    "credentials",
    "apikey",
    "private",
];

/// Whether a name looks secret: one of its words (split at `.` and `_`) is one of
/// [`SECRET_WORDS`], or its last word is `key` (`api_key`, `db.private_key`). Names a
/// schema does not declare are secret when they look it (see
/// [`Schema::is_secret`](crate::Schema::is_secret)).
pub fn looks_secret(name: &str) -> bool {
    // Called for every key of a list: no allocation, and bytes split faster than chars.
    let mut words = name
        .as_bytes()
        .split(|&b| b == b'.' || b == b'_')
        .filter(|word| !word.is_empty());
    let mut count = 0;
    let mut last: &[u8] = &[];
    let secret_word = words.any(|word| {
        count += 1;
        last = word;
        SECRET_WORDS
            .iter()
            .any(|secret| secret.as_bytes().eq_ignore_ascii_case(word))
    });
    secret_word || (count > 1 && last.eq_ignore_ascii_case(b"key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_look_secret() {
        for name in [
            "postgres_dsn",
            "db.password",
            "api_key",
            "github.token",
            "client_secret",
            "aws.credentials",
            "tls.private_key",
            "SMTP_PWD",
        ] {
            assert!(looks_secret(name), "{name}");
        }
        for name in [
            "log_level",
            "key",
            "keyboard_layout",
            "tokenizer",
            "monkey",
            "dsn_host_count_x",
        ] {
            assert_eq!(looks_secret(name), name == "dsn_host_count_x", "{name}");
        }
    }

    #[test]
    fn snake_case_follows_the_python_rules() {
        let cases = [
            ("CategorizationApiUrl", "categorization_api_url"),
            ("AIHttpTimeout", "ai_http_timeout"),
            ("AiHttpTimeoutSeconds", "ai_http_timeout_seconds"),
            ("LogSQLLevel", "log_sql_level"),
            ("LogLevel", "log_level"),
            ("PostgresDsn", "postgres_dsn"),
            ("URL", "url"),
            ("Url", "url"),
            ("already_snake", "already_snake"),
            ("Mixed_Case", "mixed_case"),
            ("V2Api", "v2_api"),
            ("Http2Enabled", "http2_enabled"),
            ("MaxPool10", "max_pool10"),
            ("X", "x"),
            ("", ""),
            ("ÄrgerWert", "ärger_wert"),
            // The same rules beyond ASCII: a digit, then an acronym before a word.
            ("Größe2Wert", "größe2_wert"),
            ("ÄÖÜWert", "äöü_wert"),
        ];
        for (segment, expected) in cases {
            assert_eq!(snake_case(segment), expected, "for {segment:?}");
        }
    }

    proptest::proptest! {
        /// The ASCII path (runs between upper-case letters) says what the char path says.
        #[test]
        fn ascii_snake_case_is_the_char_rules(segment in "[A-Za-z0-9_]{0,16}") {
            let mut fast = String::from("kept.");
            push_snake_case_ascii(&segment, &mut fast);
            let mut chars = String::from("kept.");
            push_snake_case_chars(&segment, &mut chars);
            proptest::prop_assert_eq!(fast, chars);
        }

        /// Secret words are found as a plain split at `.` and `_` finds them.
        #[test]
        fn secret_names_are_the_plain_rule(
            words in proptest::collection::vec(
                "(password|Token|DSN|key|Key|apikey|private|pwd|tokens|x|log|)",
                0..5,
            ),
            separators in proptest::collection::vec("[._]", 5),
            trailing in proptest::bool::ANY,
        ) {
            let mut name = String::new();
            for (word, separator) in words.iter().zip(&separators) {
                name.push_str(word);
                name.push_str(separator);
            }
            if !trailing {
                name.pop();
            }
            let split: Vec<&str> = name.split(['.', '_']).filter(|w| !w.is_empty()).collect();
            let expected = split
                .iter()
                .any(|word| SECRET_WORDS.iter().any(|secret| secret.eq_ignore_ascii_case(word)))
                || (split.len() > 1 && split.last().is_some_and(|w| w.eq_ignore_ascii_case("key")));
            proptest::prop_assert_eq!(looks_secret(&name), expected, "{}", name);
        }
    }

    #[test]
    fn pascal_case_round_trips_through_snake_case() {
        for name in [
            "log_level",
            "max_pool",
            "categorization_api_url",
            "x",
            "v2_api",
        ] {
            let segment = pascal_case(name);
            assert_eq!(snake_case(&segment), name, "via {segment}");
        }
        assert_eq!(pascal_case("max_pool"), "MaxPool");
    }

    #[test]
    fn nested_paths_join_with_dots() {
        let cases = [
            ("LogLevel", Some("log_level")),
            ("Database/Host", Some("database.host")),
            ("Database/MaxPool", Some("database.max_pool")),
            ("API/SecretKey", Some("api.secret_key")),
            ("a//b", None),
            ("Trailing/", None),
            ("/Leading", None),
            ("/", None),
            ("", None),
            ("A/B/C", Some("a.b.c")),
            ("already_snake/v2", Some("already_snake.v2")),
            ("Straße/ÜberZeit", Some("straße.über_zeit")),
        ];
        for (path, expected) in cases {
            assert_eq!(name_from_path(path).as_deref(), expected, "for {path:?}");
        }
    }
}
