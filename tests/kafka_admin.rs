//! Kafka admin calls from confluent-kafka's AdminClient: create, describe
//! (topic settings in Kafka's names), list groups, delete, ACLs.

mod common;

use common::kafka_clients::python;
use common::TestServer;

const ADMIN: &str = r#"
import sys
from confluent_kafka import Consumer, TopicPartition, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic, ConfigResource, AclBindingFilter, \
    ResourceType, ResourcePatternType, AclOperation, AclPermissionType
b = sys.argv[1]
a = AdminClient({'bootstrap.servers': b})
def outcome(future):
    try:
        future.result(30)
        return 'ok'
    except KafkaException as e:
        return e.args[0].name()
fs = a.create_topics([NewTopic('adm', 4, 1, config={'retention.ms': '60000'}),
                      NewTopic('three', 1, 3)])
print('create', outcome(fs['adm']), outcome(fs['three']))
fs = a.create_topics([NewTopic('adm', 1, 1)])
print('again', outcome(fs['adm']))
fs = a.create_topics([NewTopic('dry', 2, 1)], validate_only=True)
print('validate', outcome(fs['dry']), sorted(a.list_topics(timeout=10).topics))
res = ConfigResource('topic', 'adm')
configs = a.describe_configs([res])[res].result(30)
print('configs', configs['retention.ms'].value, configs['retention.ms'].is_default,
      configs['cleanup.policy'].value, configs['cleanup.policy'].is_default)
c = Consumer({'bootstrap.servers': b, 'group.id': 'admgroup'})
c.commit(offsets=[TopicPartition('adm', 0, 0)], asynchronous=False)
c.close()
groups = a.list_consumer_groups().result(30)
print('groups', sorted((g.group_id, str(g.state)) for g in groups.valid))
f = a.describe_acls(AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None,
                                     AclOperation.ANY, AclPermissionType.ANY))
# SECURITY_DISABLED: librdkafka reports no bindings (Java raises).
print('acls', f.result(30))
fs = a.delete_topics(['adm', 'nope'])
print('delete', outcome(fs['adm']), outcome(fs['nope']), sorted(a.list_topics(timeout=10).topics))
"#;

#[test]
fn the_admin_client_creates_describes_lists_and_deletes() {
    let server = TestServer::start();
    let out = python(&server, ADMIN);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "create ok INVALID_REPLICATION_FACTOR", "{out}");
    assert_eq!(lines[1], "again TOPIC_ALREADY_EXISTS", "{out}");
    assert_eq!(lines[2], "validate ok ['adm']", "{out}");
    assert_eq!(lines[3], "configs 60000 False delete True", "{out}");
    assert_eq!(
        lines[4], "groups [('admgroup', 'ConsumerGroupState.EMPTY')]",
        "{out}"
    );
    assert_eq!(lines[5], "acls []", "{out}");
    assert_eq!(lines[6], "delete ok UNKNOWN_TOPIC_OR_PART []", "{out}");
}

const ACL_PRODUCE_ONLY: &str = r#"
[[allow]]
identities = ["kafka-local"]
operations = ["produce", "consume"]
topics = ["*"]
"#;

const DELETE_DENIED: &str = r#"
import sys
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
a = AdminClient({'bootstrap.servers': sys.argv[1]})
try:
    a.delete_topics(['kept'])['kept'].result(30)
    print('deleted')
except KafkaException as e:
    print(e.args[0].name())
"#;

#[test]
fn deleting_needs_admin_on_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let acl = dir.path().join("acl.toml");
    std::fs::write(&acl, ACL_PRODUCE_ONLY).unwrap();
    let server = TestServer::start_with(|c| c.acl_file = Some(acl.clone()));
    server
        .running()
        .broker()
        .storage()
        .create_topic("kept", 1, Vec::new(), 0)
        .unwrap();
    assert_eq!(
        python(&server, DELETE_DENIED).trim(),
        "TOPIC_AUTHORIZATION_FAILED"
    );
    assert!(server.running().broker().storage().topic("kept").is_some());
}
