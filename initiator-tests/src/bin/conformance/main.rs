//! `conformance --reference DIR --subject DIR --table FILE [--reference-nqn NQN]
//! [--subject-nqn NQN] [--write-differences FILE]`: compares the answers two targets
//! gave `scenarios/conformance.sh` (the reference is nvmet, the subject p2ptgt) field by
//! field and prints each difference as known (with the table's reason) or unexpected.
//! Exits 1 if any difference is not in the table, or if a table row matches no
//! difference (so the table stays honest), 2 on a usage or I/O error.
//!
//! An answer directory holds, per item (one question), `ITEM.out`, `ITEM.err` and
//! `ITEM.rc` from nvme-cli (see `answers.rs` for how each item's name picks its
//! parser), and `dmesg-discover.txt`. The table is `item<TAB>field<TAB>reason`, one
//! difference per row, no wildcards; `#` starts a comment line.
//!
//! Left out by name, since they differ by design between any two targets: the vendor
//! strings and serials (`sn`, `mn`, `fr`, `frs1`), the namespace identifiers (`nguid`,
//! `eui64`, `uuid`), controller IDs (`cntlid`), ports (`trsvcid`) and the host's
//! command identifiers in the error log (`cid`). Each side's own subsystem NQN is
//! replaced by `<subsystem>` before comparing, so the rest of a `subnqn` still counts.

mod answers;
mod layout;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use answers::Answers;

/// Field names (the last component of a field path) the comparison leaves out.
const EXCLUDED: &[&str] = &["sn", "mn", "fr", "frs1", "nguid", "eui64", "uuid", "cntlid", "trsvcid", "cid"];

/// A value missing on one side.
const ABSENT: &str = "<absent>";

struct Options {
    reference: PathBuf,
    subject: PathBuf,
    table: PathBuf,
    reference_nqn: Option<String>,
    subject_nqn: Option<String>,
    write_differences: Option<PathBuf>,
}

/// One field whose values differ.
struct Difference {
    item: String,
    field: String,
    reference: String,
    subject: String,
}

/// A table row: why (item, field) may differ.
struct Row {
    line: usize,
    item: String,
    field: String,
    reason: String,
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("conformance: {error}");
            ExitCode::from(2)
        }
    }
}

fn run() -> Result<bool, String> {
    let options = parse_options(std::env::args().skip(1))?;
    let reference = Answers::load(&options.reference, options.reference_nqn.as_deref())?;
    let subject = Answers::load(&options.subject, options.subject_nqn.as_deref())?;
    let table = read_table(&options.table)?;
    let differences = compare(&reference, &subject);
    let ok = report(&differences, &table, reference.items.len());
    if let Some(path) = &options.write_differences {
        let mut text = String::from("item\tfield\tnvmet\tp2ptgt\tknown reason\n");
        for difference in &differences {
            let reason = table.iter().find(|row| matches(row, difference)).map_or("", |row| row.reason.as_str());
            let Difference { item, field, reference, subject } = difference;
            let _ = writeln!(text, "{item}\t{field}\t{reference}\t{subject}\t{reason}");
        }
        std::fs::write(path, text).map_err(|error| format!("writing {}: {error}", path.display()))?;
    }
    Ok(ok)
}

fn parse_options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut values = BTreeMap::new();
    while let Some(flag) = args.next() {
        let name = flag.strip_prefix("--").ok_or_else(|| format!("unexpected argument {flag}"))?.to_string();
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        values.insert(name, value);
    }
    let mut take = |name: &str| values.remove(name);
    let required = |value: Option<String>, name: &str| value.map(PathBuf::from).ok_or_else(|| format!("--{name} is required"));
    let options = Options {
        reference: required(take("reference"), "reference")?,
        subject: required(take("subject"), "subject")?,
        table: required(take("table"), "table")?,
        reference_nqn: take("reference-nqn"),
        subject_nqn: take("subject-nqn"),
        write_differences: take("write-differences").map(PathBuf::from),
    };
    match values.keys().next() {
        Some(unknown) => Err(format!("unknown option --{unknown}")),
        None => Ok(options),
    }
}

fn read_table(path: &PathBuf) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|error| format!("reading {}: {error}", path.display()))?;
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let mut columns = line.splitn(3, '\t');
        let (Some(item), Some(field), Some(reason)) = (columns.next(), columns.next(), columns.next()) else {
            return Err(format!("{}:{}: want item<TAB>field<TAB>reason", path.display(), index + 1));
        };
        if reason.trim().is_empty() {
            return Err(format!("{}:{}: a row needs a reason", path.display(), index + 1));
        }
        rows.push(Row { line: index + 1, item: item.into(), field: field.into(), reason: reason.trim().into() });
    }
    Ok(rows)
}

/// The last component of a field path: `record[1].subnqn` -> `subnqn`.
fn leaf(field: &str) -> &str {
    let last = field.rsplit('.').next().unwrap_or(field);
    last.split('[').next().unwrap_or(last)
}

fn compare(reference: &Answers, subject: &Answers) -> Vec<Difference> {
    let empty = BTreeMap::new();
    let items: BTreeSet<&String> = reference.items.keys().chain(subject.items.keys()).collect();
    let mut differences = Vec::new();
    for item in items {
        let (ours, theirs) = (reference.items.get(item), subject.items.get(item));
        if ours.is_none() || theirs.is_none() {
            let answered = |fields: Option<&_>| if fields.is_some() { "answered" } else { "not asked" }.to_string();
            differences.push(Difference { item: item.clone(), field: "(item)".into(), reference: answered(ours), subject: answered(theirs) });
            continue;
        }
        let (ours, theirs) = (ours.unwrap_or(&empty), theirs.unwrap_or(&empty));
        // Where one side answered and the other failed (or both failed differently),
        // the status is the difference; the data of the side that answered is not.
        let status_differs = ours.get("status") != theirs.get("status");
        let fields: BTreeSet<&String> = ours.keys().chain(theirs.keys()).filter(|field| !status_differs || *field == "status").collect();
        for field in fields {
            if EXCLUDED.contains(&leaf(field)) {
                continue;
            }
            // DNR and More are compared when both answered with an NVMe error status;
            // otherwise `status` itself already differs.
            if field.starts_with("status.") && !(ours.contains_key(field) && theirs.contains_key(field)) {
                continue;
            }
            let (a, b) = (ours.get(field), theirs.get(field));
            if a != b {
                differences.push(Difference {
                    item: item.clone(),
                    field: field.clone(),
                    reference: a.map_or(ABSENT, String::as_str).into(),
                    subject: b.map_or(ABSENT, String::as_str).into(),
                });
            }
        }
    }
    differences
}

fn matches(row: &Row, difference: &Difference) -> bool {
    row.item == difference.item && row.field == difference.field
}

/// Prints every difference and stale table row; true if all differences are known
/// and every row matched one.
fn report(differences: &[Difference], table: &[Row], items: usize) -> bool {
    let mut unexpected = 0;
    for difference in differences {
        let Difference { item, field, reference, subject } = difference;
        match table.iter().find(|row| matches(row, difference)) {
            Some(row) => println!("known       {item} {field}: nvmet {reference}, p2ptgt {subject} ({})", row.reason),
            None => {
                unexpected += 1;
                println!("UNEXPECTED  {item} {field}: nvmet {reference}, p2ptgt {subject}");
            }
        }
    }
    let mut stale = 0;
    for row in table {
        if !differences.iter().any(|difference| matches(row, difference)) {
            stale += 1;
            println!("STALE ROW   line {}: {} {} no longer differs; remove it ({})", row.line, row.item, row.field, row.reason);
        }
    }
    println!(
        "conformance: {items} items, {} differences ({} known, {unexpected} unexpected), {stale} stale table rows",
        differences.len(),
        differences.len() - unexpected
    );
    unexpected == 0 && stale == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaf_strips_path_and_index() {
        assert_eq!(leaf("record[1].subnqn"), "subnqn");
        assert_eq!(leaf("descriptor[2].nguid"), "nguid");
        assert_eq!(leaf("lid[0x02]"), "lid");
        assert_eq!(leaf("cntlid"), "cntlid");
    }

    fn side(pairs: &[(&str, &str)]) -> Answers {
        Answers { items: [("x".to_string(), pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())].into() }
    }

    fn differing(reference: &[(&str, &str)], subject: &[(&str, &str)]) -> Vec<String> {
        compare(&side(reference), &side(subject)).into_iter().map(|difference| difference.field).collect()
    }

    #[test]
    fn excluded_fields_do_not_differ() {
        let fields = differing(&[("sn", "A"), ("status", "success"), ("ver", "0x20100")], &[("sn", "B"), ("status", "success"), ("ver", "0x20000")]);
        assert_eq!(fields, ["ver"]);
    }

    #[test]
    fn a_differing_status_hides_the_data_and_status_bits() {
        let fields = differing(&[("status", "0x002"), ("status.dnr", "1"), ("ver", "0x20100")], &[("status", "success"), ("ver", "0x20000")]);
        assert_eq!(fields, ["status"]);
        let fields = differing(&[("status", "0x002"), ("status.more", "1")], &[("status", "0x002"), ("status.more", "0")]);
        assert_eq!(fields, ["status.more"]);
    }
}
