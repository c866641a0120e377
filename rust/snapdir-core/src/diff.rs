//! `diff` of two manifests without a map of either: both are sorted by path, so one merge
//! pass pairs the entries of equal paths, and a binary search pairs a file with a directory
//! of the same name (`./a` and `./a/` sort apart). Memory is what the caller keeps of the
//! changes, not a hash map of every path of both sides (about 1 KB an entry in Python).

use crate::manifest::{EntryRef, Kind, Manifest};

/// What happened to one path, `from` -> `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Only in `to`.
    Added,
    /// Only in `from`.
    Deleted,
    /// In both, different (see [`Detail`]).
    Modified,
    /// In both, the same (for a directory: its whole tree).
    Same,
}

impl Status {
    pub fn letter(self) -> &'static str {
        match self {
            Status::Added => "A",
            Status::Deleted => "D",
            Status::Modified => "M",
            Status::Same => "=",
        }
    }
}

/// What changed for [`Status::Modified`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    None,
    /// File <-> directory.
    Type,
    /// A file's content.
    Content,
    /// A directory whose type and mode are unchanged: something below it changed.
    Contents,
    /// Permissions (`from`, `to`).
    Mode(u32, u32),
}

impl Detail {
    /// The text the Python API and the CLI show (`mode 644->755`).
    pub fn text(self) -> String {
        match self {
            Detail::None => String::new(),
            Detail::Type => "type".into(),
            Detail::Content => "content".into(),
            Detail::Contents => "contents".into(),
            Detail::Mode(a, b) => format!("mode {a:o}->{b:o}"),
        }
    }
}

fn compare(a: &EntryRef<'_>, b: &EntryRef<'_>) -> (Status, Detail) {
    if a.kind != b.kind {
        return (Status::Modified, Detail::Type);
    }
    if a.checksum == b.checksum && a.mode == b.mode {
        return (Status::Same, Detail::None);
    }
    if a.checksum != b.checksum {
        if a.kind == Kind::File {
            return (Status::Modified, Detail::Content);
        }
        if a.mode == b.mode {
            return (Status::Modified, Detail::Contents);
        }
    }
    (Status::Modified, Detail::Mode(a.mode, b.mode))
}

/// The path of the other type with the same name: `./a` <-> `./a/` (none for the root).
fn other_type_path(path: &str) -> Option<String> {
    if path == "./" {
        None
    } else if let Some(p) = path.strip_suffix('/') {
        Some(p.to_owned())
    } else {
        Some(format!("{path}/"))
    }
}

/// Compares `from` with `to`, calling `each(status, path, detail)` once per path of either
/// side, in merge order (by path, except that a path whose type changed comes where the
/// `to` side has it). `path` is the `to` side's when it has the path, else the `from`
/// side's; a file and a directory of the same name are one path whose type changed.
/// Neither manifest may be absolute (their paths are compared as `./`-relative).
pub fn diff<'a>(
    from: &'a Manifest,
    to: &'a Manifest,
    mut each: impl FnMut(Status, &'a str, Detail),
) {
    let (ea, eb) = (from.entries(), to.entries());
    let (na, nb) = (ea.len(), eb.len());
    let (mut i, mut j) = (0usize, 0usize);
    // An entry of one side only: a deletion or addition, unless the other side has the
    // same name as the other type (then it is one type change, told once, at the `to`
    // side's entry).
    let from_only = |i: usize, each: &mut dyn FnMut(Status, &'a str, Detail)| {
        let p = ea.path(i);
        let paired = other_type_path(p).is_some_and(|q| eb.find(q.as_bytes()).is_some());
        if !paired {
            each(Status::Deleted, p, Detail::None);
        }
    };
    let to_only = |j: usize, each: &mut dyn FnMut(Status, &'a str, Detail)| {
        let p = eb.path(j);
        let paired = other_type_path(p).is_some_and(|q| ea.find(q.as_bytes()).is_some());
        if paired {
            each(Status::Modified, p, Detail::Type);
        } else {
            each(Status::Added, p, Detail::None);
        }
    };
    while i < na || j < nb {
        if j >= nb {
            from_only(i, &mut each);
            i += 1;
        } else if i >= na {
            to_only(j, &mut each);
            j += 1;
        } else {
            let (pa, pb) = (ea.path(i), eb.path(j));
            match pa.as_bytes().cmp(pb.as_bytes()) {
                std::cmp::Ordering::Equal => {
                    let (s, d) = compare(&ea.get(i), &eb.get(j));
                    each(s, pb, d);
                    i += 1;
                    j += 1;
                }
                std::cmp::Ordering::Less => {
                    from_only(i, &mut each);
                    i += 1;
                }
                std::cmp::Ordering::Greater => {
                    to_only(j, &mut each);
                    j += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::EMPTY_CHECKSUM;

    fn m(lines: &[&str]) -> Manifest {
        let mut text = format!("D 755 {EMPTY_CHECKSUM} 0 ./");
        for l in lines {
            text.push('\n');
            text.push_str(l);
        }
        Manifest::parse(&text).unwrap()
    }

    fn run(a: &Manifest, b: &Manifest) -> Vec<String> {
        let mut out = Vec::new();
        diff(a, b, |s, p, d| {
            out.push(format!("{} {p} {}", s.letter(), d.text()))
        });
        out.sort();
        out
    }

    #[test]
    fn statuses_and_details() {
        let h1 = "8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99";
        let h0 = EMPTY_CHECKSUM;
        let a = m(&[
            &format!("F 644 {h0} 0 ./a"),
            &format!("F 644 {h0} 0 ./a.txt"),
            &format!("F 644 {h0} 0 ./gone"),
            &format!("F 644 {h0} 0 ./mode"),
            &format!("D 755 {h0} 0 ./sub/"),
            &format!("F 644 {h0} 0 ./sub/x"),
        ]);
        let b = m(&[
            &format!("D 755 {h0} 0 ./a/"),
            &format!("F 644 {h0} 0 ./a.txt"),
            &format!("F 755 {h0} 0 ./mode"),
            &format!("F 644 {h0} 0 ./new"),
            &format!("D 755 {h1} 0 ./sub/"),
            &format!("F 644 {h1} 0 ./sub/x"),
        ]);
        assert_eq!(
            run(&a, &b),
            [
                "= ./ ",
                "= ./a.txt ",
                "A ./new ",
                "D ./gone ",
                "M ./a/ type",
                "M ./mode mode 644->755",
                "M ./sub/ contents",
                "M ./sub/x content",
            ]
        );
        assert_eq!(
            run(&b, &a),
            [
                "= ./ ",
                "= ./a.txt ",
                "A ./gone ",
                "D ./new ",
                "M ./a type",
                "M ./mode mode 755->644",
                "M ./sub/ contents",
                "M ./sub/x content",
            ]
        );
    }
}
