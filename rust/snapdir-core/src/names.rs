//! Release versions and version specs for snapdir's names (`cal-kit@>=1.2,<2`).
//!
//! Versions are semver 2.0, parsed and ordered by the `semver` crate (precedence exactly as
//! the semver specification says). Build metadata is refused: two versions that differ only
//! in it have equal precedence, and would be two store keys for one release. A leading `v`
//! is accepted and dropped.
//!
//! A spec is our grammar, layered on the crate's versions: comparators `== != >= <= > <
//! ~= ^ ~`, a bare version (`1.2.3` is `==1.2.3`, `1.2` is `1.2.*`), wildcards (`1.2.*`,
//! `*`), and a comma for AND (`>=1.2,<2`). Partial versions follow Cargo (`>1.2` is
//! `>=1.3.0`, `<=1.2` is `<1.3.0`, `^0.2` is `>=0.2.0,<0.3.0`); `~=` is PEP 440's
//! compatible release (`~=1.2` is `>=1.2.0,<2.0.0`, `~=1.2.3` is `>=1.2.3,<1.3.0`).
//! Prereleases match only when `pre` is asked for or when a comparator names a prerelease
//! of the same `major.minor.patch` (Cargo's rule); an exclusive upper bound never admits the
//! prereleases of the bound itself (`<2` does not match `2.0.0-rc.1`, as PEP 440 says),
//! unless the spec names a prerelease of that version (`>=2.0.0-rc.1,<2.0.0`).

use std::cmp::Ordering;

use semver::{BuildMetadata, Prerelease, Version};

/// The longest version or spec text accepted (a store key segment is at most 255 bytes).
pub const MAX_TEXT: usize = 128;

/// Parse a release version: semver 2.0, an optional leading `v`, no build metadata.
pub fn parse_version(text: &str) -> Result<Version, String> {
    if text.len() > MAX_TEXT {
        return Err(format!("version is longer than {MAX_TEXT} characters"));
    }
    let body = text.strip_prefix('v').unwrap_or(text);
    let v = Version::parse(body).map_err(|e| format!("invalid version {text:?}: {e}"))?;
    if v.build != BuildMetadata::EMPTY {
        return Err(format!(
            "invalid version {text:?}: build metadata (+{}) is not allowed (it does not \
             take part in precedence, so two releases would compare equal)",
            v.build
        ));
    }
    Ok(v)
}

/// A version as a comparator names it: `1`, `1.2`, `1.2.3`, `1.2.3-rc.1` (`v` dropped).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Partial {
    major: u64,
    minor: Option<u64>,
    patch: Option<u64>,
    pre: Prerelease,
}

impl Partial {
    fn parse(text: &str, whole: &str) -> Result<(Partial, bool), String> {
        let bad = |why: &str| format!("invalid version spec {whole:?}: {why}");
        let body = text.strip_prefix('v').unwrap_or(text);
        if body == "*" {
            return Err(bad("'*' alone cannot follow an operator"));
        }
        let (nums, wildcard) = match body.strip_suffix(".*") {
            Some(n) => (n, true),
            None => (body, false),
        };
        let parts: Vec<&str> = nums.splitn(3, '.').collect();
        if parts.len() == 3 {
            // a full version (maybe with a prerelease): the crate parses it
            if wildcard {
                return Err(bad(
                    "a wildcard needs at most major.minor before it (1.2.*)",
                ));
            }
            let v = parse_version(nums).map_err(|e| bad(e.as_str()))?;
            return Ok((
                Partial {
                    major: v.major,
                    minor: Some(v.minor),
                    patch: Some(v.patch),
                    pre: v.pre,
                },
                false,
            ));
        }
        let num = |s: &str| -> Result<u64, String> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("{s:?} is not a version number")));
            }
            if s.len() > 1 && s.starts_with('0') {
                return Err(bad(&format!("{s:?} has a leading zero")));
            }
            s.parse::<u64>()
                .map_err(|_| bad(&format!("{s:?} is too large")))
        };
        let major = num(parts[0])?;
        let minor = match parts.get(1) {
            Some(s) => Some(num(s)?),
            None => None,
        };
        Ok((
            Partial {
                major,
                minor,
                patch: None,
                pre: Prerelease::EMPTY,
            },
            wildcard,
        ))
    }

    fn is_full(&self) -> bool {
        self.patch.is_some()
    }

    /// The lowest version this names (`1.2` -> `1.2.0`).
    fn low(&self) -> Version {
        let mut v = Version::new(self.major, self.minor.unwrap_or(0), self.patch.unwrap_or(0));
        v.pre = self.pre.clone();
        v
    }

    /// The first version past what a partial names (`1` -> `2.0.0`, `1.2` -> `1.3.0`).
    fn next(&self) -> Version {
        match (self.minor, self.patch) {
            (None, _) => Version::new(self.major.saturating_add(1), 0, 0),
            (Some(m), None) => Version::new(self.major, m.saturating_add(1), 0),
            (Some(m), Some(p)) => Version::new(self.major, m, p.saturating_add(1)),
        }
    }

    /// Field-wise equality with the fields given (a partial is a wildcard); the
    /// prerelease only when the version is full.
    fn same(&self, v: &Version) -> bool {
        v.major == self.major
            && self.minor.is_none_or(|m| v.minor == m)
            && self.patch.is_none_or(|p| v.patch == p)
            && (!self.is_full() || v.pre == self.pre)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Cmp {
    Any,
    Eq(Partial),
    Ne(Partial),
    /// lower bound (inclusive?), upper bound (exclusive), from the operators that are ranges
    Range {
        low: Option<(Version, bool)>,
        high: Option<(Version, bool)>,
    },
}

/// A parsed version spec: comparators that must all match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    cmps: Vec<Cmp>,
    /// The prereleases some comparator names (`major.minor.patch` of each): these make
    /// the prereleases of that triple eligible (Cargo's rule).
    named_pre: Vec<(u64, u64, u64)>,
    text: String,
}

fn range(low: Option<(Version, bool)>, high: Option<(Version, bool)>) -> Cmp {
    Cmp::Range { low, high }
}

fn parse_comparator(raw: &str, whole: &str) -> Result<Cmp, String> {
    let bad = |why: &str| format!("invalid version spec {whole:?}: {why}");
    let s = raw.trim();
    if s.is_empty() {
        return Err(bad("an empty comparator (a stray comma?)"));
    }
    if s == "*" {
        return Ok(Cmp::Any);
    }
    let ops = ["==", "!=", ">=", "<=", "~=", ">", "<", "^", "~", "="];
    let (op, rest) = ops
        .iter()
        .find_map(|op| s.strip_prefix(op).map(|r| (*op, r.trim_start())))
        .unwrap_or(("", s));
    if op == "=" {
        return Err(bad("'=' is written '==' here"));
    }
    if rest.is_empty() {
        return Err(bad(&format!("{op:?} needs a version after it")));
    }
    if !rest
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'*' || b == b'+')
    {
        return Err(bad(&format!("unexpected characters in {rest:?}")));
    }
    let (p, wildcard) = Partial::parse(rest, whole)?;
    if wildcard && !matches!(op, "" | "==" | "!=") {
        return Err(bad(&format!("a wildcard cannot follow {op:?}")));
    }
    let full = p.is_full();
    Ok(match op {
        "" | "==" => Cmp::Eq(p),
        "!=" => Cmp::Ne(p),
        ">=" => range(Some((p.low(), true)), None),
        ">" if full => range(Some((p.low(), false)), None),
        ">" => range(Some((p.next(), true)), None),
        "<" => range(None, Some((p.low(), false))),
        "<=" if full => range(None, Some((p.low(), true))),
        "<=" => range(None, Some((p.next(), false))),
        "~" => {
            // Cargo: ~1.2.3 and ~1.2 stay within 1.2; ~1 within 1
            let upper = match p.minor {
                None => Version::new(p.major.saturating_add(1), 0, 0),
                Some(m) => Version::new(p.major, m.saturating_add(1), 0),
            };
            range(Some((p.low(), true)), Some((upper, false)))
        }
        "^" => {
            let upper = if p.major > 0 || p.minor.is_none() {
                Version::new(p.major.saturating_add(1), 0, 0)
            } else if p.minor != Some(0) || p.patch.is_none() {
                Version::new(0, p.minor.unwrap_or(0).saturating_add(1), 0)
            } else {
                Version::new(0, 0, p.patch.unwrap_or(0).saturating_add(1))
            };
            range(Some((p.low(), true)), Some((upper, false)))
        }
        "~=" => {
            let upper = match (p.minor, p.patch) {
                (None, _) => return Err(bad("'~=' needs at least major.minor (~=1.2)")),
                (Some(_), None) => Version::new(p.major.saturating_add(1), 0, 0),
                (Some(m), Some(_)) => Version::new(p.major, m.saturating_add(1), 0),
            };
            range(Some((p.low(), true)), Some((upper, false)))
        }
        _ => unreachable!("operator list above"),
    })
}

impl Spec {
    /// Parse a spec; the error names the spec and what is wrong with it.
    pub fn parse(text: &str) -> Result<Spec, String> {
        if text.len() > 4 * MAX_TEXT {
            return Err(format!(
                "version spec is longer than {} characters",
                4 * MAX_TEXT
            ));
        }
        if text.trim().is_empty() {
            return Err("an empty version spec".to_string());
        }
        let mut cmps = Vec::new();
        let mut named_pre = Vec::new();
        for raw in text.split(',') {
            let c = parse_comparator(raw, text)?;
            let mut note = |v: &Version| {
                if !v.pre.is_empty() {
                    named_pre.push((v.major, v.minor, v.patch));
                }
            };
            match &c {
                Cmp::Eq(p) | Cmp::Ne(p) if p.is_full() => note(&p.low()),
                Cmp::Range { low, high } => {
                    if let Some((v, _)) = low {
                        note(v);
                    }
                    if let Some((v, _)) = high {
                        note(v);
                    }
                }
                _ => {}
            }
            cmps.push(c);
        }
        if cmps.len() > 16 {
            return Err(format!(
                "invalid version spec {text:?}: at most 16 comparators"
            ));
        }
        Ok(Spec {
            cmps,
            named_pre,
            text: text.to_string(),
        })
    }

    /// The version a spec pins exactly (`==1.2.3`, `1.2.3`), if it is one such comparator:
    /// the only kind of spec that may resolve to a yanked release (PEP 592).
    pub fn exact(&self) -> Option<Version> {
        match self.cmps.as_slice() {
            [Cmp::Eq(p)] if p.is_full() => Some(p.low()),
            _ => None,
        }
    }

    /// Whether `v` matches, with `pre` admitting every prerelease.
    pub fn matches(&self, v: &Version, pre: bool) -> bool {
        if !v.pre.is_empty() && !pre && !self.named_pre.contains(&(v.major, v.minor, v.patch)) {
            return false;
        }
        self.cmps.iter().all(|c| match c {
            Cmp::Any => true,
            Cmp::Eq(p) => p.same(v),
            Cmp::Ne(p) => !p.same(v),
            Cmp::Range { low, high } => {
                let above = match low {
                    None => true,
                    Some((l, true)) => v.cmp_precedence(l) != Ordering::Less,
                    Some((l, false)) => v.cmp_precedence(l) == Ordering::Greater,
                };
                let below = match high {
                    None => true,
                    Some((h, true)) => v.cmp_precedence(h) != Ordering::Greater,
                    Some((h, false)) => {
                        let triple = (v.major, v.minor, v.patch);
                        // `<2` keeps 2.0.0's own prereleases out, unless the spec names
                        // one of them (`>=2.0.0-rc.1,<2.0.0`)
                        let own_pre = h.pre.is_empty()
                            && !v.pre.is_empty()
                            && triple == (h.major, h.minor, h.patch);
                        let admitted = !own_pre || self.named_pre.contains(&triple);
                        admitted && v.cmp_precedence(h) == Ordering::Less
                    }
                };
                above && below
            }
        })
    }

    /// The text parsed.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// The index of the highest version in `versions` that `spec` matches, leaving out the
/// yanked ones unless the spec pins that very version. `versions` must already be valid.
pub fn resolve(spec: &Spec, versions: &[Version], yanked: &[bool], pre: bool) -> Option<usize> {
    let exact = spec.exact();
    let mut best: Option<usize> = None;
    for (i, v) in versions.iter().enumerate() {
        let is_yanked = yanked.get(i).copied().unwrap_or(false);
        if is_yanked && exact.as_ref() != Some(v) {
            continue;
        }
        if !spec.matches(v, pre || exact.as_ref() == Some(v)) {
            continue;
        }
        if best.is_none_or(|b| v.cmp_precedence(&versions[b]) == Ordering::Greater) {
            best = Some(i);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(spec: &str, versions: &[&str], pre: bool) -> Option<String> {
        let s = Spec::parse(spec).unwrap();
        let vs: Vec<Version> = versions.iter().map(|v| parse_version(v).unwrap()).collect();
        resolve(&s, &vs, &[], pre).map(|i| vs[i].to_string())
    }

    #[test]
    fn ranges_and_prereleases() {
        let vs = ["1.0.0", "1.2.0", "1.9.9", "2.0.0-rc.1", "2.0.0"];
        assert_eq!(pick(">=1.2,<2", &vs, false).as_deref(), Some("1.9.9"));
        assert_eq!(pick("<2", &vs, true).as_deref(), Some("1.9.9"));
        assert_eq!(pick(">=2.0.0-rc.1", &vs, false).as_deref(), Some("2.0.0"));
        assert_eq!(
            pick("==2.0.0-rc.1", &vs, false).as_deref(),
            Some("2.0.0-rc.1")
        );
        assert_eq!(pick("^1", &vs, false).as_deref(), Some("1.9.9"));
        assert!(parse_version("1.0.0+build").is_err());
        assert_eq!(parse_version("v1.2.3").unwrap().to_string(), "1.2.3");
    }
}
