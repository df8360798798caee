//! Access control lists: which identity may produce to, consume from or
//! administer which topics and consumer groups.
//!
//! The file (TOML, `--acl FILE` or `[acl] file`) holds `[[allow]]` and
//! `[[deny]]` rules in the spirit of Kafka's ACLs (allow and deny, deny
//! wins), NATS' permissions (allow/deny lists of subject patterns per user)
//! and Mosquitto's `acl_file` (`pattern` lines with `%c` for the client):
//!
//! ```toml
//! [[allow]]
//! identities = ["sensor-*"]            # who: certificate names (glob)
//! operations = ["produce"]             # produce, consume, admin
//! topics = ["telemetry", "devices.{identity}"]
//!
//! [[allow]]
//! identities = ["dashboard"]
//! operations = ["consume"]
//! topics = ["telemetry"]
//! groups = ["dashboard"]               # consumer groups it may use
//!
//! [[deny]]
//! identities = ["sensor-13"]
//! operations = ["produce"]
//! topics = ["*"]
//! ```
//!
//! Semantics: when ACLs are on, everything is denied unless an allow rule
//! matches and no deny rule does. A rule matches an identity if one of its
//! `identities` patterns does, an operation if it is listed, and a topic
//! (or group) if one of its `topics` (or `groups`) patterns does. In
//! patterns `*` matches any run of characters (including none, and dots);
//! in topic and group patterns `{identity}` stands for the identity itself,
//! taken literally. Connections without a certificate (no client CA) have
//! the identity `anonymous`.
//!
//! What each operation covers (the broker maps requests, see
//! `broker::authorize`): `produce` a topic: produce to it (creating it on
//! first use if auto-creation is on); `consume` a topic: fetch, offsets by
//! time; `consume` a group: join it, commit and read its offsets, describe
//! it; `admin` a topic: create, delete, change settings; `admin` a group:
//! delete it, reset its offsets, describe it. Describing a topic, its
//! watermarks and counters needs any of the three on it; listings show
//! what the caller has some right on.
//!
//! This module is pure policy: it parses, matches and explains. It knows
//! nothing of connections or requests, and logs nothing.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde::Deserialize;

/// Largest ACL file read, in bytes.
pub const ACL_FILE_BYTES_MAX: u64 = 1 << 20;
/// Most rules in an ACL file (allow and deny together).
pub const ACL_RULES_MAX: usize = 10_000;
/// The placeholder for the caller's identity in topic and group patterns.
pub const IDENTITY_PLACEHOLDER: &str = "{identity}";

/// What a caller wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Produce,
    Consume,
    Admin,
}

impl Operation {
    pub const ALL: [Operation; 3] = [Operation::Produce, Operation::Consume, Operation::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Consume => "consume",
            Operation::Admin => "admin",
        }
    }

    /// Parses `produce`, `consume` or `admin`.
    pub fn parse(text: &str) -> Result<Operation, String> {
        Operation::ALL
            .into_iter()
            .find(|op| op.name() == text)
            .ok_or_else(|| format!("unknown operation {text:?}: use produce, consume or admin"))
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What an operation is done on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    Topic(&'a str),
    Group(&'a str),
}

impl fmt::Display for Resource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::Topic(t) => write!(f, "topic {t}"),
            Resource::Group(g) => write!(f, "group {g}"),
        }
    }
}

/// Whether a rule allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// One part of a pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    /// `*`: any run of characters.
    Any,
    /// `{identity}`: the caller's identity, literally.
    Identity,
}

/// A glob pattern (`*`, and `{identity}` in topic and group patterns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    parts: Vec<Part>,
}

impl Pattern {
    fn parse(text: &str, allow_identity: bool) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("an empty pattern matches nothing: remove it or use \"*\"".into());
        }
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if c == '*' {
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                if parts.last() != Some(&Part::Any) {
                    parts.push(Part::Any);
                }
                rest = &rest[1..];
            } else if rest.starts_with(IDENTITY_PLACEHOLDER) {
                if !allow_identity {
                    return Err(format!(
                        "{IDENTITY_PLACEHOLDER} may only appear in topic and group patterns"
                    ));
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Identity);
                rest = &rest[IDENTITY_PLACEHOLDER.len()..];
            } else {
                literal.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        Ok(Pattern {
            text: text.to_string(),
            parts,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` matches, with `{identity}` standing for `identity`.
    pub fn matches(&self, name: &str, identity: &str) -> bool {
        // Literal segments between `*`s, the identity substituted (as a
        // literal: an identity containing `*` matches only itself).
        let mut segments: Vec<(bool, String)> = Vec::with_capacity(self.parts.len());
        let mut current = String::new();
        let mut anchored_start = true;
        for part in &self.parts {
            match part {
                Part::Literal(l) => current.push_str(l),
                Part::Identity => current.push_str(identity),
                Part::Any => {
                    segments.push((anchored_start, std::mem::take(&mut current)));
                    anchored_start = false;
                }
            }
        }
        let ends_with_any = self.parts.last() == Some(&Part::Any);
        if !ends_with_any {
            segments.push((anchored_start, current));
        }
        glob_match(&segments, ends_with_any, name)
    }
}

/// `segments` are the literal runs between stars; the first is anchored at
/// the start unless the pattern starts with `*`; the last is anchored at
/// the end unless the pattern ends with `*`.
fn glob_match(segments: &[(bool, String)], ends_with_any: bool, name: &str) -> bool {
    let mut rest = name;
    let count = segments.len();
    for (i, (anchored_start, segment)) in segments.iter().enumerate() {
        let last = i + 1 == count;
        if *anchored_start {
            if last && !ends_with_any {
                return rest == segment;
            }
            let Some(after) = rest.strip_prefix(segment.as_str()) else {
                return false;
            };
            rest = after;
        } else if last && !ends_with_any {
            return rest.ends_with(segment.as_str());
        } else {
            // Leftmost occurrence: greedy-leftmost is optimal for globs
            // whose only wildcard is `*`.
            let Some(at) = rest.find(segment.as_str()) else {
                return false;
            };
            rest = &rest[at + segment.len()..];
        }
    }
    // Only reached when the pattern ends with `*` (or has no segments).
    ends_with_any || rest.is_empty()
}

/// A rule as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleText {
    identities: Vec<String>,
    operations: Vec<String>,
    #[serde(default)]
    topics: Vec<String>,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileText {
    #[serde(default)]
    allow: Vec<toml::Spanned<RuleText>>,
    #[serde(default)]
    deny: Vec<toml::Spanned<RuleText>>,
}

/// One rule, checked and compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    pub effect: Effect,
    /// 1-based position among the rules of its kind (`[[allow]]` number n).
    pub number: usize,
    /// 1-based line of the rule in the file.
    pub line: usize,
    pub identities: Vec<Pattern>,
    pub operations: Vec<Operation>,
    pub topics: Vec<Pattern>,
    pub groups: Vec<Pattern>,
}

impl Rule {
    fn matches_identity(&self, identity: &str) -> bool {
        self.identities
            .iter()
            .any(|p| p.matches(identity, identity))
    }

    fn matches(&self, identity: &str, op: Operation, resource: Resource<'_>) -> bool {
        if !self.operations.contains(&op) || !self.matches_identity(identity) {
            return false;
        }
        let (patterns, name) = match resource {
            Resource::Topic(t) => (&self.topics, t),
            Resource::Group(g) => (&self.groups, g),
        };
        patterns.iter().any(|p| p.matches(name, identity))
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |patterns: &[Pattern]| {
            patterns
                .iter()
                .map(|p| format!("{:?}", p.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let kind = match self.effect {
            Effect::Allow => "allow",
            Effect::Deny => "deny",
        };
        let ops: Vec<&str> = self.operations.iter().map(|o| o.name()).collect();
        write!(
            f,
            "[[{kind}]] #{} (line {}): identities [{}], operations [{}]",
            self.number,
            self.line,
            list(&self.identities),
            ops.join(", ")
        )?;
        if !self.topics.is_empty() {
            write!(f, ", topics [{}]", list(&self.topics))?;
        }
        if !self.groups.is_empty() {
            write!(f, ", groups [{}]", list(&self.groups))?;
        }
        Ok(())
    }
}

/// A decision and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by this allow rule (index into [`Acl::rules`]).
    Allowed { rule: usize },
    /// Denied by this deny rule.
    Denied { rule: usize },
    /// No allow rule matched (default deny).
    NoRule,
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allowed { .. })
    }
}

/// A loaded ACL file.
#[derive(Debug, Clone)]
pub struct Acl {
    pub path: PathBuf,
    pub rules: Vec<Rule>,
}

/// Why an ACL file was refused: the file, the place, the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct AclError {
    pub path: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn check_pattern_chars(kind: &str, text: &str) -> Result<(), String> {
    let bare = text.replace(IDENTITY_PLACEHOLDER, "");
    if let Some(bad) = bare
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*')))
    {
        return Err(format!(
            "{kind} pattern {text:?} has {bad:?}: names are made of [a-zA-Z0-9._-]; \
             use * for any run of characters (MQTT's + and # do not apply)"
        ));
    }
    Ok(())
}

impl Acl {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Acl, AclError> {
        let error = |message: String| AclError {
            path: path.to_path_buf(),
            line: None,
            message,
        };
        let meta = std::fs::metadata(path).map_err(|e| error(format!("cannot read: {e}")))?;
        if meta.len() > ACL_FILE_BYTES_MAX {
            return Err(error(format!(
                "is {} bytes; an ACL file may have at most {ACL_FILE_BYTES_MAX}",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| error(format!("cannot read: {e}")))?;
        Acl::parse(path, &text)
    }

    /// Parses ACL text; `path` is only used in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Acl, AclError> {
        let at = |line: Option<usize>, message: String| AclError {
            path: path.to_path_buf(),
            line,
            message,
        };
        let file: FileText = toml::from_str(text).map_err(|e| {
            at(
                e.span().map(|s| line_of(text, s.start)),
                e.message().trim_end().to_string(),
            )
        })?;
        if file.allow.len() + file.deny.len() > ACL_RULES_MAX {
            return Err(at(
                None,
                format!("has more than {ACL_RULES_MAX} rules; use patterns to say more with fewer"),
            ));
        }
        let mut rules = Vec::with_capacity(file.allow.len() + file.deny.len());
        for (effect, list) in [(Effect::Deny, &file.deny), (Effect::Allow, &file.allow)] {
            for (i, spanned) in list.iter().enumerate() {
                let line = line_of(text, spanned.span().start);
                let rule = compile(effect, i + 1, line, spanned.get_ref())
                    .map_err(|message| at(Some(line), message))?;
                rules.push(rule);
            }
        }
        Ok(Acl {
            path: path.to_path_buf(),
            rules,
        })
    }

    /// Decides whether `identity` may do `op` on `resource`: a matching deny
    /// rule denies, else a matching allow rule allows, else denied.
    pub fn decide(&self, identity: &str, op: Operation, resource: Resource<'_>) -> Decision {
        // Deny rules come first in `rules`.
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.matches(identity, op, resource) {
                return match rule.effect {
                    Effect::Deny => Decision::Denied { rule: i },
                    Effect::Allow => Decision::Allowed { rule: i },
                };
            }
        }
        Decision::NoRule
    }

    /// Whether any of `ops` is allowed on `resource`.
    pub fn allows_any(&self, identity: &str, ops: &[Operation], resource: Resource<'_>) -> bool {
        ops.iter()
            .any(|op| self.decide(identity, *op, resource).is_allowed())
    }

    /// Whether some allow rule gives `identity` operation `op` at all.
    pub fn has_any(&self, identity: &str, op: Operation) -> bool {
        self.rules.iter().any(|r| {
            r.effect == Effect::Allow && r.operations.contains(&op) && r.matches_identity(identity)
        })
    }

    /// A decision in words, for `eddy acl check` and denial messages.
    pub fn explain(&self, identity: &str, op: Operation, resource: Resource<'_>) -> String {
        let file = self.path.display();
        match self.decide(identity, op, resource) {
            Decision::Allowed { rule } => format!(
                "allowed: {identity} may {op} {resource}, by {file} {}",
                self.rules[rule]
            ),
            Decision::Denied { rule } => format!(
                "denied: {identity} may not {op} {resource}, by {file} {} (deny wins over allow)",
                self.rules[rule]
            ),
            Decision::NoRule => {
                let about: Vec<String> = self
                    .rules
                    .iter()
                    .filter(|r| r.matches_identity(identity))
                    .map(|r| r.to_string())
                    .collect();
                let mut text = format!(
                    "denied: {identity} may not {op} {resource}: no rule in {file} allows it (default deny)"
                );
                if about.is_empty() {
                    text.push_str(&format!("; no rule names identity {identity}"));
                } else {
                    text.push_str(&format!("; rules for {identity}:"));
                    for line in about {
                        text.push_str("\n  ");
                        text.push_str(&line);
                    }
                }
                text
            }
        }
    }
}

fn compile(effect: Effect, number: usize, line: usize, r: &RuleText) -> Result<Rule, String> {
    if r.identities.is_empty() {
        return Err("identities is empty: name who the rule is for (\"*\" for everyone)".into());
    }
    if r.operations.is_empty() {
        return Err("operations is empty: use produce, consume and/or admin".into());
    }
    let operations = r
        .operations
        .iter()
        .map(|o| Operation::parse(o))
        .collect::<Result<Vec<_>, _>>()?;
    if r.topics.is_empty() && r.groups.is_empty() {
        return Err("the rule names no topics and no groups, so it matches nothing".into());
    }
    if !r.groups.is_empty() && operations == [Operation::Produce] {
        return Err(
            "groups apply to consume and admin, not produce: move them to a consume rule".into(),
        );
    }
    let identities = r
        .identities
        .iter()
        .map(|p| Pattern::parse(p, false).map_err(|e| format!("identity pattern {p:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let resources = |kind: &str, list: &[String]| {
        list.iter()
            .map(|p| {
                check_pattern_chars(kind, p)?;
                Pattern::parse(p, true).map_err(|e| format!("{kind} pattern {p:?}: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()
    };
    let topics = resources("topic", &r.topics)?;
    let groups = resources("group", &r.groups)?;
    Ok(Rule {
        effect,
        number,
        line,
        identities,
        operations,
        topics,
        groups,
    })
}

/// The ACL in use, swappable while the server runs.
pub struct AclStore {
    path: PathBuf,
    current: RwLock<Arc<Acl>>,
}

impl AclStore {
    /// Loads `path`.
    pub fn load(path: &Path) -> Result<AclStore, AclError> {
        Ok(AclStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(Acl::load(path)?)),
        })
    }

    /// The rules in force now.
    pub fn current(&self) -> Arc<Acl> {
        self.current.read().expect("acl lock").clone()
    }
}

impl crate::reload::Reloadable for AclStore {
    fn name(&self) -> &'static str {
        "acl"
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    fn reload(&self) -> Result<String, String> {
        let acl = Acl::load(&self.path).map_err(|e| e.to_string())?;
        let count = acl.rules.len();
        *self.current.write().expect("acl lock") = Arc::new(acl);
        Ok(format!(
            "ACL file {} ({count} rules); every request from now on is checked against it",
            self.path.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        Acl::parse(Path::new("acl.toml"), text).unwrap()
    }

    fn refused(text: &str) -> AclError {
        Acl::parse(Path::new("acl.toml"), text).unwrap_err()
    }

    const EXAMPLE: &str = r#"
[[allow]]
identities = ["sensor-*"]
operations = ["produce"]
topics = ["telemetry", "devices.{identity}"]

[[allow]]
identities = ["dashboard"]
operations = ["consume"]
topics = ["telemetry", "alarms.*"]
groups = ["dashboard"]

[[allow]]
identities = ["ops.example.com"]
operations = ["admin", "produce", "consume"]
topics = ["*"]
groups = ["*"]

[[deny]]
identities = ["sensor-13"]
operations = ["produce"]
topics = ["*"]
"#;

    #[test]
    fn patterns_match_like_globs() {
        let p = |t: &str| Pattern::parse(t, true).unwrap();
        assert!(p("*").matches("", "x"));
        assert!(p("*").matches("anything.at.all", "x"));
        assert!(p("a*").matches("a", "x"));
        assert!(p("a*").matches("abc", "x"));
        assert!(!p("a*").matches("ba", "x"));
        assert!(p("*c").matches("abc", "x"));
        assert!(!p("*c").matches("cb", "x"));
        assert!(p("a*b*c").matches("a-b-c", "x"));
        assert!(p("a*b*c").matches("abbc", "x"));
        assert!(!p("a*b*c").matches("acb", "x"));
        assert!(p("a**c").matches("ac", "x"));
        assert!(p("exact").matches("exact", "x"));
        assert!(!p("exact").matches("exactly", "x"));
        assert!(!p("exact").matches("inexact", "x"));
        assert!(!p("ab*ba").matches("aba", "x"));
        assert!(p("ab*ba").matches("abba", "x"));
        assert!(p("devices.{identity}").matches("devices.pump-1", "pump-1"));
        assert!(!p("devices.{identity}").matches("devices.pump-2", "pump-1"));
        // The identity is literal: a "*" identity matches only "*".
        assert!(!p("devices.{identity}").matches("devices.pump-2", "*"));
        assert!(p("{identity}.*").matches("pump-1.raw", "pump-1"));
    }

    #[test]
    fn deny_wins_and_anything_not_allowed_is_denied() {
        let acl = acl(EXAMPLE);
        let t = Resource::Topic;
        assert!(acl
            .decide("sensor-1", Operation::Produce, t("telemetry"))
            .is_allowed());
        assert!(acl
            .decide("sensor-1", Operation::Produce, t("devices.sensor-1"))
            .is_allowed());
        assert_eq!(
            acl.decide("sensor-1", Operation::Produce, t("devices.sensor-2")),
            Decision::NoRule
        );
        assert_eq!(
            acl.decide("sensor-1", Operation::Consume, t("telemetry")),
            Decision::NoRule
        );
        assert!(matches!(
            acl.decide("sensor-13", Operation::Produce, t("telemetry")),
            Decision::Denied { .. }
        ));
        assert!(acl
            .decide(
                "dashboard",
                Operation::Consume,
                Resource::Group("dashboard")
            )
            .is_allowed());
        assert_eq!(
            acl.decide("dashboard", Operation::Consume, Resource::Group("other")),
            Decision::NoRule
        );
        assert_eq!(
            acl.decide("dashboard", Operation::Admin, t("telemetry")),
            Decision::NoRule
        );
        assert!(acl
            .decide("ops.example.com", Operation::Admin, Resource::Group("x"))
            .is_allowed());
        assert_eq!(
            acl.decide("anonymous", Operation::Consume, t("telemetry")),
            Decision::NoRule
        );
        assert!(acl.has_any("sensor-1", Operation::Produce));
        assert!(!acl.has_any("sensor-1", Operation::Consume));
        assert!(acl.allows_any(
            "sensor-1",
            &[Operation::Consume, Operation::Produce],
            t("telemetry")
        ));
    }

    #[test]
    fn explanations_name_the_rule_or_say_none_matched() {
        let acl = acl(EXAMPLE);
        let allowed = acl.explain("sensor-1", Operation::Produce, Resource::Topic("telemetry"));
        assert!(allowed.starts_with("allowed: "), "{allowed}");
        assert!(allowed.contains("[[allow]] #1 (line 2)"), "{allowed}");
        let denied = acl.explain(
            "sensor-13",
            Operation::Produce,
            Resource::Topic("telemetry"),
        );
        assert!(denied.contains("[[deny]] #1 (line 19)"), "{denied}");
        let none = acl.explain("sensor-1", Operation::Consume, Resource::Topic("telemetry"));
        assert!(none.contains("default deny"), "{none}");
        assert!(none.contains("[[allow]] #1"), "{none}");
        let stranger = acl.explain("who", Operation::Consume, Resource::Topic("telemetry"));
        assert!(
            stranger.contains("no rule names identity who"),
            "{stranger}"
        );
    }

    #[test]
    fn bad_files_are_refused_with_the_line_and_the_fix() {
        let e = refused(
            "[[allow]]\nidentities = [\"a\"]\noperations = [\"write\"]\ntopics = [\"t\"]\n",
        );
        assert_eq!(e.line, Some(1));
        assert!(e.message.contains("unknown operation \"write\""), "{e}");
        let e = refused("[[allow]]\nidentities = [\"a\"]\noperations = [\"produce\"]\ntopics = [\"sensors/#\"]\n");
        assert!(e.message.contains("MQTT"), "{e}");
        let e = refused("[[allow]]\nidentities = [\"a\"]\noperations = [\"produce\"]\n");
        assert!(e.message.contains("matches nothing"), "{e}");
        let e = refused(
            "[[allow]]\nidentities = [\"a\"]\noperations = [\"produce\"]\ngroups = [\"g\"]\n",
        );
        assert!(e.message.contains("not produce"), "{e}");
        let e = refused("[[allow]]\nidentities = [\"{identity}\"]\noperations = [\"produce\"]\ntopics = [\"t\"]\n");
        assert!(e.message.contains("only appear in topic"), "{e}");
        let e = refused("[[allow]]\nidentity = [\"a\"]\n");
        assert!(e.message.contains("unknown field"), "{e}");
        assert_eq!(e.line, Some(2));
        let shown =
            refused("[[allow]]\nidentities = []\noperations = [\"produce\"]\ntopics = [\"t\"]\n")
                .to_string();
        assert!(
            shown.starts_with("acl.toml:1: identities is empty"),
            "{shown}"
        );
        assert!(acl("").rules.is_empty(), "an empty file denies everything");
    }
}
