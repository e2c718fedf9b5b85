//! Kafka's ACL model: bindings (resource pattern, principal, host, operation, permission),
//! their durable store `<data-dir>/.strom/acls.json` and the authorizer every door asks.
//!
//! Semantics as Kafka's `StandardAuthorizer` with `allow.everyone.if.no.acl.found=false`:
//! super users may do anything; otherwise a request is allowed when an ALLOW binding matches
//! and no DENY binding does (deny wins), and denied when nothing matches. A binding matches a
//! resource when its pattern is LITERAL and names the resource or is the wildcard `*`, or is
//! PREFIXED and the resource's name starts with it; it matches a principal when it names it
//! or is `User:*`, and a host when it is `*` or the client's address. ALLOW of READ, WRITE,
//! DELETE or ALTER implies DESCRIBE, and ALLOW of ALTER_CONFIGS implies DESCRIBE_CONFIGS;
//! ALL matches every operation.
//!
//! The file is replaced atomically and durably on every change, one entry per binding (the
//! shape of an etcd key per binding later), and re-read when it changed on disk (checked at
//! most once a second), so `strom acl add --data-dir` on a stopped or a running broker is seen.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::store::Watched;
use super::Principal;

/// The resource name of the CLUSTER resource, as Kafka names it.
pub const CLUSTER_NAME: &str = "kafka-cluster";

/// The wildcard resource name and principal / host.
pub const WILDCARD: &str = "*";

macro_rules! kafka_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident = $code:expr, $s:expr;)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "SCREAMING_SNAKE_CASE")]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            /// Every value, in code order.
            pub const ALL_VALUES: &'static [$name] = &[$($name::$v,)*];

            /// Kafka's numeric code.
            pub fn code(self) -> i8 {
                match self { $($name::$v => $code,)* }
            }

            /// The value of a Kafka code.
            pub fn from_code(code: i8) -> Option<$name> {
                match code { $($code => Some($name::$v),)* _ => None }
            }

            /// Kafka's name (`TOPIC`, `DESCRIBE_CONFIGS`, ...).
            pub fn name(self) -> &'static str {
                match self { $($name::$v => $s,)* }
            }

            /// Parses Kafka's name, any case, `-` or `_` between words.
            pub fn parse(s: &str) -> Option<$name> {
                let want = s.trim().to_ascii_uppercase().replace('-', "_");
                Self::ALL_VALUES.iter().copied().find(|v| v.name() == want)
            }
        }
    };
}

kafka_enum!(
    /// A resource type ACLs apply to.
    ResourceType {
        Topic = 2, "TOPIC";
        Group = 3, "GROUP";
        Cluster = 4, "CLUSTER";
        TransactionalId = 5, "TRANSACTIONAL_ID";
    }
);

kafka_enum!(
    /// How a binding's resource name matches.
    PatternType {
        /// The name, or every resource when it is `*`.
        Literal = 3, "LITERAL";
        /// Every resource whose name starts with it.
        Prefixed = 4, "PREFIXED";
    }
);

kafka_enum!(
    /// An operation on a resource.
    Operation {
        All = 2, "ALL";
        Read = 3, "READ";
        Write = 4, "WRITE";
        Create = 5, "CREATE";
        Delete = 6, "DELETE";
        Alter = 7, "ALTER";
        Describe = 8, "DESCRIBE";
        ClusterAction = 9, "CLUSTER_ACTION";
        DescribeConfigs = 10, "DESCRIBE_CONFIGS";
        AlterConfigs = 11, "ALTER_CONFIGS";
        IdempotentWrite = 12, "IDEMPOTENT_WRITE";
    }
);

kafka_enum!(
    /// Whether a binding allows or denies.
    Permission {
        Deny = 2, "DENY";
        Allow = 3, "ALLOW";
    }
);

/// Kafka's code for ANY in filters (resource type, pattern type, operation, permission).
pub const CODE_ANY: i8 = 1;
/// Kafka's code for the MATCH pattern filter.
pub const CODE_MATCH: i8 = 2;

/// One ACL.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclBinding {
    pub resource_type: ResourceType,
    pub resource_name: String,
    pub pattern_type: PatternType,
    /// `User:alice`, or `User:*` for every principal.
    pub principal: String,
    /// A client address, or `*`.
    pub host: String,
    pub operation: Operation,
    pub permission: Permission,
}

/// Why a binding cannot be stored (Kafka answers INVALID_REQUEST with the message).
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    #[error("{0}")]
    Invalid(String),
    #[error("ACL store: {0}")]
    Io(#[from] std::io::Error),
}

impl AclBinding {
    /// Checks the binding is one Kafka would store.
    pub fn validate(&self) -> Result<(), AclError> {
        let bad = |m: String| Err(AclError::Invalid(m));
        if self.resource_name.is_empty() {
            return bad("the resource name is empty".into());
        }
        if self.resource_type == ResourceType::Cluster
            && (self.resource_name != CLUSTER_NAME || self.pattern_type != PatternType::Literal)
        {
            return bad(format!(
                "the CLUSTER resource is the LITERAL {CLUSTER_NAME:?}"
            ));
        }
        if self.pattern_type == PatternType::Prefixed && self.resource_name == WILDCARD {
            return bad("a PREFIXED pattern cannot be the wildcard '*' (use LITERAL '*')".into());
        }
        match Principal::parse(&self.principal) {
            Some(p) if p.kind == "User" => {}
            _ => {
                return bad(format!(
                    "principal {:?} is not of the form User:<name>",
                    self.principal
                ))
            }
        }
        if self.host.is_empty() || (self.host != WILDCARD && self.host.parse::<IpAddr>().is_err()) {
            return bad(format!("host {:?} is not '*' or an IP address", self.host));
        }
        if !valid_operation(self.resource_type, self.operation) {
            return bad(format!(
                "operation {} does not apply to {} resources",
                self.operation.name(),
                self.resource_type.name()
            ));
        }
        Ok(())
    }

    fn matches_resource(&self, rt: ResourceType, name: &str) -> bool {
        self.resource_type == rt
            && match self.pattern_type {
                PatternType::Literal => {
                    self.resource_name == name || self.resource_name == WILDCARD
                }
                PatternType::Prefixed => name.starts_with(&self.resource_name),
            }
    }

    fn matches_who(&self, principal: &str, host: &str) -> bool {
        (self.principal == principal || self.principal == "User:*")
            && (self.host == WILDCARD || self.host == host)
    }
}

/// The operations Kafka defines for a resource type.
pub fn valid_operation(rt: ResourceType, op: Operation) -> bool {
    use Operation::*;
    let ops: &[Operation] = match rt {
        ResourceType::Topic => &[
            All,
            Read,
            Write,
            Create,
            Delete,
            Alter,
            Describe,
            DescribeConfigs,
            AlterConfigs,
        ],
        ResourceType::Group => &[All, Read, Delete, Describe],
        ResourceType::Cluster => &[
            All,
            Create,
            Alter,
            Describe,
            ClusterAction,
            DescribeConfigs,
            AlterConfigs,
            IdempotentWrite,
        ],
        ResourceType::TransactionalId => &[All, Write, Describe],
    };
    ops.contains(&op)
}

/// What DescribeAcls / DeleteAcls select: `None` is ANY.
#[derive(Clone, Debug, Default)]
pub struct AclFilter {
    pub resource_type: Option<ResourceType>,
    /// With [`PatternFilter::Match`], the resource the bindings must apply to.
    pub resource_name: Option<String>,
    pub pattern: PatternFilter,
    pub principal: Option<String>,
    pub host: Option<String>,
    pub operation: Option<Operation>,
    pub permission: Option<Permission>,
}

/// How a filter selects pattern types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PatternFilter {
    /// Every pattern type; the name, if given, is compared exactly.
    #[default]
    Any,
    /// Every binding that applies to the named resource (literal, wildcard or prefix).
    Match,
    /// Exactly this pattern type.
    Exactly(PatternType),
}

impl AclFilter {
    /// Whether `b` is selected.
    pub fn matches(&self, b: &AclBinding) -> bool {
        if self.resource_type.is_some_and(|t| t != b.resource_type)
            || self.principal.as_ref().is_some_and(|p| *p != b.principal)
            || self.host.as_ref().is_some_and(|h| *h != b.host)
            || self.operation.is_some_and(|o| o != b.operation)
            || self.permission.is_some_and(|p| p != b.permission)
        {
            return false;
        }
        match (self.pattern, &self.resource_name) {
            (PatternFilter::Any, None) => true,
            (PatternFilter::Any, Some(n)) => *n == b.resource_name,
            (PatternFilter::Exactly(p), name) => {
                p == b.pattern_type && name.as_ref().is_none_or(|n| *n == b.resource_name)
            }
            (PatternFilter::Match, None) => true,
            (PatternFilter::Match, Some(n)) => match b.pattern_type {
                PatternType::Literal => b.resource_name == *n || b.resource_name == WILDCARD,
                PatternType::Prefixed => n.starts_with(&b.resource_name),
            },
        }
    }
}

/// The ACL file's document: every binding, in a stable order.
#[derive(Serialize, Deserialize, Default, Clone, PartialEq)]
pub struct AclSet {
    /// The bindings.
    pub acls: BTreeSet<AclBinding>,
}

/// The durable ACLs of one data directory.
pub struct Acls {
    file: Watched<AclSet>,
}

impl Acls {
    /// The store of `data_dir` (the file need not exist yet).
    pub fn open(data_dir: &Path) -> Result<Acls, AclError> {
        let file = Watched::open(data_dir, "acls.json", "ACL").map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => AclError::Invalid(e.to_string()),
            _ => AclError::Io(e),
        })?;
        Ok(Acls { file })
    }

    /// The current bindings (re-read from disk if the file changed; checked at most once a
    /// second).
    pub fn snapshot(&self) -> Arc<AclSet> {
        self.file.snapshot()
    }

    /// The bindings `filter` selects.
    pub fn describe(&self, filter: &AclFilter) -> Vec<AclBinding> {
        self.file
            .snapshot()
            .acls
            .iter()
            .filter(|b| filter.matches(b))
            .cloned()
            .collect()
    }

    /// Adds bindings (each validated; one already present is kept once). Returns one result
    /// per binding; the valid ones are stored durably before this returns.
    pub fn create(&self, bindings: &[AclBinding]) -> Vec<Result<(), AclError>> {
        let mut results: Vec<Result<(), AclError>> =
            bindings.iter().map(AclBinding::validate).collect();
        if results.iter().all(Result::is_err) {
            return results;
        }
        let outcome = self.file.modify(|f| {
            for (b, r) in bindings.iter().zip(&results) {
                if r.is_ok() {
                    f.acls.insert(b.clone());
                }
            }
        });
        if let Err(e) = outcome {
            let msg = e.to_string();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(AclError::Io(std::io::Error::other(msg.clone())));
            }
        }
        results
    }

    /// Removes every binding each filter selects; returns, per filter, the bindings it
    /// removed.
    pub fn delete(&self, filters: &[AclFilter]) -> Result<Vec<Vec<AclBinding>>, AclError> {
        Ok(self.file.modify(|f| {
            filters
                .iter()
                .map(|filter| {
                    let gone: Vec<AclBinding> = f
                        .acls
                        .iter()
                        .filter(|b| filter.matches(b))
                        .cloned()
                        .collect();
                    for b in &gone {
                        f.acls.remove(b);
                    }
                    gone
                })
                .collect()
        })?)
    }
}

/// The authorizer of a broker: off (everyone may do everything, Kafka without an
/// authorizer) or Kafka's ACL model over an [`Acls`] store.
pub struct Authorizer {
    acls: Option<Arc<Acls>>,
    super_users: Vec<String>,
}

/// A request to authorize: who, from where.
#[derive(Clone, Copy)]
pub struct Who<'a> {
    pub principal: &'a Principal,
    pub host: IpAddr,
}

impl Authorizer {
    /// No authorizer: every request is allowed, the ACL APIs answer SECURITY_DISABLED.
    pub fn disabled() -> Authorizer {
        Authorizer {
            acls: None,
            super_users: Vec::new(),
        }
    }

    /// Kafka's ACL authorizer over `acls`, with `super_users` (`User:admin`) allowed
    /// everything.
    pub fn acl(acls: Arc<Acls>, super_users: Vec<Principal>) -> Authorizer {
        Authorizer {
            acls: Some(acls),
            super_users: super_users.iter().map(|p| p.to_string()).collect(),
        }
    }

    /// The ACL store, when the authorizer is on.
    pub fn acls(&self) -> Option<&Arc<Acls>> {
        self.acls.as_ref()
    }

    /// Whether ACLs are enforced.
    pub fn enabled(&self) -> bool {
        self.acls.is_some()
    }

    /// Whether `who` may do `op` on the resource `rt`/`name`.
    pub fn authorize(&self, who: Who<'_>, op: Operation, rt: ResourceType, name: &str) -> bool {
        let Some(acls) = &self.acls else {
            return true;
        };
        let principal = who.principal.to_string();
        if self.super_users.contains(&principal) {
            return true;
        }
        let host = who.host.to_string();
        let set = acls.snapshot();
        let mut allowed = false;
        for b in set.acls.iter() {
            if !b.matches_resource(rt, name) || !b.matches_who(&principal, &host) {
                continue;
            }
            match b.permission {
                Permission::Deny => {
                    if b.operation == op || b.operation == Operation::All {
                        return false;
                    }
                }
                Permission::Allow => allowed |= implies(b.operation, op),
            }
        }
        allowed
    }

    /// Whether `who` may do `op` on some resource of type `rt` (Kafka's
    /// `authorizeByResourceType`: an ALLOW on any name, literal or prefixed, that no DENY of
    /// the same pattern or a wildcard cancels). IDEMPOTENT_WRITE is implied by WRITE on any
    /// topic this way.
    pub fn authorize_any(&self, who: Who<'_>, op: Operation, rt: ResourceType) -> bool {
        let Some(acls) = &self.acls else {
            return true;
        };
        let principal = who.principal.to_string();
        if self.super_users.contains(&principal) {
            return true;
        }
        let host = who.host.to_string();
        let set = acls.snapshot();
        let relevant = |b: &&AclBinding| b.resource_type == rt && b.matches_who(&principal, &host);
        let denied = |b: &AclBinding| {
            set.acls.iter().filter(relevant).any(|d| {
                d.permission == Permission::Deny
                    && (d.operation == op || d.operation == Operation::All)
                    && ((d.pattern_type == PatternType::Literal && d.resource_name == WILDCARD)
                        || (d.pattern_type == b.pattern_type && d.resource_name == b.resource_name)
                        || (d.pattern_type == PatternType::Prefixed
                            && b.resource_name.starts_with(&d.resource_name)))
            })
        };
        set.acls
            .iter()
            .filter(relevant)
            .any(|b| b.permission == Permission::Allow && implies(b.operation, op) && !denied(b))
    }
}

/// Whether an ALLOW of `granted` allows `wanted`.
fn implies(granted: Operation, wanted: Operation) -> bool {
    use Operation::*;
    granted == wanted
        || granted == All
        || (wanted == Describe && matches!(granted, Read | Write | Delete | Alter))
        || (wanted == DescribeConfigs && granted == AlterConfigs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(
        rt: ResourceType,
        name: &str,
        pt: PatternType,
        who: &str,
        op: Operation,
        perm: Permission,
    ) -> AclBinding {
        AclBinding {
            resource_type: rt,
            resource_name: name.into(),
            pattern_type: pt,
            principal: who.into(),
            host: "*".into(),
            operation: op,
            permission: perm,
        }
    }

    fn auth(bindings: &[AclBinding]) -> (tempfile::TempDir, Authorizer) {
        let dir = tempfile::tempdir().unwrap();
        let acls = Arc::new(Acls::open(dir.path()).unwrap());
        for r in acls.create(bindings) {
            r.unwrap();
        }
        (dir, Authorizer::acl(acls, vec![Principal::user("admin")]))
    }

    fn who(name: &str) -> Principal {
        Principal::user(name)
    }

    #[test]
    fn deny_by_default_allow_literal_prefixed_wildcard_and_deny_wins() {
        use Operation::*;
        use PatternType::*;
        use ResourceType::*;
        let (_d, a) = auth(&[
            bind(
                Topic,
                "orders",
                Literal,
                "User:alice",
                Write,
                Permission::Allow,
            ),
            bind(
                Topic,
                "logs-",
                Prefixed,
                "User:alice",
                Read,
                Permission::Allow,
            ),
            bind(Topic, "*", Literal, "User:bob", Read, Permission::Allow),
            bind(Topic, "secret", Literal, "User:bob", Read, Permission::Deny),
            bind(Group, "g", Literal, "User:*", Read, Permission::Allow),
        ]);
        let host: IpAddr = "127.0.0.1".parse().unwrap();
        let alice = who("alice");
        let bob = who("bob");
        let carol = who("carol");
        let admin = who("admin");
        let w = |p| Who { principal: p, host };
        assert!(a.authorize(w(&alice), Write, Topic, "orders"));
        assert!(
            a.authorize(w(&alice), Describe, Topic, "orders"),
            "WRITE implies DESCRIBE"
        );
        assert!(!a.authorize(w(&alice), Read, Topic, "orders"));
        assert!(a.authorize(w(&alice), Read, Topic, "logs-app"));
        assert!(!a.authorize(w(&alice), Read, Topic, "log"));
        assert!(a.authorize(w(&bob), Read, Topic, "anything"));
        assert!(!a.authorize(w(&bob), Read, Topic, "secret"), "deny wins");
        assert!(
            !a.authorize(w(&carol), Read, Topic, "orders"),
            "deny by default"
        );
        assert!(
            a.authorize(w(&carol), Read, Group, "g"),
            "User:* matches everyone"
        );
        assert!(
            a.authorize(w(&admin), Alter, Cluster, CLUSTER_NAME),
            "super user"
        );
        assert!(a.authorize_any(w(&alice), Write, Topic));
        assert!(!a.authorize_any(w(&carol), Write, Topic));
        assert!(Authorizer::disabled().authorize(w(&carol), Write, Topic, "x"));
    }

    #[test]
    fn filters_select_as_kafka_and_changes_are_durable() {
        use Operation::*;
        use PatternType::*;
        use ResourceType::*;
        let dir = tempfile::tempdir().unwrap();
        let acls = Acls::open(dir.path()).unwrap();
        let res = acls.create(&[
            bind(
                Topic,
                "orders",
                Literal,
                "User:alice",
                Write,
                Permission::Allow,
            ),
            bind(
                Topic,
                "ord",
                Prefixed,
                "User:alice",
                Read,
                Permission::Allow,
            ),
            bind(Topic, "*", Literal, "User:bob", Read, Permission::Allow),
            bind(Cluster, "x", Literal, "User:bob", Alter, Permission::Allow),
            bind(Group, "g", Literal, "User:bob", Write, Permission::Allow),
            bind(Topic, "t", Literal, "alice", Read, Permission::Allow),
        ]);
        assert!(res[..3].iter().all(Result::is_ok));
        assert!(res[3..].iter().all(Result::is_err), "{res:?}");
        let matching = AclFilter {
            resource_type: Some(Topic),
            resource_name: Some("orders".into()),
            pattern: PatternFilter::Match,
            ..AclFilter::default()
        };
        assert_eq!(acls.describe(&matching).len(), 3);
        let exact = AclFilter {
            resource_name: Some("orders".into()),
            ..AclFilter::default()
        };
        assert_eq!(acls.describe(&exact).len(), 1);
        let reopened = Acls::open(dir.path()).unwrap();
        assert_eq!(reopened.describe(&AclFilter::default()).len(), 3);
        let gone = reopened
            .delete(&[AclFilter {
                principal: Some("User:alice".into()),
                ..AclFilter::default()
            }])
            .unwrap();
        assert_eq!(gone[0].len(), 2);
        let again = Acls::open(dir.path()).unwrap();
        assert_eq!(again.describe(&AclFilter::default()).len(), 1);
    }
}
