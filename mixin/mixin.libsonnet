// tencent-ci-exporter's monitoring mixin (https://monitoring.mixins.dev conventions):
// grafanaDashboards, prometheusAlerts and prometheusRules, all from _config.
(import 'config.libsonnet') +
(import 'alerts/alerts.libsonnet') +
(import 'rules/rules.libsonnet') +
(import 'dashboards/dashboards.libsonnet')
