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

/// A borrowed view of one entry of a [`Manifest`] (what [`Manifest::entries`] yields):
/// the fields of an [`Entry`], the path borrowed from the manifest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EntryRef<'a> {
    pub kind: Kind,
    /// `st_mode & 0o7777`.
    pub mode: u32,
    pub checksum: Digest,
    pub size: u64,
    pub path: &'a str,
}

impl<'a> EntryRef<'a> {
    pub fn checksum_hex(&self) -> String {
        to_hex(&self.checksum)
    }

    /// See [`Entry::rel`].
    pub fn rel(&self) -> &'a str {
        let p = &self.path[2..];
        p.strip_suffix('/').unwrap_or(p)
    }

    pub fn to_owned_entry(&self) -> Entry {
        Entry {
            kind: self.kind,
            mode: self.mode,
            checksum: self.checksum,
            size: self.size,
            path: self.path.to_owned(),
        }
    }
}

impl<'a> From<&'a Entry> for EntryRef<'a> {
    fn from(e: &'a Entry) -> EntryRef<'a> {
        EntryRef {
            kind: e.kind,
            mode: e.mode,
            checksum: e.checksum,
            size: e.size,
            path: &e.path,
        }
    }
}

/// How a manifest holds its entries.
///
/// A manifest read from a store is almost always canonical text already (it hashes to its
/// id only then, save for CRLF or comments). It is then kept as that text plus the offset
/// of each line: about 8 bytes per entry beyond the text itself, where one `Entry` per line
/// costs ~70 bytes and a heap allocation for its path. A walk's entries, or text that is not
/// canonical, stay as a vector of entries.
#[derive(Debug, Clone)]
enum Storage {
    Entries(Vec<Entry>),
    /// Canonical text (valid UTF-8, no trailing newline, lines sorted and validated) and the
    /// byte offset where each line starts.
    Text {
        text: Vec<u8>,
        starts: Vec<u64>,
    },
}

impl Default for Storage {
    fn default() -> Self {
        Storage::Entries(Vec::new())
    }
}

/// A validated, sorted manifest.
#[derive(Debug, Clone, Default)]
pub struct Manifest {
    storage: Storage,
    /// When set (`absolute=True` walks), paths render with this prefix in place of the
    /// leading `.`. Such a manifest is for display; it cannot be parsed back.
    prefix: Option<String>,
}

impl PartialEq for Manifest {
    fn eq(&self, other: &Manifest) -> bool {
        self.prefix == other.prefix
            && self.len() == other.len()
            && self.entries().iter().eq(other.entries().iter())
    }
}

impl Eq for Manifest {}

impl std::hash::Hash for Manifest {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.prefix.hash(state);
        self.len().hash(state);
        for e in self.entries() {
            e.hash(state);
        }
    }
}

/// The entries of a manifest, in order: `len`, `get(i)`, `iter()`; each one an [`EntryRef`].
#[derive(Clone, Copy)]
pub struct Entries<'a> {
    m: &'a Manifest,
}

impl<'a> Entries<'a> {
    pub fn len(&self) -> usize {
        self.m.len()
    }

    pub fn is_empty(&self) -> bool {
        self.m.is_empty()
    }

    /// Entry `i` (panics when out of range, as indexing a slice does).
    pub fn get(&self, i: usize) -> EntryRef<'a> {
        match &self.m.storage {
            Storage::Entries(v) => EntryRef::from(&v[i]),
            Storage::Text { text, starts } => {
                let from = starts[i] as usize;
                let to = starts.get(i + 1).map_or(text.len(), |&s| s as usize - 1);
                line_ref(&text[from..to])
            }
        }
    }

    /// The path of entry `i` (cheaper than [`Entries::get`]: no checksum decoding).
    pub fn path(&self, i: usize) -> &'a str {
        match &self.m.storage {
            Storage::Entries(v) => &v[i].path,
            Storage::Text { text, starts } => {
                let from = starts[i] as usize;
                let to = starts.get(i + 1).map_or(text.len(), |&s| s as usize - 1);
                line_path(&text[from..to])
            }
        }
    }

    /// The index of the entry with exactly this path (binary search: entries are sorted
    /// bytewise by path).
    pub fn find(&self, path: &[u8]) -> Option<usize> {
        let (mut lo, mut hi) = (0usize, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.path(mid).as_bytes().cmp(path) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    pub fn iter(&self) -> EntryIter<'a> {
        EntryIter {
            entries: *self,
            next: 0,
            end: self.len(),
        }
    }
}

impl<'a> IntoIterator for Entries<'a> {
    type Item = EntryRef<'a>;
    type IntoIter = EntryIter<'a>;

    fn into_iter(self) -> EntryIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Entries`].
#[derive(Clone)]
pub struct EntryIter<'a> {
    entries: Entries<'a>,
    next: usize,
    end: usize,
}

impl<'a> Iterator for EntryIter<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        if self.next >= self.end {
            return None;
        }
        self.next += 1;
        Some(self.entries.get(self.next - 1))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.end - self.next;
        (n, Some(n))
    }
}

impl ExactSizeIterator for EntryIter<'_> {}

impl<'a> DoubleEndedIterator for EntryIter<'a> {
    fn next_back(&mut self) -> Option<EntryRef<'a>> {
        if self.next >= self.end {
            return None;
        }
        self.end -= 1;
        Some(self.entries.get(self.end))
    }
}

/// The fields of a line validated by [`Manifest::parse`] (so no error is possible here).
fn line_ref(line: &[u8]) -> EntryRef<'_> {
    let kind = if line[0] == b'D' {
        Kind::Directory
    } else {
        Kind::File
    };
    let mut i = 2;
    let mut mode = 0u32;
    while line[i] != b' ' {
        mode = mode * 8 + u32::from(line[i] - b'0');
        i += 1;
    }
    i += 1;
    let mut checksum = [0u8; 32];
    for (k, o) in checksum.iter_mut().enumerate() {
        *o = (nibble(line[i + 2 * k]) << 4) | nibble(line[i + 2 * k + 1]);
    }
    i += 65;
    let mut size = 0u64;
    while line[i] != b' ' {
        size = size * 10 + u64::from(line[i] - b'0');
        i += 1;
    }
    EntryRef {
        kind,
        mode,
        checksum,
        size,
        path: as_str(&line[i + 1..]),
    }
}

fn line_path(line: &[u8]) -> &str {
    let mut spaces = 0;
    for (i, &b) in line.iter().enumerate() {
        if b == b' ' {
            spaces += 1;
            if spaces == 4 {
                return as_str(&line[i + 1..]);
            }
        }
    }
    ""
}

/// Bytes of text checked as UTF-8 when the manifest was parsed (cut at ASCII spaces and
/// newlines, so still UTF-8).
fn as_str(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap_or_default()
}

fn nibble(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        _ => c.wrapping_sub(b'a').wrapping_add(10) & 15,
    }
}

impl Manifest {
    /// Builds a manifest from walked entries: sorts them bytewise by path. The walker
    /// produces well-formed, unique paths, so only the order is established here.
    pub fn from_walk(mut entries: Vec<Entry>, prefix: Option<String>) -> Manifest {
        entries.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
        Manifest {
            storage: Storage::Entries(entries),
            prefix,
        }
    }

    pub fn entries(&self) -> Entries<'_> {
        Entries { m: self }
    }

    pub fn len(&self) -> usize {
        match &self.storage {
            Storage::Entries(v) => v.len(),
            Storage::Text { starts, .. } => starts.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn is_absolute(&self) -> bool {
        self.prefix.is_some()
    }

    /// The path as rendered (absolute when the manifest has a prefix).
    pub fn display_path<'a>(&'a self, e: &EntryRef<'a>) -> std::borrow::Cow<'a, str> {
        match &self.prefix {
            None => std::borrow::Cow::Borrowed(e.path),
            Some(p) => std::borrow::Cow::Owned(format!("{p}{}", &e.path[1..])),
        }
    }

    /// The canonical text when the manifest is held as its text (a stored manifest): what
    /// [`Manifest::render`] returns, without the copy.
    pub fn text(&self) -> Option<&str> {
        match &self.storage {
            Storage::Text { text, .. } => Some(as_str(text)),
            Storage::Entries(_) => None,
        }
    }

    /// The canonical text: lines joined with `\n`, no trailing newline (`Manifest.raw`).
    pub fn render(&self) -> String {
        if let Storage::Text { text, .. } = &self.storage {
            return as_str(text).to_owned();
        }
        let mut out = String::new();
        self.render_into(self.len() * 110, usize::MAX, |text| {
            out = std::mem::take(text)
        });
        out
    }

    /// Renders the canonical text into a buffer of `capacity`, handing it to `flush`
    /// whenever it holds `flush_at` bytes or more, and once at the end (`flush` empties it).
    fn render_into(&self, capacity: usize, flush_at: usize, mut flush: impl FnMut(&mut String)) {
        let mut buf = String::with_capacity(capacity);
        for (i, e) in self.entries().iter().enumerate() {
            if i > 0 {
                buf.push('\n');
            }
            self.write_line(&mut buf, &e);
            if buf.len() >= flush_at {
                flush(&mut buf);
            }
        }
        flush(&mut buf);
    }

    /// Appends the canonical line of `e` (without its newline).
    fn write_line(&self, out: &mut String, e: &EntryRef<'_>) {
        out.push(e.kind.letter());
        let _ = write!(out, " {:o} ", e.mode);
        push_hex(out, &e.checksum);
        let _ = write!(out, " {} ", e.size);
        match &self.prefix {
            None => out.push_str(e.path),
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
        if let Storage::Text { text, .. } = &self.storage {
            h.update(text);
        } else {
            self.render_into(FLUSH + 512, FLUSH, |text| {
                h.update(text.as_bytes());
                text.clear();
            });
        }
        h.update(b"\n");
        *h.finalize().as_bytes()
    }

    /// Writes the stored form, the canonical text and one newline (what hashes to the id),
    /// without building it as one string first.
    pub fn write_stored(&self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        const FLUSH: usize = 256 * 1024;
        if let Storage::Text { text, .. } = &self.storage {
            out.write_all(text)?;
        } else {
            let mut failed = Ok(());
            self.render_into(FLUSH + 512, FLUSH, |text| {
                if failed.is_ok() {
                    failed = out.write_all(text.as_bytes());
                }
                text.clear();
            });
            failed?;
        }
        out.write_all(b"\n")
    }

    pub fn id_hex(&self) -> String {
        to_hex(&self.id())
    }

    /// Parses and validates manifest text (SPEC §1, §5). Accepts `\n` and `\r\n`, skips
    /// blank lines and `#` comments, re-sorts. Rejects anything malformed or unsafe with
    /// `INVALID_MANIFEST` / `UNSAFE_PATH`, naming the line.
    pub fn parse(text: &str) -> Result<Manifest> {
        Manifest::parse_owned(text.as_bytes().to_vec())
    }

    /// [`Manifest::parse`] of bytes the manifest may keep: canonical text (the usual case
    /// for a stored manifest, one trailing newline allowed) becomes the manifest's storage
    /// without a copy. Bytes that are not UTF-8 are `INVALID_MANIFEST`.
    pub fn parse_owned(mut data: Vec<u8>) -> Result<Manifest> {
        if std::str::from_utf8(&data).is_err() {
            return Err(Error::new(
                Code::InvalidManifest,
                "invalid manifest: not UTF-8 text",
            ));
        }
        let Some(starts) = canonical_starts(&data)? else {
            return Manifest::parse_general(as_str(&data));
        };
        if data.last() == Some(&b'\n') {
            data.pop();
        }
        let m = Manifest {
            storage: Storage::Text { text: data, starts },
            prefix: None,
        };
        check_structure(m.entries())?;
        Ok(m)
    }

    fn parse_general(text: &str) -> Result<Manifest> {
        let mut entries = Vec::with_capacity(text.len() / 100 + 1);
        for (n, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            entries.push(parse_line(line).map(|e| e.to_owned_entry()).map_err(|m| {
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
        let m = Manifest {
            storage: Storage::Entries(entries),
            prefix: None,
        };
        check_structure(m.entries())?;
        Ok(m)
    }

    /// Logical and physical sizes (see `SizeStats`): logical bytes (sum of file sizes),
    /// physical bytes (sum over distinct checksums), number of files, number of objects.
    ///
    /// The sums are exact: each size fits in 64 bits but two of them may not (a manifest
    /// from a store can claim anything, and sparse files of exabytes exist), so they are
    /// added as 128-bit numbers, which no count of 64-bit sizes a manifest can hold
    /// overflows. A saturated or wrapped total would be a wrong figure given as right.
    pub fn size_stats(&self) -> (u128, u128, u64, u64) {
        let mut seen: HashSet<Digest> = HashSet::new();
        let (mut logical, mut physical, mut files) = (0u128, 0u128, 0u64);
        for e in self.entries() {
            if e.kind == Kind::File {
                files += 1;
                logical += u128::from(e.size);
                if seen.insert(e.checksum) {
                    physical += u128::from(e.size);
                }
            }
        }
        (logical, physical, files, seen.len() as u64)
    }

    /// The distinct objects (checksum, size) the snapshot references, in manifest order.
    pub fn objects(&self) -> Vec<(Digest, u64)> {
        let mut seen: HashSet<Digest> = HashSet::new();
        self.entries()
            .iter()
            .filter(|e| e.kind == Kind::File && seen.insert(e.checksum))
            .map(|e| (e.checksum, e.size))
            .collect()
    }
}

/// Where each line of `text` starts, when `text` is canonical manifest text: sorted, with
/// canonical numbers, no CR, blank lines or comments (one trailing newline allowed). `None`
/// when it is not (then [`Manifest::parse_general`] decides). A line that does not parse is
/// reported at once, as `parse_general` would: no line was skipped before it, so it is the
/// same first bad line, with the same number.
fn canonical_starts(text: &[u8]) -> Result<Option<Vec<u64>>> {
    let body = text.strip_suffix(b"\n").unwrap_or(text);
    if body.is_empty() {
        return Ok(None);
    }
    let mut starts: Vec<u64> = Vec::with_capacity(body.len() / 100 + 1);
    let mut prev: &str = "";
    let mut pos = 0usize;
    let mut canon = String::with_capacity(32);
    for (n, line) in body.split(|&b| b == b'\n').enumerate() {
        let start = pos;
        pos += line.len() + 1;
        if line.is_empty() || line[0] == b'#' || line.last() == Some(&b'\r') {
            return Ok(None);
        }
        let Ok(line) = std::str::from_utf8(line) else {
            return Ok(None);
        };
        if line.trim().is_empty() {
            return Ok(None);
        }
        let e = parse_line(line).map_err(|m| {
            Error::new(
                m.0,
                format!(
                    "invalid manifest line {}: {}: {}",
                    n + 1,
                    m.1,
                    escape_bytes(line.as_bytes())
                ),
            )
        })?;
        // Canonical numbers: what `write_line` renders, byte for byte.
        canon.clear();
        let _ = write!(canon, "{} {:o} ", e.kind.letter(), e.mode);
        if !line.starts_with(canon.as_str()) {
            return Ok(None);
        }
        let rest = &line[canon.len() + 65..];
        canon.clear();
        let _ = write!(canon, "{} ", e.size);
        if !rest.starts_with(canon.as_str()) {
            return Ok(None);
        }
        if n > 0 && prev.as_bytes() >= e.path.as_bytes() {
            return Ok(None); // unsorted or duplicated: the general path sorts and reports
        }
        prev = e.path;
        starts.push(start as u64);
    }
    Ok(Some(starts))
}

/// BLAKE3 of `text + "\n"`.
pub fn id_of_text(text: &str) -> Digest {
    let mut h = blake3::Hasher::new();
    h.update(text.as_bytes());
    h.update(b"\n");
    *h.finalize().as_bytes()
}

type LineError = (Code, &'static str);

fn parse_line(line: &str) -> std::result::Result<EntryRef<'_>, LineError> {
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
    Ok(EntryRef {
        kind,
        mode,
        checksum,
        size,
        path,
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
///
/// Only directory names are kept in a set: a file and a directory of one name (`./a`,
/// `./a/`) are found by a binary search from the directory, and exact duplicates are
/// neighbours once sorted. A name set of every entry would cost ~35 bytes an entry.
fn check_structure(entries: Entries<'_>) -> Result<()> {
    let invalid = |msg: String| Error::new(Code::InvalidManifest, msg);
    if entries.is_empty() || entries.path(0) != "./" {
        return Err(invalid(
            "invalid manifest: no root directory entry ./".into(),
        ));
    }
    let mut dirs: HashSet<&str> = HashSet::new();
    let mut prev = "";
    for i in 0..entries.len() {
        let e = entries.get(i);
        if i > 0 && prev == e.path {
            return Err(invalid(format!(
                "invalid manifest: duplicate path {}",
                escape_bytes(e.path.as_bytes())
            )));
        }
        prev = e.path;
        let name = e.rel();
        if e.kind == Kind::Directory {
            // The file of the same name sorts before the directory (a prefix of its path).
            if i > 0
                && entries
                    .find(&e.path.as_bytes()[..e.path.len() - 1])
                    .is_some()
            {
                return Err(invalid(format!(
                    "invalid manifest: {} is both a file and a directory",
                    escape_bytes(e.path.as_bytes())
                )));
            }
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
        assert_eq!(m.entries().get(1).path, "./a b");
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
        let paths: Vec<_> = m.entries().iter().map(|e| e.path).collect();
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
