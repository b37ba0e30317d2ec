// Everything a deployment may want to change. Override it the usual mixin way:
//
//   (import 'mixin.libsonnet') + {
//     _config+:: {
//       exporterSelector: 'job="ci-exporter"',
//       alerts+: { TencentCIBacklogStuck+: { maxAgeSeconds: 3600, 'for': '15m' } },
//     },
//   }
//
// The committed files (grafana/dashboards/*.json, deploy/prometheus/rules/*.yml and the
// Kubernetes PrometheusRule) are made from these defaults by mixin/generate.py.
{
  _config+:: {
    // The exporter's own scrape targets: the `up` series TencentCIExporterDown, ...Absent and
    // the "Exporter replicas up" panel read. deploy/prometheus/prometheus.yml names the job so.
    exporterSelector: 'job="tencent-ci-exporter"',

    // The label that tells Prometheus servers or Kubernetes clusters apart when their series
    // meet in one place (Thanos, Mimir, a federating Prometheus), such as 'cluster'. Empty:
    // there is none. When set, every aggregation and join of the rules and panels keeps it,
    // and the dashboards get a variable for it.
    clusterLabel: '',

    // runbook_url of every alert: the pattern with the alert's name in lower case, which is
    // the GitHub anchor of its section in docs/runbooks.md.
    runbookURLPattern: 'https://github.com/tencent-ci-exporter/tencent-ci-exporter/blob/main/docs/runbooks.md#%s',

    // Grafana: the uids (also the file names of the committed dashboards), tags and defaults.
    dashboardUIDs: {
      overview: 'tencent-ci-overview',
      queue: 'tencent-ci-queue',
    },
    dashboardTags: ['tencent-ci', 'tencent-ci-exporter'],
    dashboardPeriod: 'now-6h',
    dashboardRefresh: '1m',
    dashboardTimezone: '',

    // Per alert: `enabled` (false leaves it out of the rules), `severity`, `for`, and the
    // levels of those that have one. The panels that show what an alert watches draw their
    // threshold at the same level, in red for critical and orange for warning.
    //
    // The levels suit a queue of a few jobs a minute; tune them per deployment.
    alerts: {
      TencentCIExporterDown: { enabled: true, severity: 'critical', 'for': '5m' },
      TencentCIExporterAbsent: { enabled: true, severity: 'critical', 'for': '5m' },
      TencentCIPollsFailing: { enabled: true, severity: 'warning', 'for': '15m' },
      TencentCIPollsStale: {
        enabled: true,
        severity: 'warning',
        'for': '5m',
        maxAgeSeconds: 900,  // the last successful poll is older than this
      },
      TencentCIJobFailureRatioHigh: {
        enabled: true,
        severity: 'critical',
        'for': '10m',
        ratio: 0.1,  // failed out of finished jobs over 5 minutes, per queue and tag
        minFinished: 20,  // a volume floor: at least this many jobs finished in 5 minutes
        minFailed: 5,  // ...and at least this many failed
      },
      TencentCIJobFailureCodeBurst: {
        enabled: true,
        severity: 'warning',
        'for': '2m',
        failures: 20,  // jobs of a queue and tag failed with one code in 5 minutes
      },
      TencentCIJobRunningTooLong: {
        enabled: true,
        severity: 'warning',
        'for': '5m',
        maxAgeSeconds: 10800,  // the oldest running job started longer ago than this
      },
      TencentCIQueuePaused: { enabled: true, severity: 'warning', 'for': '15m' },
      TencentCIBacklogStuck: {
        enabled: true,
        severity: 'warning',
        'for': '5m',
        maxAgeSeconds: 1800,  // the oldest waiting job was submitted longer ago than this
      },
      TencentCIQueueSaturated: { enabled: true, severity: 'warning', 'for': '30m' },
      TencentCIQueueNearlyFull: {
        enabled: true,
        severity: 'warning',
        'for': '10m',
        fill: 0.8,  // waiting jobs out of the queue's MaxSize
      },
      // Workflows (service "workflow"): a workflow is exported like a queue, its runs like
      // jobs of tag Workflow. The same levels as for jobs: a workflow run by uploads is as busy.
      TencentCIWorkflowFailureRatioHigh: {
        enabled: true,
        severity: 'critical',
        'for': '10m',
        ratio: 0.1,  // failed out of finished runs over 5 minutes, per workflow
        minFinished: 20,  // a volume floor: at least this many runs finished in 5 minutes
        minFailed: 5,  // ...and at least this many failed
      },
      TencentCIWorkflowPaused: { enabled: true, severity: 'warning', 'for': '15m' },
      TencentCIApiThrottled: {
        enabled: true,
        severity: 'warning',
        'for': '10m',
        ratio: 0.05,  // throttled out of all the exporter's calls for a bucket, over 5 minutes
      },
      TencentCIApiCredentialsRejected: { enabled: true, severity: 'critical', 'for': '10m' },
    },
  },
}
