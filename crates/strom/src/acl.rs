//! `strom acl add|list|remove`: Kafka ACLs, offline on a data directory (`--data-dir DIR`)
//! or online through a broker (`--bootstrap`: CreateAcls / DescribeAcls / DeleteAcls, which
//! a broker answers when it runs with `--authorizer acl`). The flags are kafka-acls.sh's:
//! `--allow-principal User:alice --operation Read --topic orders`.

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kafka_protocol::messages::create_acls_request::AclCreation;
use kafka_protocol::messages::delete_acls_request::DeleteAclsFilter;
use kafka_protocol::messages::{CreateAclsRequest, DeleteAclsRequest, DescribeAclsRequest};
use strom_broker::security::acl::{
    AclBinding, AclFilter, Acls, Operation, PatternFilter, PatternType, Permission, ResourceType,
    CLUSTER_NAME, CODE_ANY, CODE_MATCH, WILDCARD,
};

use crate::user::{block_on, exit_code, sb, Target};

#[derive(Subcommand, Debug)]
pub(crate) enum AclCmd {
    /// Add ACLs: each principal x operation x resource.
    Add(Bindings),
    /// List ACLs (every one, or those of the resources / principal given).
    List(ListArgs),
    /// Remove exactly the ACLs `add` with the same flags would add.
    Remove(Bindings),
}

/// The resources named on the command line.
#[derive(Args, Debug, Default)]
pub(crate) struct Resources {
    /// A topic (repeatable); `*` is every topic.
    #[arg(long)]
    topic: Vec<String>,
    /// A group (repeatable): classic, consumer and share groups.
    #[arg(long)]
    group: Vec<String>,
    /// A transactional id (repeatable).
    #[arg(long)]
    transactional_id: Vec<String>,
    /// The cluster.
    #[arg(long)]
    cluster: bool,
}

impl Resources {
    fn list(&self) -> Vec<(ResourceType, String)> {
        let mut out = Vec::new();
        out.extend(self.topic.iter().map(|t| (ResourceType::Topic, t.clone())));
        out.extend(self.group.iter().map(|g| (ResourceType::Group, g.clone())));
        out.extend(
            self.transactional_id
                .iter()
                .map(|t| (ResourceType::TransactionalId, t.clone())),
        );
        if self.cluster {
            out.push((ResourceType::Cluster, CLUSTER_NAME.to_string()));
        }
        out
    }
}

#[derive(Args, Debug)]
pub(crate) struct Bindings {
    /// Principal allowed (repeatable), e.g. User:alice; User:* is everyone.
    #[arg(long)]
    allow_principal: Vec<String>,
    /// Principal denied (repeatable); a DENY wins over any ALLOW.
    #[arg(long)]
    deny_principal: Vec<String>,
    /// Host the ACLs apply to: an IP address, or * for every host.
    #[arg(long, default_value = WILDCARD)]
    host: String,
    /// Operation (repeatable): All, Read, Write, Create, Delete, Alter, Describe,
    /// ClusterAction, DescribeConfigs, AlterConfigs, IdempotentWrite.
    #[arg(long, required = true)]
    operation: Vec<String>,
    /// literal (the name, or every resource for `*`) or prefixed (every name starting
    /// with it).
    #[arg(long, default_value = "literal")]
    resource_pattern_type: String,
    #[command(flatten)]
    resources: Resources,
}

#[derive(Args, Debug)]
pub(crate) struct ListArgs {
    /// Only the ACLs of this principal.
    #[arg(long)]
    principal: Option<String>,
    /// any (the names exactly, any pattern type), match (every ACL that applies to the
    /// named resources: literal, wildcard and prefixes), literal or prefixed.
    #[arg(long, default_value = "any")]
    resource_pattern_type: String,
    #[command(flatten)]
    resources: Resources,
}

impl Bindings {
    fn bindings(&self) -> Result<Vec<AclBinding>> {
        let pattern = PatternType::parse(&self.resource_pattern_type)
            .with_context(|| format!("unknown pattern type {:?}", self.resource_pattern_type))?;
        let resources = self.resources.list();
        if resources.is_empty() {
            bail!("name a resource: --topic, --group, --transactional-id or --cluster");
        }
        if self.allow_principal.is_empty() && self.deny_principal.is_empty() {
            bail!("name a principal: --allow-principal or --deny-principal");
        }
        let ops: Vec<Operation> = self
            .operation
            .iter()
            .map(|o| Operation::parse(o).with_context(|| format!("unknown operation {o:?}")))
            .collect::<Result<_>>()?;
        let who = self
            .allow_principal
            .iter()
            .map(|p| (p, Permission::Allow))
            .chain(self.deny_principal.iter().map(|p| (p, Permission::Deny)));
        let mut out = Vec::new();
        for (principal, permission) in who {
            for &(rt, ref name) in &resources {
                for &operation in &ops {
                    let b = AclBinding {
                        resource_type: rt,
                        resource_name: name.clone(),
                        pattern_type: pattern,
                        principal: principal.clone(),
                        host: self.host.clone(),
                        operation,
                        permission,
                    };
                    b.validate()?;
                    out.push(b);
                }
            }
        }
        Ok(out)
    }
}

impl ListArgs {
    fn filters(&self) -> Result<Vec<AclFilter>> {
        let pattern = match self.resource_pattern_type.to_ascii_lowercase().as_str() {
            "any" => PatternFilter::Any,
            "match" => PatternFilter::Match,
            other => PatternFilter::Exactly(
                PatternType::parse(other)
                    .with_context(|| format!("unknown pattern type {other:?}"))?,
            ),
        };
        let base = AclFilter {
            principal: self.principal.clone(),
            pattern,
            ..AclFilter::default()
        };
        let resources = self.resources.list();
        if resources.is_empty() {
            return Ok(vec![base]);
        }
        Ok(resources
            .into_iter()
            .map(|(rt, name)| AclFilter {
                resource_type: Some(rt),
                resource_name: Some(name),
                ..base.clone()
            })
            .collect())
    }
}

/// Runs the command; returns the process exit code.
pub(crate) fn run(target: Target, cmd: AclCmd) -> i32 {
    exit_code(match &target.data_dir {
        Some(dir) => offline(dir, &target, cmd),
        None => block_on(online(&target, cmd)),
    })
}

fn print(target: &Target, acls: &[AclBinding]) {
    if target.json {
        println!(
            "{}",
            serde_json::to_string(acls).unwrap_or_else(|_| "[]".into())
        );
        return;
    }
    println!(
        "{:<16} {:<24} {:<9} {:<24} {:<16} {:<16} PERMISSION",
        "RESOURCE TYPE", "NAME", "PATTERN", "PRINCIPAL", "HOST", "OPERATION"
    );
    for b in acls {
        println!(
            "{:<16} {:<24} {:<9} {:<24} {:<16} {:<16} {}",
            b.resource_type.name(),
            b.resource_name,
            b.pattern_type.name(),
            b.principal,
            b.host,
            b.operation.name(),
            b.permission.name()
        );
    }
}

fn offline(dir: &std::path::Path, target: &Target, cmd: AclCmd) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let acls = Acls::open(dir)?;
    match cmd {
        AclCmd::Add(b) => {
            let bindings = b.bindings()?;
            for r in acls.create(&bindings) {
                r?;
            }
            eprintln!("{} ACL(s) added in {}", bindings.len(), dir.display());
        }
        AclCmd::Remove(b) => {
            let filters: Vec<AclFilter> = b.bindings()?.iter().map(exact).collect();
            let gone: usize = acls.delete(&filters)?.iter().map(Vec::len).sum();
            eprintln!("{gone} ACL(s) removed in {}", dir.display());
        }
        AclCmd::List(l) => {
            let mut all: Vec<AclBinding> = Vec::new();
            for f in l.filters()? {
                all.extend(acls.describe(&f));
            }
            all.sort();
            all.dedup();
            print(target, &all);
        }
    }
    Ok(())
}

/// The filter that selects exactly `b`.
fn exact(b: &AclBinding) -> AclFilter {
    AclFilter {
        resource_type: Some(b.resource_type),
        resource_name: Some(b.resource_name.clone()),
        pattern: PatternFilter::Exactly(b.pattern_type),
        principal: Some(b.principal.clone()),
        host: Some(b.host.clone()),
        operation: Some(b.operation),
        permission: Some(b.permission),
    }
}

fn wire_error(api: &str, code: i16, msg: Option<&str>) -> anyhow::Error {
    anyhow::anyhow!("{api}: error {code}: {}", msg.unwrap_or(""))
}

async fn online(target: &Target, cmd: AclCmd) -> Result<()> {
    let client = target.connect().await?;
    match cmd {
        AclCmd::Add(b) => {
            let bindings = b.bindings()?;
            let req = CreateAclsRequest::default().with_creations(
                bindings
                    .iter()
                    .map(|b| {
                        AclCreation::default()
                            .with_resource_type(b.resource_type.code())
                            .with_resource_name(sb(&b.resource_name))
                            .with_resource_pattern_type(b.pattern_type.code())
                            .with_principal(sb(&b.principal))
                            .with_host(sb(&b.host))
                            .with_operation(b.operation.code())
                            .with_permission_type(b.permission.code())
                    })
                    .collect(),
            );
            let resp = client.call(&req).await?;
            for r in &resp.results {
                if r.error_code != 0 {
                    return Err(wire_error(
                        "CreateAcls",
                        r.error_code,
                        r.error_message.as_deref(),
                    ));
                }
            }
            eprintln!("{} ACL(s) added on {}", bindings.len(), target.bootstrap);
        }
        AclCmd::Remove(b) => {
            let req = DeleteAclsRequest::default().with_filters(
                b.bindings()?
                    .iter()
                    .map(|b| {
                        DeleteAclsFilter::default()
                            .with_resource_type_filter(b.resource_type.code())
                            .with_resource_name_filter(Some(sb(&b.resource_name)))
                            .with_pattern_type_filter(b.pattern_type.code())
                            .with_principal_filter(Some(sb(&b.principal)))
                            .with_host_filter(Some(sb(&b.host)))
                            .with_operation(b.operation.code())
                            .with_permission_type(b.permission.code())
                    })
                    .collect(),
            );
            let resp = client.call(&req).await?;
            let mut gone = 0;
            for r in &resp.filter_results {
                if r.error_code != 0 {
                    return Err(wire_error(
                        "DeleteAcls",
                        r.error_code,
                        r.error_message.as_deref(),
                    ));
                }
                gone += r.matching_acls.len();
            }
            eprintln!("{gone} ACL(s) removed on {}", target.bootstrap);
        }
        AclCmd::List(l) => {
            let mut all: Vec<AclBinding> = Vec::new();
            for f in l.filters()? {
                let pattern = match f.pattern {
                    PatternFilter::Any => CODE_ANY,
                    PatternFilter::Match => CODE_MATCH,
                    PatternFilter::Exactly(p) => p.code(),
                };
                let req = DescribeAclsRequest::default()
                    .with_resource_type_filter(f.resource_type.map_or(CODE_ANY, |t| t.code()))
                    .with_resource_name_filter(f.resource_name.as_deref().map(sb))
                    .with_pattern_type_filter(pattern)
                    .with_principal_filter(f.principal.as_deref().map(sb))
                    .with_host_filter(None)
                    .with_operation(CODE_ANY)
                    .with_permission_type(CODE_ANY);
                let resp = client.call(&req).await?;
                if resp.error_code != 0 {
                    return Err(wire_error(
                        "DescribeAcls",
                        resp.error_code,
                        resp.error_message.as_deref(),
                    ));
                }
                for r in &resp.resources {
                    for a in &r.acls {
                        let (Some(rt), Some(pt), Some(op), Some(perm)) = (
                            ResourceType::from_code(r.resource_type),
                            PatternType::from_code(r.pattern_type),
                            Operation::from_code(a.operation),
                            Permission::from_code(a.permission_type),
                        ) else {
                            continue;
                        };
                        all.push(AclBinding {
                            resource_type: rt,
                            resource_name: r.resource_name.to_string(),
                            pattern_type: pt,
                            principal: a.principal.to_string(),
                            host: a.host.to_string(),
                            operation: op,
                            permission: perm,
                        });
                    }
                }
            }
            all.sort();
            all.dedup();
            print(target, &all);
        }
    }
    Ok(())
}
