//! `deploy/aws/template.json` (CloudFormation) against the code: every table, bucket and
//! queue the backend names exists with the kind it needs (FIFO where order matters), each
//! function runs `bootstrap` on `provided.al2023` in the role the handler knows, SQS event
//! sources report partial batch failures, the distributor runs one at a time, and no IAM
//! statement allows a wildcard action or resource.
#![allow(clippy::unwrap_used)]

use faaskeeper_backend_aws::QueueNames;
use faaskeeper_host::aws::event_source::{DISTRIBUTOR_MAPPING, WRITER_MAPPING};
use faaskeeper_lambda::Role;
use serde_json::Value;

fn template() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/aws/template.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The string a property names, with `${Prefix}` standing for the prefix parameter.
fn name(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Object(o) if o.contains_key("Fn::Sub") => o["Fn::Sub"].as_str().unwrap().into(),
        other => panic!("not a name: {other}"),
    }
}

fn resources_of<'a>(t: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    t["Resources"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .collect()
}

fn find<'a>(t: &'a Value, kind: &str, prop: &str, want: &str) -> &'a Value {
    resources_of(t, kind)
        .into_iter()
        .find(|(_, r)| name(&r["Properties"][prop]) == want)
        .map(|(_, r)| &r["Properties"])
        .unwrap_or_else(|| panic!("no {kind} with {prop} {want}"))
}

#[test]
fn template_has_what_the_code_expects() {
    let t = template();
    let prefix = "${Prefix}";
    let names = QueueNames::new(prefix);
    let opts = faaskeeper_backend_aws::AwsOptions {
        prefix: prefix.into(),
        ..Default::default()
    };
    let table = find(&t, "AWS::DynamoDB::Table", "TableName", &opts.table_name());
    assert_eq!(table["KeySchema"][0]["AttributeName"], "k");
    assert_eq!(table["KeySchema"][0]["KeyType"], "HASH");
    assert_eq!(table["AttributeDefinitions"][0]["AttributeType"], "S");
    find(&t, "AWS::S3::Bucket", "BucketName", &opts.bucket_name());
    // The user bucket on DynamoDB, made when the UserStorage parameter asks for it.
    let nodes = find(
        &t,
        "AWS::DynamoDB::Table",
        "TableName",
        &opts.nodes_table_name(),
    );
    assert_eq!(nodes["KeySchema"], table["KeySchema"]);
    let condition = &t["Resources"]["NodesTable"]["Condition"];
    assert_eq!(
        t["Conditions"][condition.as_str().unwrap()]["Fn::Equals"][1],
        faaskeeper_backend_aws::UserStorage::DynamoDb.to_string()
    );
    let allowed = t["Parameters"]["UserStorage"]["AllowedValues"].clone();
    for v in allowed.as_array().unwrap() {
        assert!(
            v.as_str()
                .unwrap()
                .parse::<faaskeeper_backend_aws::UserStorage>()
                .is_ok(),
            "{v} is a user storage the code knows"
        );
    }
    let writer = find(&t, "AWS::SQS::Queue", "QueueName", &names.writer());
    assert_eq!(
        writer["FifoQueue"], true,
        "a session's requests keep their order"
    );
    assert_eq!(
        writer["RedrivePolicy"]["maxReceiveCount"],
        faaskeeper_backend_aws::MAX_RECEIVES
    );
    let dlq = find(&t, "AWS::SQS::Queue", "QueueName", &names.writer_dlq());
    assert_eq!(dlq["FifoQueue"], true);
    find(&t, "AWS::SQS::Queue", "QueueName", &names.distributor());

    let functions = resources_of(&t, "AWS::Lambda::Function");
    let mut roles = Vec::new();
    for (id, f) in &functions {
        let p = &f["Properties"];
        assert_eq!(p["Runtime"], "provided.al2023", "{id}");
        assert_eq!(p["Handler"], "bootstrap", "{id}");
        let role = p["Environment"]["Variables"]["FAASKEEPER_FUNCTION"]
            .as_str()
            .unwrap();
        assert!(Role::parse(role).is_some(), "{id}: unknown role {role}");
        assert_eq!(
            p["Environment"]["Variables"]["FAASKEEPER_PREFIX"]["Ref"],
            "Prefix"
        );
        assert_eq!(
            p["Environment"]["Variables"]["FAASKEEPER_USER_STORAGE"]["Ref"], "UserStorage",
            "{id} opens the user bucket the deployment chose"
        );
        roles.push((role.to_string(), id.to_string()));
    }
    roles.sort();
    let role_names: Vec<&str> = roles.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(role_names, ["distributor", "heartbeat", "writer"]);
    let function_id = |role: &str| roles.iter().find(|(r, _)| r == role).unwrap().1.clone();
    // AWS asks for a visibility timeout of six times the consuming function's timeout.
    let timeout = |role: &str| {
        t["Resources"][function_id(role)]["Properties"]["Timeout"]
            .as_u64()
            .unwrap()
    };
    assert!(timeout("writer") * 6 <= writer["VisibilityTimeout"].as_u64().unwrap());
    let dq = find(&t, "AWS::SQS::Queue", "QueueName", &names.distributor());
    assert!(timeout("distributor") * 6 <= dq["VisibilityTimeout"].as_u64().unwrap());
    let dist = &t["Resources"][function_id("distributor")]["Properties"];
    // Both the writer and the distributor (a run that stops with txns left) wake the
    // distributor through its queue.
    for role in ["writer", "distributor"] {
        let role_id = t["Resources"][function_id(role)]["Properties"]["Role"]["Fn::GetAtt"][0]
            .as_str()
            .unwrap()
            .to_string();
        for action in ["sqs:SendMessage", "sqs:GetQueueUrl"] {
            let granted = t["Resources"][&role_id]["Properties"]["Policies"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap())
                .any(|s| {
                    s["Action"].as_array().unwrap().iter().any(|a| a == action)
                        && s["Resource"].as_array().unwrap().iter().any(|r| {
                            r["Fn::Sub"]
                                .as_str()
                                .is_some_and(|r| r.ends_with(":${Prefix}-distributor"))
                        })
                });
            assert!(granted, "{role} may {action} on the distributor queue");
        }
    }
    assert_eq!(
        dist["ReservedConcurrentExecutions"], 1,
        "one distributor at a time"
    );

    // Event sources: writer queue → writer, distributor queue → distributor, both reporting
    // partial batch failures, with the settings `cost --measure --lambda` runs them with.
    let mappings = resources_of(&t, "AWS::Lambda::EventSourceMapping");
    for (queue, role, mapping) in [
        ("WriterQueue", "writer", WRITER_MAPPING),
        ("DistributorQueue", "distributor", DISTRIBUTOR_MAPPING),
    ] {
        let m = mappings
            .iter()
            .find(|(_, m)| m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0] == queue)
            .unwrap_or_else(|| panic!("no event source for {queue}"));
        let p = &m.1["Properties"];
        assert_eq!(p["FunctionName"]["Ref"], function_id(role));
        assert_eq!(
            p["FunctionResponseTypes"],
            serde_json::json!(["ReportBatchItemFailures"])
        );
        assert_eq!(p["BatchSize"].as_u64(), Some(mapping.batch_size as u64));
        assert_eq!(
            p["MaximumBatchingWindowInSeconds"].as_u64().unwrap_or(0),
            mapping.window.as_secs()
        );
        let concurrency = match role {
            "distributor" => dist["ReservedConcurrentExecutions"].as_u64(),
            _ => p["ScalingConfig"]["MaximumConcurrency"].as_u64(),
        };
        assert_eq!(concurrency, Some(mapping.concurrency as u64), "{queue}");
    }
    assert_eq!(
        name(&t["Resources"]["WriterQueue"]["Properties"]["QueueName"]),
        names.writer()
    );
}

/// Every statement of every role and managed policy: no `*` in an action, no resource that
/// is `*` or a whole service, every resource scoped to this deployment's prefix.
#[test]
fn policies_grant_no_wildcards() {
    let t = template();
    let mut statements = Vec::new();
    for (id, r) in t["Resources"].as_object().unwrap() {
        match r["Type"].as_str().unwrap() {
            "AWS::IAM::Role" => {
                for p in r["Properties"]["Policies"].as_array().unwrap() {
                    for s in p["PolicyDocument"]["Statement"].as_array().unwrap() {
                        statements.push((id.clone(), s.clone()));
                    }
                }
            }
            "AWS::IAM::ManagedPolicy" | "AWS::IAM::Policy" => {
                for s in r["Properties"]["PolicyDocument"]["Statement"]
                    .as_array()
                    .unwrap()
                {
                    statements.push((id.clone(), s.clone()));
                }
            }
            _ => {}
        }
    }
    assert!(
        statements.len() >= 15,
        "found {} statements",
        statements.len()
    );
    let as_list = |v: &Value| -> Vec<Value> {
        match v {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        }
    };
    for (id, s) in &statements {
        assert_eq!(s["Effect"], "Allow", "{id}");
        assert!(
            s.get("NotAction").is_none() && s.get("NotResource").is_none(),
            "{id}"
        );
        for a in as_list(&s["Action"]) {
            let a = a.as_str().unwrap();
            assert!(!a.contains('*'), "{id}: wildcard action {a}");
            assert!(a.contains(':'), "{id}: action {a}");
        }
        for r in as_list(&s["Resource"]) {
            let r = name(&r);
            assert_ne!(r, "*", "{id}: every resource");
            assert!(
                r.contains("${Prefix}"),
                "{id}: {r} is not this deployment's"
            );
            // A pattern may only widen the last segment of a name under our prefix.
            if let Some(star) = r.find('*') {
                let before = &r[..star];
                assert!(
                    before.contains("${Prefix}"),
                    "{id}: {r} widens past the prefix"
                );
            }
        }
    }
    // The roles assume only Lambda.
    for (id, r) in resources_of(&t, "AWS::IAM::Role") {
        let trust = &r["Properties"]["AssumeRolePolicyDocument"]["Statement"][0];
        assert_eq!(
            trust["Principal"]["Service"], "lambda.amazonaws.com",
            "{id}"
        );
    }
}
