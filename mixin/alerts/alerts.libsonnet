// The alerts: deploy/prometheus/rules/alerts.rules.yml. Each has a severity, a static summary,
// a description naming what is affected, and a runbook_url into docs/runbooks.md (one section
// per alert, anchored by the alert's name in lower case). Levels, `for`, severities and
// on/off switches come from _config.alerts (config.libsonnet).
//
// HA pairs: two replicas polling the same buckets export the same series with different target
// labels (instance, pod, ...). Every expression takes the max (or min) over the labels that
// identify a series before anything else, so a pair raises one alert, not two.
//
// Workflows and batch jobs share the queue and job families: a workflow is a "queue" of service
// "workflow" (queue_id its WorkflowId) and its runs are jobs of tag Workflow; an inventory
// trigger (batch) job is a job of service "batch", queue_id "", with no queue families. The job
// and queue alerts say per alert whether they leave them out (jobServices below) and why; the
// workflows have alerts of their own (group tencent-ci-exporter.workflows).
local u = import '../lib/utils.libsonnet';

{
  prometheusAlerts+:: {
    local c = $._config,
    local a = c.alerts,
    local level(x) = u.num(x),
    // The series of media-processing queues and jobs only: not workflows, not batch jobs.
    local jobServices = 'service!~"workflow|batch"',
    local held(name) = u.humanDuration(a[name]['for']),
    local severity(name) =
      local s = a[name].severity;
      assert std.member(['critical', 'warning', 'info'], s) :
             'alert %s: severity %s is not critical, warning or info' % [name, s];
      s,

    local alert(name, summary, description, expr) = {
      alert: name,
      expr: u.withCluster(expr, c.clusterLabel),
      'for': a[name]['for'],
      labels: { severity: severity(name) },
      annotations: {
        summary: summary,
        description: description,
        runbook_url: c.runbookURLPattern % std.asciiLower(name),
      },
    },
    local group(name, rules) = {
      name: name,
      rules: [rule for rule in rules if a[rule.alert].enabled],
    },

    groups+: [g for g in [
      group('tencent-ci-exporter.health', [
        alert(
          'TencentCIExporterDown',
          summary='A Tencent CI exporter cannot be scraped.',
          description='Prometheus has failed to scrape {{ $labels.instance }} (job {{ $labels.job }}) for %s: the buckets it polls are not watched through it.' % held('TencentCIExporterDown'),
          expr='up{%s} == 0' % c.exporterSelector,
        ),
        // An exporter that service discovery no longer finds has no `up` series at all, so
        // TencentCIExporterDown cannot see it go: nothing in the job is scraped any more.
        alert(
          'TencentCIExporterAbsent',
          summary='No Tencent CI exporter is scraped.',
          description='Prometheus has had no target in job {{ $labels.job }} for %s: service discovery finds no exporter, so no bucket is watched and the other Tencent CI alerts cannot fire.' % held('TencentCIExporterAbsent'),
          expr='absent(up{%s})' % c.exporterSelector,
        ),
        alert(
          'TencentCIPollsFailing',
          summary="The exporter's polls of a bucket fail.",
          description='Polls of bucket {{ $labels.bucket }} ({{ $labels.region }}) have failed for %s, so its queue and job metrics are not current.' % held('TencentCIPollsFailing'),
          expr='min by (bucket, region) (tencent_ci_up) == 0',
        ),
        alert(
          'TencentCIPollsStale',
          summary="The exporter's data about a bucket is old.",
          description='The last successful poll of bucket {{ $labels.bucket }} ({{ $labels.region }}) finished {{ $value | humanizeDuration }} ago.',
          expr='max by (bucket, region) (time() - tencent_ci_last_successful_poll_timestamp_seconds) > %s' % level(a.TencentCIPollsStale.maxAgeSeconds),
        ),
      ]),

      group('tencent-ci-exporter.jobs', [
        // A volume floor: at least minFinished jobs finished and minFailed of them failed in 5
        // minutes. A ratio of a few jobs is noise: 3 failures in 20 night-time jobs (15%) page
        // no one, nor do 2 in 20 on a queue that fails 5% of its jobs anyway.
        //
        // Not for workflows: their runs have TencentCIWorkflowFailureRatioHigh, whose text and
        // runbook fit a run (this one would page twice for one failure). Not for batch jobs: a
        // batch job only starts the jobs or runs that do the work, which are counted and
        // alerted on in their own queue or workflow; and it has no queue to name. Only the
        // ratio takes the matcher: `and` keeps the series of its left side.
        alert(
          'TencentCIJobFailureRatioHigh',
          summary='Many CI jobs fail.',
          description='{{ $value | humanizePercentage }} of the {{ $labels.tag }} jobs that finished in the last 5 minutes in queue {{ $labels.name }} ({{ $labels.service }} {{ $labels.queue_id }}) of bucket {{ $labels.bucket }} failed.',
          expr=|||
            (
              queue_tag:tencent_ci_jobs_failed_per_finished:ratio_rate5m{%(jobServices)s} > %(ratio)s
              and on (bucket, region, service, queue_id, tag)
              queue_tag:tencent_ci_jobs_finished:rate5m * 300 >= %(minFinished)s
              and on (bucket, region, service, queue_id, tag)
              queue_tag_state:tencent_ci_jobs_finished:rate5m{state="Failed"} * 300 >= %(minFailed)s
            )
            * on (bucket, region, service, queue_id) group_left (name)
              max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)
          ||| % {
            ratio: level(a.TencentCIJobFailureRatioHigh.ratio),
            minFinished: level(a.TencentCIJobFailureRatioHigh.minFinished),
            minFailed: level(a.TencentCIJobFailureRatioHigh.minFailed),
            jobServices: jobServices,
          },
        ),
        // Not for workflows: a run's `code` is the Type of its failed step (Transcode, ...), not
        // an error Code, and it is counted only for the runs described by id, an undercount a
        // fixed number of failures cannot be set against; the description ("failed with code
        // Transcode") and the runbook's list of codes would mislead. Not for batch jobs: as for
        // the ratio above, their jobs' failures are counted where the jobs run.
        alert(
          'TencentCIJobFailureCodeBurst',
          summary='Many CI jobs fail with the same code.',
          description='{{ $value | humanize }} {{ $labels.tag }} jobs failed with code {{ $labels.code }} in the last 5 minutes in queue {{ $labels.name }} ({{ $labels.service }} {{ $labels.queue_id }}) of bucket {{ $labels.bucket }}.',
          expr=|||
            (queue_tag_code:tencent_ci_job_failures:rate5m{%s} * 300 >= %s)
            * on (bucket, region, service, queue_id) group_left (name)
              max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)
          ||| % [jobServices, level(a.TencentCIJobFailureCodeBurst.failures)],
        ),
        // Not for batch jobs: one walks a whole bucket inventory and runs for hours or days by
        // design. Not for workflow runs: a run's age adds up all its steps and the waits
        // between them, and the runbook's remedy (the job holds a MaxConcurrent slot: cancel
        // it) does not apply to a workflow, which has no MaxConcurrent; a step stuck in a queue
        // is a job of that queue, watched there.
        alert(
          'TencentCIJobRunningTooLong',
          summary='A CI job has been running for very long.',
          description='The oldest running {{ $labels.tag }} job in queue {{ $labels.name }} ({{ $labels.service }} {{ $labels.queue_id }}) of bucket {{ $labels.bucket }} started {{ $value | humanizeDuration }} ago.',
          expr=|||
            (
              max by (bucket, region, service, queue_id, tag) (
                time() - tencent_ci_oldest_job_timestamp_seconds{%s, state="Running"}
              ) > %s
            )
            * on (bucket, region, service, queue_id) group_left (name)
              max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)
          ||| % [jobServices, level(a.TencentCIJobRunningTooLong.maxAgeSeconds)],
        ),
      ]),

      group('tencent-ci-exporter.queues', [
        // Not for workflows: TencentCIWorkflowPaused says what a paused workflow means (uploads
        // start no run; no run waits in Pause), which is not what this says. Batch jobs have no
        // queue families: the matcher only says so.
        alert(
          'TencentCIQueuePaused',
          summary='A CI queue is paused.',
          description='Queue {{ $labels.name }} ({{ $labels.service }} {{ $labels.queue_id }}) of bucket {{ $labels.bucket }} has been paused for %s: it starts no job, and jobs submitted to it wait in state Pause.' % held('TencentCIQueuePaused'),
          expr=|||
            (max by (bucket, region, service, queue_id) (tencent_ci_queue_paused{%s}) == 1)
            * on (bucket, region, service, queue_id) group_left (name)
              max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)
          ||| % jobServices,
        ),
        // Not for workflows: a run starts Running, so a workflow has no backlog (its Submitted
        // is always 0), and a workflow has no slots to wait for. Not for batch jobs: a batch job
        // waiting to start is not a queue's backlog, and there is no queue to name or resize.
        alert(
          'TencentCIBacklogStuck',
          summary='CI jobs wait long to start.',
          description='The oldest {{ $labels.tag }} job waiting in queue {{ $labels.name }} ({{ $labels.service }} {{ $labels.queue_id }}) of bucket {{ $labels.bucket }} was submitted {{ $value | humanizeDuration }} ago and has not started.',
          expr=|||
            (
              max by (bucket, region, service, queue_id, tag) (
                time() - tencent_ci_oldest_job_timestamp_seconds{%s, state="Submitted"}
              ) > %s
            )
            * on (bucket, region, service, queue_id) group_left (name)
              max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)
          ||| % [jobServices, level(a.TencentCIBacklogStuck.maxAgeSeconds)],
        ),
        // Running jobs are counted over the tags the exporter polls: a queue whose other tags
        // are not configured looks less busy than it is. Workflows and batch jobs need no
        // matcher here or in TencentCIQueueNearlyFull: neither has a MaxConcurrent or MaxSize
        // series, so the comparison with it leaves them out (a promtool test holds to it).
        alert(
          'TencentCIQueueSaturated',
          summary='A CI queue runs at its MaxConcurrent.',
          description='Queue {{ $labels.name }} ({{ $labels.service }} {{ $labels.queue_id }}) of bucket {{ $labels.bucket }} has run {{ $value }} jobs, its MaxConcurrent, for %s; new jobs wait for a free slot.' % held('TencentCIQueueSaturated'),
          expr=|||
            (
              sum by (bucket, region, service, queue_id) (
                max by (bucket, region, service, queue_id, tag) (tencent_ci_jobs{state="Running"})
              )
              >= on (bucket, region, service, queue_id)
              max by (bucket, region, service, queue_id) (tencent_ci_queue_max_concurrent > 0)
            )
            * on (bucket, region, service, queue_id) group_left (name)
              max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)
          |||,
        ),
        // Waiting jobs are those in Submitted and, in a paused queue, Pause.
        alert(
          'TencentCIQueueNearlyFull',
          summary='A CI queue is nearly full.',
          description='Waiting jobs fill {{ $value | humanizePercentage }} of the MaxSize of queue {{ $labels.name }} ({{ $labels.service }} {{ $labels.queue_id }}) of bucket {{ $labels.bucket }}; a full queue takes no more jobs.',
          expr=|||
            (
              sum by (bucket, region, service, queue_id) (
                max by (bucket, region, service, queue_id, tag, state) (
                  tencent_ci_jobs{state=~"Submitted|Pause"}
                )
              )
              / on (bucket, region, service, queue_id)
              max by (bucket, region, service, queue_id) (tencent_ci_queue_max_size > 0)
              > %s
            )
            * on (bucket, region, service, queue_id) group_left (name)
              max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)
          ||| % level(a.TencentCIQueueNearlyFull.fill),
        ),
      ]),

      // Workflows (service "workflow"): queue_id is the WorkflowId, name the workflow's name,
      // and its runs are jobs of tag Workflow.
      group('tencent-ci-exporter.workflows', [
        // TencentCIJobFailureRatioHigh's shape and floor, per workflow (the tag is always
        // Workflow, so it is summed away). Failed out of finished runs, both from
        // tencent_ci_jobs_finished_total, which counts every run: not from
        // tencent_ci_job_failures_total, which counts only the runs described by id.
        alert(
          'TencentCIWorkflowFailureRatioHigh',
          summary='Many runs of a CI workflow fail.',
          description='{{ $value | humanizePercentage }} of the runs of workflow {{ $labels.name }} ({{ $labels.queue_id }}) of bucket {{ $labels.bucket }} that finished in the last 5 minutes failed.',
          expr=|||
            (
              sum by (bucket, region, service, queue_id) (
                queue_tag_state:tencent_ci_jobs_finished:rate5m{service="workflow", state="Failed"}
              )
              / sum by (bucket, region, service, queue_id) (
                queue_tag:tencent_ci_jobs_finished:rate5m{service="workflow"}
              )
              > %(ratio)s
              and on (bucket, region, service, queue_id)
              sum by (bucket, region, service, queue_id) (
                queue_tag:tencent_ci_jobs_finished:rate5m{service="workflow"}
              ) * 300 >= %(minFinished)s
              and on (bucket, region, service, queue_id)
              sum by (bucket, region, service, queue_id) (
                queue_tag_state:tencent_ci_jobs_finished:rate5m{service="workflow", state="Failed"}
              ) * 300 >= %(minFailed)s
            )
            * on (bucket, region, service, queue_id) group_left (name)
              max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)
          ||| % {
            ratio: level(a.TencentCIWorkflowFailureRatioHigh.ratio),
            minFinished: level(a.TencentCIWorkflowFailureRatioHigh.minFinished),
            minFailed: level(a.TencentCIWorkflowFailureRatioHigh.minFailed),
          },
        ),
        // A paused workflow starts no run for the files uploaded meanwhile. Unlike a paused
        // queue's jobs, nothing is seen waiting (no run is Submitted or Pause): the uploads
        // missed have to be triggered again (docs/runbooks.md), so the pause is the news.
        alert(
          'TencentCIWorkflowPaused',
          summary='A CI workflow is paused.',
          description='Workflow {{ $labels.name }} ({{ $labels.queue_id }}) of bucket {{ $labels.bucket }} has been paused for %s: files uploaded meanwhile start no run of it.' % held('TencentCIWorkflowPaused'),
          expr=|||
            (max by (bucket, region, service, queue_id) (tencent_ci_queue_paused{service="workflow"}) == 1)
            * on (bucket, region, service, queue_id) group_left (name)
              max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)
          |||,
        ),
      ]),

      group('tencent-ci-exporter.api', [
        // Throttling is what the exporter counts as such: HTTP 429 or 503 whatever the body (a
        // gateway's bare 503, a 429 with another Code), or Code SlowDown with any status. The
        // `error` label cannot tell: a bare 503 is http_503, a 429 with a Code is that Code.
        alert(
          'TencentCIApiThrottled',
          summary="CI throttles the exporter's calls.",
          description="CI throttled {{ $value | humanizePercentage }} of the exporter's calls for bucket {{ $labels.bucket }} ({{ $labels.region }}) in the last 5 minutes.",
          expr=|||
            sum by (bucket, region) (
              max by (bucket, region, endpoint) (
                rate(tencent_ci_api_throttled_requests_total[5m])
              )
            )
            / sum by (bucket, region) (bucket_endpoint_status:tencent_ci_api_requests:rate5m)
            > %s
          ||| % level(a.TencentCIApiThrottled.ratio),
        ),
        // A single rejected call (a clock jump, a key rotated mid-poll) keeps the rate above 0
        // for 5 minutes; `for: 10m` waits for rejections that go on.
        alert(
          'TencentCIApiCredentialsRejected',
          summary="CI rejects the exporter's credentials.",
          description="CI answers the exporter's calls for bucket {{ $labels.bucket }} ({{ $labels.region }}) with {{ $labels.error }}: the bucket is not polled.",
          expr=|||
            sum by (bucket, region, error) (
              bucket_endpoint_error:tencent_ci_api_errors:rate5m{error=~"AccessDenied|InvalidAuthorization|SecretidNotExist|SignatureExpired|MissingAuthorization|credentials|http_401|http_403"}
            ) > 0
          |||,
        ),
      ]),
    ] if std.length(g.rules) > 0],
  },
}
