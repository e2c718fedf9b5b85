//! The ACL APIs (DescribeAcls, CreateAcls, DeleteAcls v1-3) over the core's ACL store
//! (`strom_broker::security::acl`). Without `--authorizer acl` they answer SECURITY_DISABLED,
//! as Kafka without an authorizer; with it, describing needs DESCRIBE on the cluster and
//! changing needs ALTER on the cluster.

use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{
    CreateAclsRequest, CreateAclsResponse, DeleteAclsRequest, DeleteAclsResponse,
    DescribeAclsRequest, DescribeAclsResponse,
};
use kafka_protocol::ResponseError as E;
use strom_broker::security::acl::{
    AclBinding, AclError, AclFilter, Operation, PatternFilter, PatternType, Permission,
    ResourceType, CLUSTER_NAME, CODE_ANY, CODE_MATCH,
};

use crate::server::{sb, Fatal, Reply, Req};

/// Why an ACL request is answered with one error for everything.
fn refusal(req: &Req<'_>, op: Operation) -> Option<(i16, String)> {
    if !req.ctx.broker.authorizer().enabled() {
        return Some((
            E::SecurityDisabled.code(),
            "no authorizer is configured (strom serve --authorizer acl)".into(),
        ));
    }
    if !req.allowed(op, ResourceType::Cluster, CLUSTER_NAME) {
        return Some((
            E::ClusterAuthorizationFailed.code(),
            format!(
                "{} on the cluster is not allowed to {}",
                op.name(),
                req.principal
            ),
        ));
    }
    None
}

/// A filter's fields as the wire carries them.
struct WireFilter<'a> {
    resource_type: i8,
    name: Option<&'a str>,
    pattern_type: i8,
    principal: Option<&'a str>,
    host: Option<&'a str>,
    operation: i8,
    permission: i8,
}

fn filter(w: WireFilter<'_>) -> Result<AclFilter, String> {
    let any_or = |code: i8, what: &str, parse: &dyn Fn(i8) -> bool| -> Result<bool, String> {
        if code == CODE_ANY {
            Ok(true)
        } else if parse(code) {
            Ok(false)
        } else {
            Err(format!("unknown {what} {code}"))
        }
    };
    let rt = if any_or(w.resource_type, "resource type", &|c| {
        ResourceType::from_code(c).is_some()
    })? {
        None
    } else {
        ResourceType::from_code(w.resource_type)
    };
    let pattern = match w.pattern_type {
        CODE_ANY => PatternFilter::Any,
        CODE_MATCH => PatternFilter::Match,
        c => PatternFilter::Exactly(
            PatternType::from_code(c).ok_or_else(|| format!("unknown pattern type {c}"))?,
        ),
    };
    let operation = if any_or(w.operation, "operation", &|c| {
        Operation::from_code(c).is_some()
    })? {
        None
    } else {
        Operation::from_code(w.operation)
    };
    let permission = if any_or(w.permission, "permission type", &|c| {
        Permission::from_code(c).is_some()
    })? {
        None
    } else {
        Permission::from_code(w.permission)
    };
    Ok(AclFilter {
        resource_type: rt,
        resource_name: w.name.map(str::to_string),
        pattern,
        principal: w.principal.map(str::to_string),
        host: w.host.map(str::to_string),
        operation,
        permission,
    })
}

/// DescribeAcls: the bindings a filter selects, grouped by resource pattern.
pub(crate) fn describe_acls(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DescribeAclsRequest = req.decode()?;
    let fail = |req: &Req<'_>, code: i16, msg: String| {
        req.encode(
            &DescribeAclsResponse::default()
                .with_error_code(code)
                .with_error_message(Some(sb(msg))),
        )
    };
    if let Some((code, msg)) = refusal(&req, Operation::Describe) {
        return fail(&req, code, msg);
    }
    let f = match filter(WireFilter {
        resource_type: r.resource_type_filter,
        name: r.resource_name_filter.as_deref(),
        pattern_type: r.pattern_type_filter,
        principal: r.principal_filter.as_deref(),
        host: r.host_filter.as_deref(),
        operation: r.operation,
        permission: r.permission_type,
    }) {
        Ok(f) => f,
        Err(msg) => return fail(&req, E::InvalidRequest.code(), msg),
    };
    let acls = req.ctx.broker.authorizer().acls().expect("enabled").clone();
    let mut resources: Vec<DescribeAclsResource> = Vec::new();
    // The store is ordered by resource type, name and pattern first: one group per run.
    for b in acls.describe(&f) {
        let same = resources.last().is_some_and(|r| {
            r.resource_type == b.resource_type.code()
                && *r.resource_name == *b.resource_name
                && r.pattern_type == b.pattern_type.code()
        });
        if !same {
            resources.push(
                DescribeAclsResource::default()
                    .with_resource_type(b.resource_type.code())
                    .with_resource_name(sb(b.resource_name.clone()))
                    .with_pattern_type(b.pattern_type.code()),
            );
        }
        resources.last_mut().expect("pushed").acls.push(
            AclDescription::default()
                .with_principal(sb(b.principal))
                .with_host(sb(b.host))
                .with_operation(b.operation.code())
                .with_permission_type(b.permission.code()),
        );
    }
    req.encode(&DescribeAclsResponse::default().with_resources(resources))
}

/// CreateAcls: stores each valid binding durably; one result per creation.
pub(crate) fn create_acls(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: CreateAclsRequest = req.decode()?;
    let result = |code: i16, msg: Option<String>| {
        AclCreationResult::default()
            .with_error_code(code)
            .with_error_message(msg.map(sb))
    };
    if let Some((code, msg)) = refusal(&req, Operation::Alter) {
        let results = r
            .creations
            .iter()
            .map(|_| result(code, Some(msg.clone())))
            .collect();
        return req.encode(&CreateAclsResponse::default().with_results(results));
    }
    let parsed: Vec<Result<AclBinding, String>> = r
        .creations
        .iter()
        .map(|c| {
            let unknown = |what: &str, code: i8| format!("{what} {code} cannot be stored");
            Ok(AclBinding {
                resource_type: ResourceType::from_code(c.resource_type)
                    .ok_or_else(|| unknown("resource type", c.resource_type))?,
                resource_name: c.resource_name.to_string(),
                pattern_type: PatternType::from_code(c.resource_pattern_type)
                    .ok_or_else(|| unknown("pattern type", c.resource_pattern_type))?,
                principal: c.principal.to_string(),
                host: c.host.to_string(),
                operation: Operation::from_code(c.operation)
                    .ok_or_else(|| unknown("operation", c.operation))?,
                permission: Permission::from_code(c.permission_type)
                    .ok_or_else(|| unknown("permission type", c.permission_type))?,
            })
        })
        .collect();
    let valid: Vec<AclBinding> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let acls = req.ctx.broker.authorizer().acls().expect("enabled").clone();
    let mut stored = acls.create(&valid).into_iter();
    let results = parsed
        .into_iter()
        .map(|p| match p {
            Err(msg) => result(E::InvalidRequest.code(), Some(msg)),
            Ok(b) => match stored.next().expect("one result per valid binding") {
                Ok(()) => {
                    tracing::info!(peer = %req.peer, principal = %req.principal, acl = ?b, "ACL created");
                    result(0, None)
                }
                Err(AclError::Invalid(msg)) => result(E::InvalidRequest.code(), Some(msg)),
                Err(e @ AclError::Io(_)) => {
                    result(E::UnknownServerError.code(), Some(e.to_string()))
                }
            },
        })
        .collect();
    req.encode(&CreateAclsResponse::default().with_results(results))
}

/// DeleteAcls: removes what each filter selects and answers what went.
pub(crate) fn delete_acls(mut req: Req<'_>) -> Result<Reply, Fatal> {
    let r: DeleteAclsRequest = req.decode()?;
    let failed = |code: i16, msg: String| {
        DeleteAclsFilterResult::default()
            .with_error_code(code)
            .with_error_message(Some(sb(msg)))
    };
    if let Some((code, msg)) = refusal(&req, Operation::Alter) {
        let results = r
            .filters
            .iter()
            .map(|_| failed(code, msg.clone()))
            .collect();
        return req.encode(&DeleteAclsResponse::default().with_filter_results(results));
    }
    let parsed: Vec<Result<AclFilter, String>> = r
        .filters
        .iter()
        .map(|f| {
            filter(WireFilter {
                resource_type: f.resource_type_filter,
                name: f.resource_name_filter.as_deref(),
                pattern_type: f.pattern_type_filter,
                principal: f.principal_filter.as_deref(),
                host: f.host_filter.as_deref(),
                operation: f.operation,
                permission: f.permission_type,
            })
        })
        .collect();
    let valid: Vec<AclFilter> = parsed.iter().filter_map(|p| p.clone().ok()).collect();
    let acls = req.ctx.broker.authorizer().acls().expect("enabled").clone();
    let removed = acls.delete(&valid);
    let mut removed_iter = match &removed {
        Ok(r) => Some(r.iter()),
        Err(_) => None,
    };
    let results = parsed
        .into_iter()
        .map(|p| match p {
            Err(msg) => failed(E::InvalidRequest.code(), msg),
            Ok(_) => match removed_iter.as_mut() {
                None => failed(
                    E::UnknownServerError.code(),
                    removed.as_ref().err().map(|e| e.to_string()).unwrap_or_default(),
                ),
                Some(it) => {
                    let gone = it.next().expect("one result per valid filter");
                    for b in gone {
                        tracing::info!(peer = %req.peer, principal = %req.principal, acl = ?b, "ACL deleted");
                    }
                    DeleteAclsFilterResult::default().with_matching_acls(
                        gone.iter()
                            .map(|b| {
                                DeleteAclsMatchingAcl::default()
                                    .with_resource_type(b.resource_type.code())
                                    .with_resource_name(sb(b.resource_name.clone()))
                                    .with_pattern_type(b.pattern_type.code())
                                    .with_principal(sb(b.principal.clone()))
                                    .with_host(sb(b.host.clone()))
                                    .with_operation(b.operation.code())
                                    .with_permission_type(b.permission.code())
                            })
                            .collect(),
                    )
                }
            },
        })
        .collect();
    req.encode(&DeleteAclsResponse::default().with_filter_results(results))
}
