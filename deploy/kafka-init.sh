#!/usr/bin/env bash
# Creates zonewatch's SCRAM users and ACLs on a secured Kafka cluster.
# Idempotent: run it again after changing a password (it overwrites it).
#
# Run with the Kafka tools on PATH (the apache/kafka image has them in
# /opt/kafka/bin), as a super user over the brokers' internal listener:
#
#   BOOTSTRAP=kafka-1:19092 ADMIN_CONFIG=/run/secrets/kafka_admin.properties \
#   SECRETS=/run/secrets ./kafka-init.sh
#
# SECRETS holds one file per user with its password:
#   zonewatch_admin_password      `zonewatch topics` (creates the topics)
#   zonewatch_connector_password  the connectors (produce, checkpoints, transactions)
#   zonewatch_correlator_password the correlators (consume, group, scale-out topics, alerts out)
# PREFIX (default zonewatch) is the topic prefix (kafka.topic_prefix); GROUP
# (default zonewatch-correlator) the correlators' group (correlator.group_id).
# What each grant is for: docs/deploy.md, "ACLs".
set -euo pipefail

BOOTSTRAP=${BOOTSTRAP:?set BOOTSTRAP to an internal listener, e.g. kafka-1:19092}
ADMIN_CONFIG=${ADMIN_CONFIG:?set ADMIN_CONFIG to a client config of a super user}
SECRETS=${SECRETS:-/run/secrets}
PREFIX=${PREFIX:-zonewatch}
GROUP=${GROUP:-zonewatch-correlator}
KAFKA_BIN=${KAFKA_BIN:-/opt/kafka/bin}

configs() { "$KAFKA_BIN/kafka-configs.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" "$@"; }
acl() { "$KAFKA_BIN/kafka-acls.sh" --bootstrap-server "$BOOTSTRAP" --command-config "$ADMIN_CONFIG" --add --force "$@"; }

for user in admin connector correlator; do
  password_file="$SECRETS/zonewatch_${user}_password"
  [[ -s "$password_file" ]] || { echo "missing $password_file" >&2; exit 78; }
  configs --alter --entity-type users --entity-name "zonewatch-$user" \
    --add-config "SCRAM-SHA-512=[iterations=8192,password=$(<"$password_file")]"
done

# zonewatch topics: creates and describes every zonewatch topic.
acl --allow-principal User:zonewatch-admin --operation Create --operation Describe \
  --operation DescribeConfigs --topic "$PREFIX." --resource-pattern-type prefixed

# Connectors: events and dead letters out, checkpoints out and back in, in
# transactions named zonewatch-<source>-<format>-<hash>.
acl --allow-principal User:zonewatch-connector --operation Describe --topic "$PREFIX." \
  --resource-pattern-type prefixed
acl --allow-principal User:zonewatch-connector --operation Write --topic "$PREFIX.events." \
  --resource-pattern-type prefixed
acl --allow-principal User:zonewatch-connector --operation Write --topic "$PREFIX.deadletter"
acl --allow-principal User:zonewatch-connector --operation Write --operation Read \
  --topic "$PREFIX.checkpoints"
acl --allow-principal User:zonewatch-connector --operation Write --operation Describe \
  --transactional-id "zonewatch-" --resource-pattern-type prefixed

# Correlators: events in, in one group; with --scale-out also the hits and
# state topics, both ways.
acl --allow-principal User:zonewatch-correlator --operation Describe --topic "$PREFIX." \
  --resource-pattern-type prefixed
acl --allow-principal User:zonewatch-correlator --operation Read --topic "$PREFIX.events." \
  --resource-pattern-type prefixed
acl --allow-principal User:zonewatch-correlator --operation Read --group "$GROUP"
acl --allow-principal User:zonewatch-correlator --operation Read --operation Write \
  --topic "$PREFIX.correlation." --resource-pattern-type prefixed
# Correlators: alerts and triage changes out to $PREFIX.alerts, in
# transactions named zonewatch-alerts-<store id>, read back on start.
acl --allow-principal User:zonewatch-correlator --operation Read --operation Write \
  --topic "$PREFIX.alerts"
acl --allow-principal User:zonewatch-correlator --operation Write --operation Describe \
  --transactional-id "zonewatch-alerts-" --resource-pattern-type prefixed

echo "zonewatch users and ACLs are in place"
