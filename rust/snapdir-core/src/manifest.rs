//! The manifest: one line per entry, `TYPE PERMS CHECKSUM SIZE PATH` (SPEC §1), and the
//! snapshot id, `BLAKE3(text + "\n")` (SPEC §2).
//!
//! A parsed manifest may come from a store an attacker controls, so [`Manifest::parse`]
//! validates everything a later materialisation relies on: normalised `./`-relative paths,
//! no duplicates, every entry's parent present as a directory.

use std::collections::HashSet;
use std::fmt::Write as _;

use crate::error::{escape_bytes, Code, Error, Result};

/// BLAKE3 of the empty string: the checksum of an empty file and of an empty directory.
pub const EMPTY_CHECKSUM: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

/// A 32-byte BLAKE3 digest.
pub type Digest = [u8; 32];

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Directory,
}

impl Kind {
    pub fn letter(self) -> char {
        match self {
            Kind::File => 'F',
            Kind::Directory => 'D',
        }
    }
}

/// One manifest line. `path` is always the canonical relative form (`./`, `./a`, `./d/`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Entry {
    pub kind: Kind,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    pub checksum: Digest,
    pub size: u64,
    pub path: String,
}

impl Entry {
    pub fn checksum_hex(&self) -> String {
        to_hex(&self.checksum)
    }

    /// The path relative to the snapshot root without the leading `./` and without a
    /// trailing `/` (empty for the root): what gets joined onto a destination directory.
    pub fn rel(&self) -> &str {
        let p = &self.path[2..];
        p.strip_suffix('/').unwrap_or(p)
    }
}

/// A validated, sorted manifest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Manifest {
    entries: Vec<Entry>,
    /// When set (`absolute=True` walks), paths render with this prefix in place of the
    /// leading `.`. Such a manifest is for display; it cannot be parsed back.
    prefix: Option<String>,
}

impl Manifest {
    /// Builds a manifest from walked entries: sorts them bytewise by path. The walker
    /// produces well-formed, unique paths, so only the order is established here.
    pub fn from_walk(mut entries: Vec<Entry>, prefix: Option<String>) -> Manifest {
        entries.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        Manifest { entries, prefix }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn is_absolute(&self) -> bool {
        self.prefix.is_some()
    }

    /// The path as rendered (absolute when the manifest has a prefix).
    pub fn display_path<'a>(&'a self, e: &'a Entry) -> std::borrow::Cow<'a, str> {
        match &self.prefix {
            None => std::borrow::Cow::Borrowed(&e.path),
            Some(p) => std::borrow::Cow::Owned(format!("{p}{}", &e.path[1..])),
        }
    }

    /// The canonical text: lines joined with `\n`, no trailing newline (`Manifest.raw`).
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.render_into(self.entries.len() * 110, usize::MAX, |text| {
            out = std::mem::take(text)
        });
        out
    }

    /// Renders the canonical text into a buffer of `capacity`, handing it to `flush`
    /// whenever it holds `flush_at` bytes or more, and once at the end (`flush` empties it).
    fn render_into(&self, capacity: usize, flush_at: usize, mut flush: impl FnMut(&mut String)) {
        let mut buf = String::with_capacity(capacity);
        for (i, e) in self.entries.iter().enumerate() {
            if i > 0 {
                buf.push('\n');
            }
            self.write_line(&mut buf, e);
            if buf.len() >= flush_at {
                flush(&mut buf);
            }
        }
        flush(&mut buf);
    }

    /// Appends the canonical line of `e` (without its newline).
    fn write_line(&self, out: &mut String, e: &Entry) {
        out.push(e.kind.letter());
        let _ = write!(out, " {:o} ", e.mode);
        push_hex(out, &e.checksum);
        let _ = write!(out, " {} ", e.size);
        match &self.prefix {
            None => out.push_str(&e.path),
            Some(p) => {
                out.push_str(p);
                out.push_str(&e.path[1..]);
            }
        }
    }

    /// The snapshot id: BLAKE3 of the canonical text plus one newline ([`id_of_text`] of
    /// [`Manifest::render`]), hashed as the lines are rendered: the text of a 200,000-entry
    /// tree (about 22 MB) is never held whole.
    pub fn id(&self) -> Digest {
        const FLUSH: usize = 64 * 1024;
        let mut h = blake3::Hasher::new();
        self.render_into(FLUSH + 512, FLUSH, |text| {
            h.update(text.as_bytes());
            text.clear();
        });
        h.update(b"\n");
        *h.finalize().as_bytes()
    }

    pub fn id_hex(&self) -> String {
        to_hex(&self.id())
    }

    /// Parses and validates manifest text (SPEC §1, §5). Accepts `\n` and `\r\n`, skips
    /// blank lines and `#` comments, re-sorts. Rejects anything malformed or unsafe with
    /// `INVALID_MANIFEST` / `UNSAFE_PATH`, naming the line.
    pub fn parse(text: &str) -> Result<Manifest> {
        let mut entries = Vec::with_capacity(text.len() / 100 + 1);
        for (n, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            entries.push(parse_line(line).map_err(|m| {
                Error::new(
                    m.0,
                    format!(
                        "invalid manifest line {}: {}: {}",
                        n + 1,
                        m.1,
                        escape_bytes(line.as_bytes())
                    ),
                )
            })?);
        }
        entries.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        check_structure(&entries)?;
        Ok(Manifest {
            entries,
            prefix: None,
        })
    }

    /// Logical and physical sizes (see `SizeStats`): logical bytes (sum of file sizes),
    /// physical bytes (sum over distinct checksums), number of files, number of objects.
    ///
    /// The sums are exact: each size fits in 64 bits but two of them may not (a manifest
    /// from a store can claim anything, and sparse files of exabytes exist), so they are
    /// added as 128-bit numbers, which no count of 64-bit sizes a manifest can hold
    /// overflows. A saturated or wrapped total would be a wrong figure given as right.
    pub fn size_stats(&self) -> (u128, u128, u64, u64) {
        let mut seen: HashSet<&Digest> = HashSet::new();
        let (mut logical, mut physical, mut files) = (0u128, 0u128, 0u64);
        for e in &self.entries {
            if e.kind == Kind::File {
                files += 1;
                logical += u128::from(e.size);
                if seen.insert(&e.checksum) {
                    physical += u128::from(e.size);
                }
            }
        }
        (logical, physical, files, seen.len() as u64)
    }

    /// The distinct objects (checksum, size) the snapshot references, in manifest order.
    pub fn objects(&self) -> Vec<(Digest, u64)> {
        let mut seen: HashSet<&Digest> = HashSet::new();
        self.entries
            .iter()
            .filter(|e| e.kind == Kind::File && seen.insert(&e.checksum))
            .map(|e| (e.checksum, e.size))
            .collect()
    }
}

/// BLAKE3 of `text + "\n"`.
pub fn id_of_text(text: &str) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(text.as_bytes());
    h.update(b"\n");
    *h.finalize().as_bytes()
}

type LineError = (Code, &'static str);

fn parse_line(line: &str) -> std::result::Result<Entry, LineError> {
    let bad = |why| (Code::InvalidManifest, why);
    let mut it = line.splitn(5, ' ');
    let (Some(t), Some(p), Some(c), Some(s), Some(path)) =
        (it.next(), it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad("expected 5 space-separated fields"));
    };
    let kind = match t {
        "D" => Kind::Directory,
        "F" => Kind::File,
        _ => return Err(bad("type must be D or F")),
    };
    if p.is_empty() || p.len() > 4 || !p.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return Err(bad("permissions must be octal, at most 7777"));
    }
    let mode = u32::from_str_radix(p, 8).map_err(|_| bad("permissions must be octal"))?;
    let checksum = parse_hex(c).ok_or(bad("checksum must be 64 lowercase hex characters"))?;
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("size must be a decimal number"));
    }
    let size: u64 = s.parse().map_err(|_| bad("size does not fit in 64 bits"))?;
    check_path(path, kind).map_err(|why| (Code::UnsafePath, why))?;
    Ok(Entry {
        kind,
        mode,
        checksum,
        size,
        path: path.to_owned(),
    })
}

/// A path is safe when it is `./` or `./` followed by non-empty components that are not
/// `.` or `..` and contain no NUL, `\n` or `\r`; directories end in `/`, files do not.
pub fn check_path(path: &str, kind: Kind) -> std::result::Result<(), &'static str> {
    if path == "./" {
        return if kind == Kind::Directory {
            Ok(())
        } else {
            Err("the root ./ must be a directory")
        };
    }
    let Some(rest) = path.strip_prefix("./") else {
        return Err("path must start with ./");
    };
    let rest = match kind {
        Kind::Directory => rest
            .strip_suffix('/')
            .ok_or("directory path must end with /")?,
        Kind::File if rest.ends_with('/') => return Err("file path must not end with /"),
        Kind::File => rest,
    };
    if rest.bytes().any(|b| b == 0 || b == b'\n' || b == b'\r') {
        return Err("path contains NUL, newline or carriage return");
    }
    for comp in rest.split('/') {
        match comp {
            "" => return Err("path has an empty component (//)"),
            "." | ".." => return Err("path has a . or .. component"),
            _ => {}
        }
    }
    Ok(())
}

/// Sorted entries must be unique, have a root, and every entry's parent must be a directory
/// entry of the manifest — so a file and a directory cannot share a path, and nothing can be
/// placed under a file.
fn check_structure(entries: &[Entry]) -> Result<()> {
    let invalid = |msg: String| Error::new(Code::InvalidManifest, msg);
    if entries.first().map(|e| e.path.as_str()) != Some("./") {
        return Err(invalid(
            "invalid manifest: no root directory entry ./".into(),
        ));
    }
    let mut dirs: HashSet<&str> = HashSet::with_capacity(entries.len() / 8 + 1);
    let mut names: HashSet<&str> = HashSet::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        if i > 0 && entries[i - 1].path == e.path {
            return Err(invalid(format!(
                "invalid manifest: duplicate path {}",
                escape_bytes(e.path.as_bytes())
            )));
        }
        let name = e.rel();
        if !names.insert(name) {
            return Err(invalid(format!(
                "invalid manifest: {} is both a file and a directory",
                escape_bytes(e.path.as_bytes())
            )));
        }
        if e.kind == Kind::Directory {
            dirs.insert(name);
        }
        if i > 0 {
            let parent = name.rfind('/').map_or("", |k| &name[..k]);
            if !dirs.contains(parent) {
                return Err(invalid(format!(
                    "invalid manifest: the parent of {} is not a directory entry",
                    escape_bytes(e.path.as_bytes())
                )));
            }
        }
    }
    Ok(())
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 15) as usize] as char);
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    push_hex(&mut s, bytes);
    s
}

/// Parses exactly 64 lowercase hex characters.
pub fn parse_hex(s: &str) -> Option<Digest> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let nib = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = (nib(b[2 * i])? << 4) | nib(b[2 * i + 1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str =
        "D 755 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./";

    #[test]
    fn parse_render_roundtrip_and_id() {
        let m = Manifest::parse(BASIC).unwrap();
        assert_eq!(m.render(), BASIC);
        assert_eq!(
            m.id_hex(),
            "bb83e51d36a3ffa25011d1ea67419da2ca7609d3537b993286d9bec752519acc"
        );
    }

    #[test]
    fn parse_accepts_crlf_comments_and_resorts() {
        let f = "F 644 af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262 0 ./a b";
        let text = format!("# hello\r\n{f}\r\n\r\n{BASIC}\r\n");
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.render(), format!("{BASIC}\n{f}"));
        assert_eq!(m.entries()[1].path, "./a b");
    }

    #[test]
    fn parse_rejects_malformed_and_unsafe() {
        let h = EMPTY_CHECKSUM;
        let cases = [
            format!("D 755 {h} 0"),
            format!("X 755 {h} 0 ./"),
            format!("D 800 {h} 0 ./"),
            format!("D 17777 {h} 0 ./"),
            format!("D 755 {} 0 ./", h.to_uppercase()),
            format!("D 755 {h} -1 ./"),
            format!("D 755 {h} 18446744073709551616 ./"),
            format!("D 755 {h} 0 ./\nF 644 {h} 0 ../x"),
            format!("D 755 {h} 0 ./\nF 644 {h} 0 ./a/../../x"),
            format!("D 755 {h} 0 ./\nF 644 {h} 0 /etc/passwd"),
            format!("D 755 {h} 0 ./\nF 644 {h} 0 ./a//b"),
            format!("D 755 {h} 0 ./\nF 644 {h} 0 ./a\0b"),
            format!("D 755 {h} 0 ./\nF 644 {h} 0 ./a\rb"),
            format!("D 755 {h} 0 ./\nF 644 {h} 0 ./a\nF 644 {h} 0 ./a"),
            format!("D 755 {h} 0 ./\nF 644 {h} 0 ./a\nD 755 {h} 0 ./a/"),
            format!("D 755 {h} 0 ./\nF 644 {h} 0 ./a\nF 644 {h} 0 ./a/b"),
            format!("D 755 {h} 0 ./\nF 644 {h} 0 ./missing/b"),
            format!("F 644 {h} 0 ./a"),
            format!("D 755 {h} 0 ./\nF 644 {h} 0 ./d/"),
            format!("D 755 {h} 0 ./\nD 755 {h} 0 ./d"),
            String::new(),
        ];
        for c in &cases {
            let err = Manifest::parse(c).expect_err(c);
            assert!(
                matches!(err.code, Code::InvalidManifest | Code::UnsafePath),
                "{c:?}: {err}"
            );
        }
    }

    #[test]
    fn ordering_puts_file_before_same_named_dir() {
        let h = EMPTY_CHECKSUM;
        let text = format!("D 755 {h} 0 ./\nD 755 {h} 0 ./a/\nF 644 {h} 0 ./a.txt");
        let m = Manifest::parse(&text).unwrap();
        let paths: Vec<_> = m.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["./", "./a.txt", "./a/"]);
    }

    #[test]
    fn size_stats_counts_distinct_objects() {
        let a = "8e4c7c1b99dbfd50e7a95185fead5ee1448fa904a2fdd778eaf5f2dbfd629a99";
        let text = format!("D 755 {EMPTY_CHECKSUM} 12 ./\nF 644 {a} 6 ./x\nF 644 {a} 6 ./y");
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.size_stats(), (12, 6, 2, 1));
        assert_eq!(m.objects().len(), 1);
    }

    #[test]
    fn streamed_id_is_the_id_of_the_rendered_text() {
        // Enough entries to cross the 64 KiB flushes several times, odd line lengths.
        let mut text = String::from(BASIC);
        for i in 0..3000 {
            let name = "n".repeat(1 + i % 37);
            text.push_str(&format!(
                "\nF 644 {} {} ./d{:04}-{name}",
                to_hex(blake3::hash(name.as_bytes()).as_bytes()),
                i * 7,
                i
            ));
        }
        for raw in [BASIC.to_string(), text] {
            let m = Manifest::parse(&raw).unwrap();
            assert_eq!(m.id(), id_of_text(&m.render()));
            assert_eq!(m.render(), raw);
        }
    }
}
