//! tools/syzkaller/dev_m4npu.txt against uapi/include/linux/m4npu.h: every
//! struct of the header described with the same fields, in the same order
//! and of the same widths; every ioctl and uring command described; every
//! constant the description names defined by the header.

use std::collections::HashMap;

const HEADER: &str = include_str!("../include/linux/m4npu.h");
const SYZ: &str = include_str!("../../tools/syzkaller/dev_m4npu.txt");

/// Numeric `#define M4NPU_* N` values, and every defined name.
fn defines() -> (HashMap<String, u64>, Vec<String>) {
    let (mut values, mut names) = (HashMap::new(), Vec::new());
    for l in HEADER.lines() {
        let mut w = l.split_whitespace();
        if w.next() != Some("#define") {
            continue;
        }
        let Some(name) = w.next() else { continue };
        names.push(name.to_string());
        if let Some(v) = w.next().and_then(|v| v.parse().ok()) {
            values.insert(name.to_string(), v);
        }
    }
    (values, names)
}

fn number(n: &str, defs: &HashMap<String, u64>) -> u64 {
    n.trim().parse().ok().or_else(|| defs.get(n.trim()).copied()).unwrap_or_else(|| panic!("no value for {n:?}"))
}

/// The header's structs: name, then (field, width signature) in order.
fn c_structs(defs: &HashMap<String, u64>) -> Vec<(String, Vec<(String, String)>)> {
    let mut out = Vec::new();
    let mut cur: Option<(String, Vec<(String, String)>)> = None;
    for l in HEADER.lines() {
        if let Some(name) = l.strip_prefix("struct ").and_then(|r| r.strip_suffix(" {")) {
            cur = Some((name.to_string(), Vec::new()));
        } else if l.starts_with("};") {
            out.extend(cur.take());
        } else if let Some((_, fields)) = cur.as_mut() {
            let decl = l.trim().trim_end_matches(';');
            let (ty, name) = decl.rsplit_once(' ').unwrap_or_else(|| panic!("field {decl:?}"));
            let base = match ty {
                "char" | "__u8" | "__s8" => "int8".to_string(),
                "__u16" | "__s16" => "int16".into(),
                "__u32" | "__s32" => "int32".into(),
                "__u64" | "__s64" => "int64".into(),
                t => t.strip_prefix("struct ").unwrap_or_else(|| panic!("type {t:?}")).to_string(),
            };
            let (name, sig) = match name.split_once('[') {
                Some((n, dim)) => (n, format!("array({base}, {})", number(dim.trim_end_matches(']'), defs))),
                None => (name, base),
            };
            fields.push((name.to_string(), sig));
        }
    }
    out
}

/// The arguments of `kind[a, b, ...]`, split at top-level commas.
fn args(ty: &str) -> Vec<&str> {
    let inner = &ty[ty.find('[').expect("[") + 1..ty.rfind(']').expect("]")];
    let (mut depth, mut start, mut out) = (0, 0, Vec::new());
    for (i, ch) in inner.char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(inner[start..].trim());
    out
}

/// The width signature of a syzlang type.
fn syz_sig(ty: &str, resources: &HashMap<String, String>, defs: &HashMap<String, u64>) -> String {
    let kind = ty.split('[').next().expect("kind");
    match kind {
        "int8" | "int16" | "int32" | "int64" => kind.to_string(),
        "const" | "flags" | "len" | "bytesize" => args(ty).last().expect("width").to_string(),
        "array" => {
            let a = args(ty);
            format!("array({}, {})", syz_sig(a[0], resources, defs), a.get(1).map_or(0, |n| number(n, defs)))
        }
        "fd" => "int32".into(),
        "ptr64" => "int64".into(),
        r if resources.contains_key(r) => syz_sig(&resources[r], resources, defs),
        s => s.to_string(),
    }
}

/// The description's structs (not unions), with their field signatures.
fn syz_structs(defs: &HashMap<String, u64>) -> HashMap<String, Vec<(String, String)>> {
    let resources: HashMap<String, String> = SYZ
        .lines()
        .filter_map(|l| l.strip_prefix("resource "))
        .map(|r| {
            let (name, rest) = r.split_once('[').expect("resource[base]");
            (name.to_string(), rest[..rest.find(']').expect("]")].to_string())
        })
        .collect();
    let mut out = HashMap::new();
    let mut cur: Option<(String, Vec<(String, String)>)> = None;
    for l in SYZ.lines() {
        if let Some(name) = l.strip_suffix(" {") {
            cur = Some((name.to_string(), Vec::new()));
        } else if l.starts_with('}') {
            if let Some((n, f)) = cur.take() {
                out.insert(n, f);
            }
        } else if let Some((_, fields)) = cur.as_mut() {
            let l = l.trim();
            let (name, ty) = l.split_once(char::is_whitespace).unwrap_or_else(|| panic!("field {l:?}"));
            let ty = ty.trim();
            // Drop a trailing direction attribute such as `(out)`.
            let ty = ty.rsplit_once(char::is_whitespace).filter(|(_, a)| a.starts_with('(')).map_or(ty, |(t, _)| t.trim());
            fields.push((name.to_string(), syz_sig(ty, &resources, defs)));
        }
    }
    out
}

#[test]
fn syzkaller_description_matches_the_header() {
    let (values, names) = defines();
    let syz = syz_structs(&values);
    let structs = c_structs(&values);
    assert!(structs.len() >= 15, "parsed only {} structs from the header", structs.len());
    for (name, fields) in &structs {
        let described = syz.get(name).unwrap_or_else(|| panic!("struct {name} is not described"));
        assert_eq!(described, fields, "struct {name}: the description's fields differ from the header's");
    }
    for cmd in names.iter().filter(|n| n.starts_with("M4NPU_IOC_")) {
        assert!(SYZ.contains(&format!("ioctl${cmd}(")), "ioctl {cmd} is not described");
    }
    for cmd in names.iter().filter(|n| n.starts_with("M4NPU_URING_CMD_") && *n != "M4NPU_URING_CMD_SQE128_BYTES") {
        assert!(SYZ.contains(cmd.as_str()), "uring command {cmd} is not described");
    }
    // Every header constant the description uses exists.
    for word in SYZ.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("M4NPU_")) {
        assert!(names.iter().any(|n| n == word), "the description names {word}, which the header does not define");
    }
}
