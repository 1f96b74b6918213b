//! How values are shown: secrets masked, tables aligned, colour only on a terminal.

use std::io::IsTerminal as _;

use etcd_dynamic_config::{Entry, ValueRef};

/// What stands for a secret value.
pub(crate) const MASK: &str = "********";

/// Whether secret values are shown.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Masking {
    pub(crate) show_secrets: bool,
}

impl Masking {
    fn hides(self, entry: &Entry<'_>) -> bool {
        entry.is_secret() && !self.show_secrets
    }

    /// The value's text, or the mask.
    pub(crate) fn text(self, entry: &Entry<'_>) -> String {
        self.shown(entry).to_string()
    }

    /// The value, or the mask, to format.
    pub(crate) fn shown<'a>(self, entry: &Entry<'a>) -> Shown<'a> {
        Shown((!self.hides(entry)).then(|| entry.value()))
    }

    /// The value as typed JSON, or the mask.
    pub(crate) fn json(self, entry: &Entry<'_>) -> serde_json::Value {
        if self.hides(entry) {
            return MASK.into();
        }
        match entry.value() {
            ValueRef::Bool(flag) => flag.into(),
            ValueRef::Integer(number) => number.into(),
            ValueRef::Float(number) => number.into(),
            ValueRef::List(items) => items.iter().map(|item| item.to_string()).collect(),
            ValueRef::Json(json) => (**json).clone(),
            other => other.to_string().into(),
        }
    }
}

/// A value to format, or the mask (`None`).
pub(crate) struct Shown<'a>(Option<ValueRef<'a>>);

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(value) => value.fmt(f),
            None => f.write_str(MASK),
        }
    }
}

/// `text` safe to print in a human format: control characters (line breaks, carriage
/// returns, tabs, escape sequences, C1 controls) and the Unicode characters that reorder
/// or hide text (bidirectional overrides and isolates, zero-width marks) are shown as
/// Rust-style escapes (`\n`, `\u{1b}`), so a value cannot add table rows, hide text
/// or drive the terminal. `export` and `dump --format json` keep the exact text.
pub(crate) fn printable(text: &str) -> std::borrow::Cow<'_, str> {
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

/// Whether [`printable`] escapes `c`.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
}

/// How many characters `shown` takes once [`printable`], counted as it is formatted,
/// without making the text.
pub(crate) fn shown_width(shown: impl std::fmt::Display) -> usize {
    struct Width(usize);
    impl std::fmt::Write for Width {
        fn write_str(&mut self, text: &str) -> std::fmt::Result {
            self.0 += text
                .chars()
                .map(|c| {
                    if hidden(c) {
                        c.escape_default().count()
                    } else {
                        1
                    }
                })
                .sum::<usize>();
            Ok(())
        }
    }
    let mut width = Width(0);
    std::fmt::write(&mut width, format_args!("{shown}")).expect("counting never fails");
    width.0
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
        let mut widths = [0; N];
        for row in rows() {
            for (width, cell) in widths.iter_mut().zip(&row) {
                *width = (*width).max(shown_width(cell));
            }
        }
        let mut table = self.start_table(out, header, widths)?;
        for row in rows() {
            table.row(row.each_ref().map(|cell| cell as &dyn std::fmt::Display))?;
        }
        Ok(())
    }

    /// A table written row by row to `out`, for rows whose widest cells (as
    /// [`shown_width`] counts them) are known; the header is written now.
    pub(crate) fn start_table<'o, const N: usize, W: std::io::Write>(
        self,
        out: &'o mut W,
        header: &[&str; N],
        widths: [usize; N],
    ) -> std::io::Result<Table<'o, W, N>> {
        let mut table = Table {
            out,
            widths,
            cells: std::array::from_fn(|_| String::new()),
        };
        for (width, cell) in table.widths.iter_mut().zip(header) {
            *width = (*width).max(cell.len());
        }
        if header.iter().any(|cell| !cell.is_empty()) {
            let mut text = Vec::new();
            table.line(&mut text, header.map(str::to_owned))?;
            let text = String::from_utf8(text).expect("the header is text");
            writeln!(table.out, "{}", self.paint("1", text.trim_end()))?;
        }
        Ok(table)
    }
}

/// Rows being written under a header, cells padded to their column.
pub(crate) struct Table<'o, W, const N: usize> {
    out: &'o mut W,
    widths: [usize; N],
    /// Each cell's text, kept between rows so that a row allocates nothing.
    cells: [String; N],
}

impl<W: std::io::Write, const N: usize> Table<'_, W, N> {
    /// Writes a row, each cell [`printable`].
    pub(crate) fn row(&mut self, cells: [&dyn std::fmt::Display; N]) -> std::io::Result<()> {
        for (text, cell) in self.cells.iter_mut().zip(cells) {
            use std::fmt::Write as _;
            text.clear();
            write!(text, "{cell}").expect("formatting into a string");
            // Printable ASCII needs no look at each character.
            let plain = text.bytes().all(|b| (0x20..0x7f).contains(&b));
            if !plain && text.chars().any(hidden) {
                *text = printable(text).into_owned();
            }
        }
        write_line(self.out, &self.widths, &self.cells)
    }

    fn line(&self, out: &mut impl std::io::Write, cells: [String; N]) -> std::io::Result<()> {
        write_line(out, &self.widths, &cells)
    }
}

/// Cells padded to their column, the line's trailing blanks left out.
fn write_line<const N: usize>(
    out: &mut impl std::io::Write,
    widths: &[usize; N],
    cells: &[String; N],
) -> std::io::Result<()> {
    let Some(last) = cells.iter().rposition(|cell| !cell.trim_end().is_empty()) else {
        return writeln!(out);
    };
    // Bytes written as they are: `write!` with a width costs more than the copy.
    const BLANKS: &[u8] = &[b' '; 64];
    for (column, cell) in cells.iter().enumerate().take(last) {
        out.write_all(cell.as_bytes())?;
        let mut pad = widths[column] - cell.chars().count() + 2;
        while pad > 0 {
            let blanks = pad.min(BLANKS.len());
            out.write_all(&BLANKS[..blanks])?;
            pad -= blanks;
        }
    }
    out.write_all(cells[last].trim_end().as_bytes())?;
    out.write_all(b"\n")
}

/// `dump --format json`, serialized as it is written: no document is built in memory.
#[derive(serde::Serialize)]
pub(crate) struct DumpDocument<'a> {
    pub(crate) prefix: String,
    pub(crate) problems: &'a [String],
    pub(crate) revision: i64,
    pub(crate) values: Values<'a>,
}

/// A snapshot's names with their entries, in name order.
pub(crate) fn sorted(snapshot: &etcd_dynamic_config::Snapshot) -> Vec<(&str, Entry<'_>)> {
    let mut entries: Vec<(&str, Entry<'_>)> = snapshot.iter().collect();
    entries.sort_unstable_by_key(|(name, _)| *name);
    entries
}

/// Each name (in order) with its value, source and secrecy.
pub(crate) struct Values<'a> {
    pub(crate) entries: &'a [(&'a str, Entry<'a>)],
    pub(crate) masking: Masking,
}

impl serde::Serialize for Values<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(serde::Serialize)]
        struct Shown {
            secret: bool,
            /// Serialized as its text.
            source: etcd_dynamic_config::Source,
            value: serde_json::Value,
        }
        serializer.collect_map(self.entries.iter().map(|(name, entry)| {
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
    pub(crate) entries: &'a [(&'a str, Entry<'a>)],
    pub(crate) masking: Masking,
}

impl serde::Serialize for Texts<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.entries
                .iter()
                .map(|(name, entry)| (name, self.masking.text(entry))),
        )
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
