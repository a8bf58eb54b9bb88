//! Reads one target's answer directory into `item -> field -> value`. An item's name
//! says what was asked and so how nvme-cli's output parses:
//!
//! - every item: `status` (`success`, `0xSCT|SC name` for an NVMe error status with
//!   `status.dnr` and `status.more` beside it, or `refused: ...` when the kernel host or
//!   nvme-cli did not send the command) and `result` (Dword 0, where nvme-cli prints it);
//! - `id-ctrl`, `id-ns`, `discover`, `discovery-id-ctrl`: nvme-cli JSON, by path;
//! - `identify-cnsXX`, `log-0xXX`, `discovery-log-0x70`: binary data, by the layouts of
//!   `layout.rs`;
//! - `cmd-*` (malformed commands): the data's length and whether it is all zeros;
//! - `feature-0xFF-selN`: Dword 0 as `value`, a data buffer as `data.bytes[..]`;
//! - `property-0xOO`: the value; CAP by its fields;
//! - `dmesg-discover.txt`: the kernel log lines of `nvme discover`, by message.

use std::collections::BTreeMap;
use std::path::Path;

use crate::layout::{self, Fields};

/// Every item one target answered.
pub struct Answers {
    pub items: BTreeMap<String, Fields>,
}

impl Answers {
    /// Loads directory `dir`, replacing the target's own subsystem NQN `nqn` in values.
    pub fn load(dir: &Path, nqn: Option<&str>) -> Result<Answers, String> {
        let read_dir = std::fs::read_dir(dir).map_err(|error| format!("reading {}: {error}", dir.display()))?;
        let mut items = BTreeMap::new();
        for entry in read_dir.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|name| name.to_str()).map(str::to_string) else { continue };
            if let Some(item) = name.strip_suffix(".rc") {
                let read = |suffix: &str| std::fs::read(dir.join(format!("{item}.{suffix}"))).unwrap_or_default();
                let rc = String::from_utf8_lossy(&read("rc")).trim().parse().unwrap_or(-1);
                let err = String::from_utf8_lossy(&read("err")).into_owned();
                items.insert(item.to_string(), parse_item(item, &read("out"), &err, rc));
            } else if name == "dmesg-discover.txt" {
                items.insert("dmesg-discover".to_string(), kernel_log(&String::from_utf8_lossy(&read_file(&path)?)));
            }
        }
        if let Some(nqn) = nqn {
            for value in items.values_mut().flat_map(|fields| fields.values_mut()) {
                if value.contains(nqn) {
                    *value = value.replace(nqn, "<subsystem>");
                }
            }
        }
        Ok(Answers { items })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|error| format!("reading {}: {error}", path.display()))
}

/// One item: its status, and its data if it succeeded.
fn parse_item(item: &str, out: &[u8], err: &str, rc: i32) -> Fields {
    let mut fields = status(err, rc);
    if let Some(result) = err.split("result: ").nth(1).and_then(|rest| rest.split_whitespace().next()) {
        fields.insert("result".into(), result.to_string());
    }
    if fields["status"] != "success" || out.is_empty() {
        return fields;
    }
    let text = String::from_utf8_lossy(out);
    let data = if matches!(item, "id-ctrl" | "id-ns" | "discover" | "discovery-id-ctrl") {
        json(&text)
    } else if item.starts_with("feature-") {
        feature(&text)
    } else if item.starts_with("property-") || item.starts_with("discovery-property-") {
        property(item, &text)
    } else if item.starts_with("cmd-") {
        data_summary(out)
    } else {
        page(item, out)
    };
    fields.extend(data);
    fields
}

/// `status` (and `status.dnr`, `status.more` for an NVMe status) from nvme-cli's stderr.
fn status(err: &str, rc: i32) -> Fields {
    let mut fields = Fields::new();
    let nvme = err.lines().find_map(|line| {
        let text = line.split("NVMe status: ").nth(1)?;
        let (_, code) = text.rsplit_once("(0x")?;
        let code = u16::from_str_radix(code.trim_end_matches(')'), 16).ok()?;
        Some((text.split(':').next().unwrap_or("").trim().to_string(), code))
    });
    match nvme {
        Some((name, code)) => {
            fields.insert("status".into(), format!("{:#05x} {name}", code & 0x7ff));
            fields.insert("status.dnr".into(), (code >> 14 & 1).to_string());
            fields.insert("status.more".into(), (code >> 13 & 1).to_string());
        }
        None if rc == 0 => {
            fields.insert("status".into(), "success".into());
        }
        None => {
            let line = err.lines().map(str::trim).find(|line| !line.is_empty()).unwrap_or("no message");
            fields.insert("status".into(), format!("refused: {line}"));
        }
    }
    fields
}

/// nvme-cli JSON, flattened to `a.b[2].c` paths; not JSON: the text as `output`.
fn json(text: &str) -> Fields {
    let mut fields = Fields::new();
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => flatten("", &value, &mut fields),
        Err(_) => {
            fields.insert("output".into(), text.trim().to_string());
        }
    }
    fields
}

fn flatten(path: &str, value: &serde_json::Value, fields: &mut Fields) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                flatten(&path, value, fields);
            }
        }
        Value::Array(items) => {
            fields.insert(format!("{path}.length"), items.len().to_string());
            for (index, value) in items.iter().enumerate() {
                flatten(&format!("{path}[{index}]"), value, fields);
            }
        }
        Value::String(text) => {
            fields.insert(path.into(), text.trim_end().to_string());
        }
        other => {
            fields.insert(path.into(), other.to_string());
        }
    }
}

/// `nvme get-feature`: "get-feature:0x07 (Number of Queues), Current value:0x007f007f",
/// then a hex dump of the data buffer if the feature has one.
fn feature(text: &str) -> Fields {
    let mut fields = Fields::new();
    if let Some(value) = text.split("value:").nth(1).and_then(|rest| rest.split_whitespace().next()) {
        fields.insert("value".into(), value.to_string());
    }
    let data = hex_dump(text);
    if !data.is_empty() {
        for (name, value) in layout::fixed(&data, &[]) {
            fields.insert(format!("data.{name}"), value);
        }
    }
    fields
}

/// The bytes of nvme-cli's hex dump lines ("0010: 00 01 ... \"ascii\"").
fn hex_dump(text: &str) -> Vec<u8> {
    let mut data = Vec::new();
    for line in text.lines() {
        let Some((offset, rest)) = line.split_once(": ") else { continue };
        if offset.len() != 4 || !offset.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        let hex = rest.split('"').next().unwrap_or("");
        data.extend(hex.split_whitespace().filter_map(|byte| u8::from_str_radix(byte, 16).ok()));
    }
    data
}

/// `nvme get-property`: "property: 0x00 (Controller Capabilities), value: 20000000007f";
/// CAP (offset 0) by its fields (Base 2.0 Figure 36).
fn property(item: &str, text: &str) -> Fields {
    let mut fields = Fields::new();
    let value = text.split("value:").nth(1).and_then(|rest| rest.split_whitespace().next()).map(str::to_string);
    let Some(value) = value else {
        fields.insert("output".into(), text.trim().to_string());
        return fields;
    };
    let number = u64::from_str_radix(value.trim_start_matches("0x"), 16);
    match number {
        Ok(cap) if item.ends_with("-0x00") => {
            let bits = |low: u32, high: u32| format!("{:#x}", cap >> low & ((1u64 << (high - low + 1)) - 1));
            for (name, low, high) in [
                ("mqes", 0, 15), ("cqr", 16, 16), ("ams", 17, 18), ("to", 24, 31), ("dstrd", 32, 35),
                ("nssrs", 36, 36), ("css", 37, 44), ("bps", 45, 45), ("cps", 46, 47), ("mpsmin", 48, 51),
                ("mpsmax", 52, 55), ("pmrs", 56, 56), ("cmbs", 57, 57), ("nsss", 58, 58), ("crms", 59, 60),
                ("nsses", 61, 61), ("reserved", 62, 63),
            ] {
                fields.insert(format!("cap.{name}"), bits(low, high));
            }
            let reserved = (19..24).map(|bit| cap >> bit & 1).sum::<u64>();
            fields.insert("cap.reserved_19_23".into(), reserved.to_string());
        }
        Ok(number) => {
            fields.insert("value".into(), format!("{number:#x}"));
        }
        Err(_) => {
            fields.insert("value".into(), value);
        }
    }
    fields
}

/// The data a malformed command returned, as its length and whether it is all zeros:
/// the pages themselves are compared under their own items.
fn data_summary(data: &[u8]) -> Fields {
    let zero = if data.iter().all(|byte| *byte == 0) { "all zero" } else { "not all zero" };
    Fields::from([("data".to_string(), format!("{} bytes, {zero}", data.len()))])
}

/// A binary page, by the layout its item name implies.
fn page(item: &str, data: &[u8]) -> Fields {
    let name = item.strip_prefix("discovery-").unwrap_or(item);
    match name {
        "identify-cns00" => layout::identify_namespace(data),
        "identify-cns01" => layout::identify_controller(data),
        "identify-cns02" | "identify-cns07" | "log-0x04" => layout::id_list(data),
        "identify-cns05" => layout::nvm_namespace(data),
        "identify-cns06" => layout::fixed(data, layout::NVM_CONTROLLER),
        "identify-cns08" => layout::fixed(data, layout::INDEPENDENT_NAMESPACE),
        "log-0x00" => layout::supported_logs(data),
        "log-0x01" => layout::error_log(data),
        "log-0x03" => layout::fixed(data, layout::FIRMWARE_SLOTS),
        "log-0x05" => layout::command_effects(data),
        "log-0x0c" => layout::ana_log(data),
        "log-0x12" => layout::feature_effects(data),
        "log-0x70" => layout::discovery_log(data),
        "log-0x80" => layout::fixed(data, layout::RESERVATION_NOTIFICATION),
        "identify-cns03" => layout::descriptors(data),
        "log-0x02" => layout::fixed(data, layout::SMART),
        _ => layout::fixed(data, &[]),
    }
}

/// Kernel log lines ("kern  :warn  : message"): field = message, value = level.
fn kernel_log(text: &str) -> Fields {
    let mut fields = Fields::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_facility), Some(level), Some(message)) = (parts.next(), parts.next(), parts.next()) else { continue };
        fields.insert(message.trim().to_string(), level.trim().to_string());
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvme_status_splits_into_code_dnr_and_more() {
        let err = "NVMe status: Invalid Field in Command: A reserved coded value(0x6002)\n";
        let fields = status(err, 1);
        assert_eq!(fields["status"], "0x002 Invalid Field in Command");
        assert_eq!(fields["status.dnr"], "1");
        assert_eq!(fields["status.more"], "1");
    }

    #[test]
    fn refusals_and_results_are_kept() {
        assert_eq!(status("passthru: Invalid argument\n", 1)["status"], "refused: passthru: Invalid argument");
        let fields = parse_item("cmd-admin-keep-alive", b"", "Admin Command Keep Alive is Success and result: 0x00000000\n", 0);
        assert_eq!(fields["status"], "success");
        assert_eq!(fields["result"], "0x00000000");
    }

    #[test]
    fn features_give_value_and_data() {
        let text = "get-feature:0x0e (Timestamp), Current value:0x00000000\n       0  1\n0000: 01 02 \"..\"\n";
        let fields = feature(text);
        assert_eq!(fields["value"], "0x00000000");
        assert_eq!(fields["data.bytes[0x0000..0x0002]"], "0102");
    }

    #[test]
    fn cap_is_split_into_fields() {
        let fields = property("property-0x00", "property: 0x00 (Controller Capabilities), value: 200f0003ff\n");
        assert_eq!(fields["cap.mqes"], "0x3ff");
        assert_eq!(fields["cap.to"], "0xf");
        assert_eq!(fields["cap.css"], "0x1");
    }

    #[test]
    fn json_is_flattened_by_path() {
        let fields = json(r#"{"a":1,"b":[{"c":"x  "}]}"#);
        assert_eq!(fields["a"], "1");
        assert_eq!(fields["b.length"], "1");
        assert_eq!(fields["b[0].c"], "x");
    }
}
