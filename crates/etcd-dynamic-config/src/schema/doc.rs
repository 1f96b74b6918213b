//! The Markdown table of a schema, as the Python README asks users to write by hand.

use super::Schema;

impl Schema {
    /// The documentation table of every declared name under `prefix`: etcd key, env var,
    /// kind, default and description. Secret names are marked and their defaults hidden.
    pub fn markdown_table(&self, prefix: &str) -> String {
        let rows: Vec<[String; 5]> = self
            .names()
            .map(|spec| {
                let name = spec.name();
                let key = self
                    .key_for(prefix, name)
                    .map_or_else(|| "-".to_owned(), |key| format!("`{key}`"));
                let mut kind = self.kind_of(name).to_string();
                if spec.is_secret() {
                    kind.push_str(", secret");
                }
                if spec.is_required() {
                    kind.push_str(", required");
                }
                let default = match spec.default_value() {
                    Some(_) if spec.is_secret() => "(hidden)".to_owned(),
                    Some(value) => value.to_string(),
                    None => "-".to_owned(),
                };
                let description = spec.description().unwrap_or("-").to_owned();
                [
                    key,
                    format!("`{}`", self.env_var(name)),
                    kind,
                    default,
                    description,
                ]
            })
            .collect();
        let header = [
            "Etcd Key",
            "Environment Variable",
            "Kind",
            "Default",
            "Description",
        ];
        let widths: Vec<usize> = (0..header.len())
            .map(|column| {
                rows.iter()
                    .map(|row| row[column].chars().count())
                    .chain([header[column].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[&str]| {
            let cells: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            format!("| {} |\n", cells.join(" | "))
        };
        let mut table = line(&header);
        let rule: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
        table.push_str(&line(&rule.iter().map(String::as_str).collect::<Vec<_>>()));
        for row in &rows {
            table.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
        }
        table
    }
}
