// The recording rules: deploy/prometheus/rules/recording.rules.yml. The dashboards and the
// alerts share them: throughput, failure ratio, failures by code, API calls and errors.
//
// Naming: level:metric:operations. The level names the labels kept: `queue` is
// (bucket, region, service, queue_id); `bucket` is (bucket, region).
//
// Two exporter replicas (an HA pair) polling the same buckets export the same series, told
// apart only by their target labels (instance, pod, and whatever else service discovery adds).
// Every rule therefore takes the max over the labels that identify a series, which drops the
// target labels and counts a pair once. Sums come after that, never before.
//
// Workflows (service "workflow": a workflow as a queue, its runs as jobs of tag Workflow) and
// batch jobs (service "batch") go through the same rules, on purpose: every rule keeps
// `service`, so nothing here adds a workflow's runs to a queue's jobs. The alerts and panels
// choose: the job and queue ones select service!~"workflow|batch", the workflow ones
// service="workflow". Filtering here would need a second copy of each rule for workflows.
local u = import '../lib/utils.libsonnet';

{
  prometheusRules+:: {
    local c = $._config,
    local record(name, expr) = { record: name, expr: u.withCluster(expr, c.clusterLabel) },

    groups+: [
      {
        name: 'tencent-ci-exporter.recording',
        rules: [
          // Finished jobs per second, by state (Success, Failed, Cancel).
          record('queue_tag_state:tencent_ci_jobs_finished:rate5m', |||
            max by (bucket, region, service, queue_id, tag, state) (
              rate(tencent_ci_jobs_finished_total[5m])
            )
          |||),
          record('queue_tag:tencent_ci_jobs_finished:rate5m', |||
            sum by (bucket, region, service, queue_id, tag) (
              queue_tag_state:tencent_ci_jobs_finished:rate5m
            )
          |||),
          // Failed out of all finished jobs; absent (not NaN) while nothing finishes.
          record('queue_tag:tencent_ci_jobs_failed_per_finished:ratio_rate5m', |||
            sum by (bucket, region, service, queue_id, tag) (
              queue_tag_state:tencent_ci_jobs_finished:rate5m{state="Failed"}
            )
            / (queue_tag:tencent_ci_jobs_finished:rate5m > 0)
          |||),
          // Failed jobs per second by failure Code.
          record('queue_tag_code:tencent_ci_job_failures:rate5m', |||
            max by (bucket, region, service, queue_id, tag, code) (
              rate(tencent_ci_job_failures_total[5m])
            )
          |||),
          // The exporter's calls to the CI API, per replica: each replica of a pair makes its
          // own calls, so CI sees this times the number of replicas.
          record('bucket_endpoint_status:tencent_ci_api_requests:rate5m', |||
            max by (bucket, region, endpoint, status) (
              rate(tencent_ci_api_requests_total[5m])
            )
          |||),
          record('bucket_endpoint_error:tencent_ci_api_errors:rate5m', |||
            max by (bucket, region, endpoint, error) (
              rate(tencent_ci_api_errors_total[5m])
            )
          |||),
        ],
      },
    ],
  },
}
