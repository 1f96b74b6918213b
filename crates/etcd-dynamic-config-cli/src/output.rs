//! How values are shown: secrets masked, tables aligned, colour only on a terminal.

use std::io::IsTerminal as _;

use etcd_dynamic_config::{Entry, Value};

/// What stands for a secret value.
pub(crate) const MASK: &str = "********";

/// Whether secret values are shown.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Masking {
    pub(crate) show_secrets: bool,
}

impl Masking {
    fn hides(self, entry: &Entry) -> bool {
        entry.is_secret() && !self.show_secrets
    }

    /// The value's text, or the mask.
    pub(crate) fn text(self, entry: &Entry) -> String {
        if self.hides(entry) {
            MASK.to_owned()
        } else {
            entry.value().to_string()
        }
    }

    /// The value as typed JSON, or the mask.
    pub(crate) fn json(self, entry: &Entry) -> serde_json::Value {
        if self.hides(entry) {
            return MASK.into();
        }
        match entry.value() {
            Value::Bool(flag) => (*flag).into(),
            Value::Integer(number) => (*number).into(),
            Value::Float(number) => (*number).into(),
            Value::List(items) => items.iter().map(|item| item.to_string()).collect(),
            Value::Json(json) => (**json).clone(),
            other => other.to_string().into(),
        }
    }
}

/// `text` safe to print in a human format: control characters (line breaks, carriage
/// returns, tabs, escape sequences, C1 controls) and the Unicode characters that reorder
/// or hide text (bidirectional overrides and isolates, zero-width marks) are shown as
/// Rust-style escapes (`\n`, `\u{1b}`), so a value cannot add table rows, hide text
/// or drive the terminal. `export` and `dump --format json` keep the exact text.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    let hidden = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    if !text.chars().any(hidden) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if hidden(c) {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    std::borrow::Cow::Owned(shown)
}

/// Terminal styling: colour only when stdout is a terminal and `NO_COLOR` is unset.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    colour: bool,
}

impl Style {
    pub(crate) fn detect() -> Self {
        Self {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub(crate) fn ok(self, text: &str) -> String {
        self.paint("32", text)
    }

    pub(crate) fn error(self, text: &str) -> String {
        self.paint("31", text)
    }

    pub(crate) fn added(self, text: &str) -> String {
        self.paint("32", text)
    }

    pub(crate) fn changed(self, text: &str) -> String {
        self.paint("33", text)
    }

    /// Rows under a header, columns padded to the widest cell (an empty header row is
    /// left out).
    pub(crate) fn table<const N: usize>(self, header: &[&str; N], rows: &[[String; N]]) -> String {
        let mut out = Vec::new();
        self.write_table(&mut out, header, || rows.iter().cloned())
            .expect("writing to memory");
        String::from_utf8(out).expect("the cells are text")
    }

    /// [`table`](Self::table), written to `out` as it goes: `rows` is called twice, to
    /// measure the columns and then to write them, so no row is held.
    pub(crate) fn write_table<const N: usize, I: Iterator<Item = [String; N]>>(
        self,
        out: &mut impl std::io::Write,
        header: &[&str; N],
        rows: impl Fn() -> I,
    ) -> std::io::Result<()> {
        let mut widths = header.map(str::len);
        for row in rows() {
            for (width, cell) in widths.iter_mut().zip(&row) {
                *width = (*width).max(printable(cell).chars().count());
            }
        }
        let line = |cells: [&str; N]| {
            let mut text = String::new();
            for (column, cell) in cells.iter().enumerate() {
                text.push_str(cell);
                if column + 1 < N {
                    let pad = widths[column] - cell.chars().count();
                    text.push_str(&" ".repeat(pad + 2));
                }
            }
            text.truncate(text.trim_end().len());
            text
        };
        if header.iter().any(|cell| !cell.is_empty()) {
            writeln!(out, "{}", self.paint("1", &line(*header)))?;
        }
        for row in rows() {
            let row = row.map(|cell| printable(&cell).into_owned());
            writeln!(out, "{}", line(row.each_ref().map(String::as_str)))?;
        }
        Ok(())
    }
}

/// `dump --format json`, serialized as it is written: no document is built in memory.
#[derive(serde::Serialize)]
pub(crate) struct DumpDocument<'a> {
    pub(crate) prefix: String,
    pub(crate) problems: &'a [String],
    pub(crate) revision: i64,
    pub(crate) values: Values<'a>,
}

/// Each name (in order) with its value, source and secrecy.
pub(crate) struct Values<'a> {
    pub(crate) names: &'a [&'a str],
    pub(crate) snapshot: &'a etcd_dynamic_config::Snapshot,
    pub(crate) masking: Masking,
}

impl serde::Serialize for Values<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Shown<'e> {
            secret: bool,
            /// Serialized as its text.
            source: &'e etcd_dynamic_config::Source,
            value: serde_json::Value,
        }
        serializer.collect_map(self.names.iter().map(|name| {
            let entry = self.snapshot.entry(name).expect("listed name");
            let shown = Shown {
                secret: entry.is_secret(),
                source: entry.source(),
                value: self.masking.json(entry),
            };
            (name, shown)
        }))
    }
}

/// `export --format json`: each name (in order) with its value's text.
pub(crate) struct Texts<'a> {
    pub(crate) names: &'a [&'a str],
    pub(crate) snapshot: &'a etcd_dynamic_config::Snapshot,
    pub(crate) masking: Masking,
}

impl serde::Serialize for Texts<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.names.iter().map(|name| {
            let entry = self.snapshot.entry(name).expect("listed name");
            (name, self.masking.text(entry))
        }))
    }
}

/// A value as a .env line holds it, read back exactly by `import` (dotenvy's parser):
/// bare when it is plain, else double-quoted with `\\`, `"`, `$` and line feeds escaped.
/// Other characters, control characters included, are written as they are: the file
/// holds the value's exact text.
pub(crate) fn env_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,@%+".contains(c));
    if plain {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        match c {
            '\\' | '"' | '$' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '\n' => quoted.push_str("\\n"),
            _ => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What dotenvy reads from one `NAME=<quoted>` line.
    fn read_back(quoted: &str) -> String {
        let line = format!("NAME={quoted}\n");
        let mut pairs = dotenvy::from_read_iter(line.as_bytes());
        let (name, value) = pairs.next().expect("one pair").expect("parses");
        assert_eq!(name, "NAME");
        assert!(pairs.next().is_none(), "one line, one pair: {quoted:?}");
        value
    }

    #[test]
    fn quoting_round_trips() {
        for value in [
            "plain",
            "with space",
            "it's",
            "",
            "a=b",
            "$HOME",
            "${HOME}",
            "x\"y",
            "a\\",
            "\\n",
            "l1\nl2\r\n",
            "# not a comment",
            "x # y",
            "\u{1b}[31mred",
            "\u{0}nul",
            "tab\t",
        ] {
            assert_eq!(read_back(&env_quote(value)), value, "{value:?}");
        }
        assert_eq!(env_quote("INFO"), "INFO");
        assert_eq!(env_quote("a b"), "\"a b\"");
    }

    proptest::proptest! {
        #[test]
        fn every_value_reads_back_as_itself(value in "\\PC*|[\\x00-\\x7f]*") {
            proptest::prop_assert_eq!(read_back(&env_quote(&value)), value);
        }
    }

    #[test]
    fn control_and_hiding_characters_are_escaped() {
        assert!(matches!(
            printable("plain é"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(printable("a\nb\rc\td"), "a\\nb\\rc\\td");
        assert_eq!(printable("\u{1b}[31mred"), "\\u{1b}[31mred");
        assert_eq!(
            printable("x\u{85}y\u{202e}z\u{200b}"),
            "x\\u{85}y\\u{202e}z\\u{200b}"
        );
        let style = Style { colour: false };
        let table = style.table(
            &["NAME", "VALUE"],
            &[["n".to_owned(), "v\nfake  row".to_owned()]],
        );
        assert_eq!(table.lines().count(), 2, "{table}");
    }

    #[test]
    fn tables_align_columns() {
        let style = Style { colour: false };
        let rows = [
            ["a".to_owned(), "1".to_owned()],
            ["long_name".to_owned(), "22".to_owned()],
        ];
        assert_eq!(
            style.table(&["NAME", "VALUE"], &rows),
            "NAME       VALUE\na          1\nlong_name  22\n"
        );
    }
}
