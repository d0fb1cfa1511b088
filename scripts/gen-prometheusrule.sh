#!/usr/bin/env bash
# Regenerates packaging/k8s/prometheusrule.yaml from packaging/prometheus/nodemedic-rules.yaml
# (the rules file is the source; a test fails when the two differ).
set -euo pipefail
cd "$(dirname "$0")/.."
out=packaging/k8s/prometheusrule.yaml
{
  cat <<'HEADER'
# kube-prometheus-stack: nodemedic's alerting rules as a PrometheusRule.
# GENERATED from packaging/prometheus/nodemedic-rules.yaml by scripts/gen-prometheusrule.sh;
# edit the rules file, then rerun the script.
#
#   kubectl apply -f prometheusrule.yaml
#
# The chart's Prometheus selects rules by its release label: set `release:` below to your
# Helm release name, or install the chart with
# prometheus.prometheusSpec.ruleSelectorNilUsesHelmValues=false.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: nodemedic
  namespace: monitoring
  labels:
    release: kube-prometheus-stack
spec:
HEADER
  sed -n '/^groups:/,$p' packaging/prometheus/nodemedic-rules.yaml | sed 's/^./  &/'
} > "$out.tmp"
mv "$out.tmp" "$out"
