// The Tencent CI / Overview dashboard (grafana/dashboards/tencent-ci-overview.json), from _config.
local u = import '../lib/utils.libsonnet';

function(config)
  local a = config.alerts;
  // Every panel, query and variable reads the data source the `datasource` variable picks.
  local ds = { type: 'prometheus', uid: '${datasource}' };
  local fmt = config {
    overviewUID: config.dashboardUIDs.overview,
    queueUID: config.dashboardUIDs.queue,
    downFor: u.humanDuration(a.TencentCIExporterDown['for']),
    pollsFailingFor: u.humanDuration(a.TencentCIPollsFailing['for']),
    pausedFor: u.humanDuration(a.TencentCIQueuePaused['for']),
    saturatedFor: u.humanDuration(a.TencentCIQueueSaturated['for']),
    workflowPausedFor: u.humanDuration(a.TencentCIWorkflowPaused['for']),
  };
  // The Workflows row. A workflow is exported as a queue of service "workflow" (queue_id its
  // WorkflowId) and its runs as jobs of tag Workflow; batch (inventory trigger) jobs as jobs of
  // service "batch". The row follows Bucket and Region only: Service, Queue and Tag choose
  // media-processing queues and jobs, and leave workflows and batch jobs out.
  local wf = 'bucket=~"$bucket", region=~"$region", service="workflow"';
  local batch = 'bucket=~"$bucket", region=~"$region", service="batch"';
  local named = ' * on (bucket, region, service, queue_id) group_left (name) max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)';
  local perWorkflow(expr) = 'sum by (bucket, region, service, queue_id) (%s)' % expr;
  local failedRuns = perWorkflow('queue_tag_state:tencent_ci_jobs_finished:rate5m{%s, state="Failed"}' % wf);
  local finishedRuns = perWorkflow('queue_tag:tencent_ci_jobs_finished:rate5m{%s}' % wf);
  local runFailureRatio = '(%s / (%s > 0))%s' % [failedRuns, finishedRuns, named];
  local runsRunning = perWorkflow('max by (bucket, region, service, queue_id, tag) (tencent_ci_jobs{%s, state="Running"})' % wf);
  local ratioSteps = [
    { color: 'green', value: null },
    { color: u.severityColour(a.TencentCIWorkflowFailureRatioHigh.severity), value: a.TencentCIWorkflowFailureRatioHigh.ratio },
  ];
  local timeseries(id, x, y, title, description, unit, targets, extra={}) = {
    type: 'timeseries',
    title: title,
    description: description,
    datasource: ds,
    targets: [
      {
        datasource: ds,
        refId: std.char(65 + i),
        expr: targets[i][0],
        legendFormat: targets[i][1],
        range: true,
        instant: false,
      }
      for i in std.range(0, std.length(targets) - 1)
    ],
    fieldConfig: {
      defaults: {
        unit: unit,
        custom: {
          drawStyle: 'line',
          lineWidth: 1,
          fillOpacity: 10,
          showPoints: 'never',
          spanNulls: false,
        },
        min: 0,
      },
      overrides: [],
    },
    options: {
      legend: {
        displayMode: 'table',
        placement: 'bottom',
        calcs: ['lastNotNull', 'max'],
        showLegend: true,
      },
      tooltip: {
        mode: 'multi',
        sort: 'desc',
      },
    },
    id: id,
    gridPos: { h: 8, w: 8, x: x, y: y },
  } + extra;
  local tableTarget(ref, expr) = {
    datasource: ds,
    refId: ref,
    expr: expr,
    legendFormat: '__auto',
    instant: true,
    range: false,
    format: 'table',
  };
  local column(name, properties) = { matcher: { id: 'byName', options: name }, properties: properties };
  {
    uid: config.dashboardUIDs.overview,
    title: 'Tencent CI / Overview',
    description: 'Tencent Cloud CI queues and jobs, from tencent-ci-exporter.',
    tags: config.dashboardTags,
    editable: true,
    schemaVersion: 38,
    version: 1,
    graphTooltip: 1,
    timezone: config.dashboardTimezone,
    time: { from: config.dashboardPeriod, to: 'now' },
    refresh: config.dashboardRefresh,
    fiscalYearStartMonth: 0,
    liveNow: false,
    weekStart: '',
    annotations: {
      list: [],
    },
    links: [
      {
        title: 'Queue drill-down',
        type: 'link',
        icon: 'dashboard',
        url: '/d/%(queueUID)s/tencent-ci-queue' % fmt,
        includeVars: true,
        keepTime: true,
        tags: [],
        asDropdown: false,
        targetBlank: false,
        tooltip: '',
      },
    ],
    templating: {
      list: [
        {
          name: 'datasource',
          label: 'Data source',
          type: 'datasource',
          query: 'prometheus',
          hide: 0,
          includeAll: false,
          multi: false,
          options: [],
          refresh: 1,
          regex: '',
        },
        {
          name: 'bucket',
          label: 'Bucket',
          type: 'query',
          datasource: ds,
          definition: 'label_values(tencent_ci_up, bucket)',
          query: 'label_values(tencent_ci_up, bucket)',
          refresh: 2,
          regex: '',
          sort: 1,
          multi: true,
          includeAll: true,
          allValue: '.*',
          current: {
            selected: true,
            text: ['All'],
            value: ['$__all'],
          },
          options: [],
          hide: 0,
        },
        {
          name: 'region',
          label: 'Region',
          type: 'query',
          datasource: ds,
          definition: 'label_values(tencent_ci_up{bucket=~"$bucket"}, region)',
          query: 'label_values(tencent_ci_up{bucket=~"$bucket"}, region)',
          refresh: 2,
          regex: '',
          sort: 1,
          multi: true,
          includeAll: true,
          allValue: '.*',
          current: {
            selected: true,
            text: ['All'],
            value: ['$__all'],
          },
          options: [],
          hide: 0,
        },
        {
          name: 'service',
          label: 'Service',
          type: 'query',
          datasource: ds,
          definition: 'label_values(tencent_ci_queue_info{bucket=~"$bucket", region=~"$region", service!~"workflow|batch"}, service)',
          query: 'label_values(tencent_ci_queue_info{bucket=~"$bucket", region=~"$region", service!~"workflow|batch"}, service)',
          refresh: 2,
          regex: '',
          sort: 1,
          multi: true,
          includeAll: true,
          allValue: '.*',
          current: {
            selected: true,
            text: ['All'],
            value: ['$__all'],
          },
          options: [],
          hide: 0,
        },
        {
          name: 'queue_id',
          label: 'Queue',
          type: 'query',
          datasource: ds,
          definition: 'query_result(max by (name, queue_id) (tencent_ci_queue_info{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch"}))',
          query: 'query_result(max by (name, queue_id) (tencent_ci_queue_info{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch"}))',
          refresh: 2,
          regex: @'/\{(?:name="(?<text>.*)",)?queue_id="(?<value>[^"]*)"\}/',
          sort: 1,
          multi: true,
          includeAll: true,
          allValue: '.*',
          current: {
            selected: true,
            text: ['All'],
            value: ['$__all'],
          },
          options: [],
          hide: 0,
        },
        {
          name: 'tag',
          label: 'Tag',
          type: 'query',
          datasource: ds,
          definition: 'label_values(tencent_ci_jobs{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id"}, tag)',
          query: 'label_values(tencent_ci_jobs{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id"}, tag)',
          refresh: 2,
          regex: '',
          sort: 1,
          multi: true,
          includeAll: true,
          allValue: '.*',
          current: {
            selected: true,
            text: ['All'],
            value: ['$__all'],
          },
          options: [],
          hide: 0,
        },
      ],
    },
    panels: [
      {
        id: 1,
        type: 'row',
        title: 'Exporter health',
        collapsed: false,
        gridPos: {
          h: 1,
          w: 24,
          x: 0,
          y: 0,
        },
        panels: [],
      },
      {
        type: 'stat',
        title: 'Exporter replicas up',
        description: 'The share of the exporter processes Prometheus scrapes (%(exporterSelector)s) that answer, then how many answer and how many are scraped. Red when any scraped replica does not answer (TencentCIExporterDown pages after %(downFor)s), or when none is scraped at all (TencentCIExporterAbsent). A replica of an HA pair is counted on its own.' % fmt,
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'sum(up{%(exporterSelector)s}) / count(up{%(exporterSelector)s})' % fmt,
            legendFormat: 'answering',
            instant: true,
            range: false,
            format: 'time_series',
          },
          {
            datasource: ds,
            refId: 'B',
            expr: 'sum(up{%(exporterSelector)s})' % fmt,
            legendFormat: 'up',
            instant: true,
            range: false,
            format: 'time_series',
          },
          {
            datasource: ds,
            refId: 'C',
            expr: 'count(up{%(exporterSelector)s})' % fmt,
            legendFormat: 'scraped',
            instant: true,
            range: false,
            format: 'time_series',
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 'percentunit',
            mappings: [],
            thresholds: {
              mode: 'absolute',
              steps: [
                {
                  color: 'red',
                  value: null,
                },
                {
                  color: 'green',
                  value: 1,
                },
              ],
            },
            color: {
              mode: 'thresholds',
            },
            noValue: 'none scraped',
          },
          overrides: [
            {
              matcher: {
                id: 'byName',
                options: 'up',
              },
              properties: [
                {
                  id: 'unit',
                  value: 'none',
                },
                {
                  id: 'color',
                  value: {
                    mode: 'fixed',
                    fixedColor: 'blue',
                  },
                },
              ],
            },
            {
              matcher: {
                id: 'byName',
                options: 'scraped',
              },
              properties: [
                {
                  id: 'unit',
                  value: 'none',
                },
                {
                  id: 'color',
                  value: {
                    mode: 'fixed',
                    fixedColor: 'blue',
                  },
                },
              ],
            },
          ],
        },
        options: {
          reduceOptions: {
            calcs: ['lastNotNull'],
            fields: '',
            values: false,
          },
          colorMode: 'background',
          graphMode: 'none',
          textMode: 'value_and_name',
          orientation: 'auto',
          justifyMode: 'auto',
        },
        id: 2,
        gridPos: {
          h: 6,
          w: 4,
          x: 0,
          y: 1,
        },
      },
      {
        type: 'stat',
        title: 'Targets polled OK',
        description: 'Whether the last poll of each bucket succeeded completely (on every replica). Orange when it failed: TencentCIPollsFailing warns after %(pollsFailingFor)s of failing polls.' % fmt,
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'min by (bucket, region) (tencent_ci_up{bucket=~"$bucket", region=~"$region"})',
            legendFormat: '{{bucket}}',
            instant: true,
            range: false,
            format: 'time_series',
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 'none',
            mappings: [
              {
                type: 'value',
                options: {
                  '0': {
                    text: 'failing',
                    color: 'orange',
                    index: 0,
                  },
                  '1': {
                    text: 'OK',
                    color: 'green',
                    index: 1,
                  },
                },
              },
            ],
            thresholds: {
              mode: 'absolute',
              steps: [
                {
                  color: 'orange',
                  value: null,
                },
                {
                  color: 'green',
                  value: 1,
                },
              ],
            },
            color: {
              mode: 'thresholds',
            },
          },
          overrides: [],
        },
        options: {
          reduceOptions: {
            calcs: ['lastNotNull'],
            fields: '',
            values: false,
          },
          colorMode: 'background',
          graphMode: 'none',
          textMode: 'value_and_name',
          orientation: 'auto',
          justifyMode: 'auto',
        },
        id: 3,
        gridPos: {
          h: 6,
          w: 8,
          x: 4,
          y: 1,
        },
      },
      {
        type: 'timeseries',
        title: 'Last successful poll age',
        description: 'How old the data about each bucket is (the stalest replica). The dashed line is where TencentCIPollsStale warns.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'max by (bucket, region) (time() - tencent_ci_last_successful_poll_timestamp_seconds{bucket=~"$bucket", region=~"$region"})',
            legendFormat: '{{bucket}}',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 's',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
              thresholdsStyle: {
                mode: 'dashed',
              },
            },
            min: 0,
            thresholds: {
              mode: 'absolute',
              steps: [
                {
                  color: 'green',
                  value: null,
                },
                { color: u.severityColour(a.TencentCIPollsStale.severity), value: a.TencentCIPollsStale.maxAgeSeconds },
              ],
            },
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 4,
        gridPos: {
          h: 6,
          w: 6,
          x: 12,
          y: 1,
        },
      },
      {
        type: 'timeseries',
        title: 'Poll duration',
        description: 'How long the last poll of each bucket took.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'max by (bucket, region) (tencent_ci_poll_duration_seconds{bucket=~"$bucket", region=~"$region"})',
            legendFormat: '{{bucket}}',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 's',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
            },
            min: 0,
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 5,
        gridPos: {
          h: 6,
          w: 6,
          x: 18,
          y: 1,
        },
      },
      {
        type: 'timeseries',
        title: 'API requests by endpoint',
        description: 'Calls to the CI API per exporter replica (each replica of an HA pair makes its own).',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'sum by (endpoint, status) (max by (bucket, region, endpoint, status) (rate(tencent_ci_api_requests_total{bucket=~"$bucket", region=~"$region"}[$__rate_interval])))',
            legendFormat: '{{endpoint}} {{status}}',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 'reqps',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
            },
            min: 0,
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 6,
        gridPos: {
          h: 8,
          w: 6,
          x: 0,
          y: 7,
        },
      },
      {
        type: 'timeseries',
        title: 'API errors by endpoint',
        description: 'Failed calls by CI error Code (SlowDown is throttling) or failure kind.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'sum by (endpoint, error) (max by (bucket, region, endpoint, error) (rate(tencent_ci_api_errors_total{bucket=~"$bucket", region=~"$region"}[$__rate_interval])))',
            legendFormat: '{{endpoint}} {{error}}',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 'reqps',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
            },
            min: 0,
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 7,
        gridPos: {
          h: 8,
          w: 6,
          x: 6,
          y: 7,
        },
      },
      {
        type: 'timeseries',
        title: 'Throttled share of API calls',
        description: 'Calls that CI answered with slow down (429, 503, SlowDown) out of all the exporter\'s calls, over 5 minutes, per bucket. The dashed line is where TencentCIApiThrottled warns.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'sum by (bucket, region) (max by (bucket, region, endpoint) (rate(tencent_ci_api_throttled_requests_total{bucket=~"$bucket", region=~"$region"}[5m]))) / (sum by (bucket, region) (bucket_endpoint_status:tencent_ci_api_requests:rate5m{bucket=~"$bucket", region=~"$region"}) > 0)',
            legendFormat: '{{bucket}}',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 'percentunit',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
              thresholdsStyle: {
                mode: 'dashed',
              },
            },
            min: 0,
            max: 1,
            thresholds: {
              mode: 'absolute',
              steps: [
                {
                  color: 'green',
                  value: null,
                },
                { color: u.severityColour(a.TencentCIApiThrottled.severity), value: a.TencentCIApiThrottled.ratio },
              ],
            },
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 19,
        gridPos: {
          h: 8,
          w: 6,
          x: 12,
          y: 7,
        },
      },
      {
        type: 'timeseries',
        title: 'API call latency p95 by endpoint',
        description: 'How long the CI API takes to answer the exporter\'s calls, 95th percentile, per endpoint (the slowest replica).',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'histogram_quantile(0.95, max by (endpoint, le) (rate(tencent_ci_api_request_duration_seconds_bucket[$__rate_interval])))',
            legendFormat: '{{endpoint}}',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 's',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
            },
            min: 0,
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 8,
        gridPos: {
          h: 8,
          w: 6,
          x: 18,
          y: 7,
        },
      },
      {
        id: 9,
        type: 'row',
        title: 'Queues',
        collapsed: false,
        gridPos: {
          h: 1,
          w: 24,
          x: 0,
          y: 15,
        },
        panels: [],
      },
      {
        type: 'table',
        title: 'Queues',
        description: 'Every queue of the selected buckets (workflows are in the Workflows row). Running jobs and the backlog are counted over the selected tags the exporter polls. Click a queue\'s name for its dashboard. Orange cells are at the level of an alert: PAUSED (TencentCIQueuePaused), Saturation (TencentCIQueueSaturated), Oldest submitted age (TencentCIBacklogStuck).',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'B',
            expr: 'max by (bucket, region, service, queue_id) (tencent_ci_queue_paused{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id"}) * on (bucket, region, service, queue_id) group_left (name, category) max by (bucket, region, service, queue_id, name, category) (tencent_ci_queue_info)',
            legendFormat: '__auto',
            instant: true,
            range: false,
            format: 'table',
          },
          {
            datasource: ds,
            refId: 'C',
            expr: 'max by (bucket, region, service, queue_id) (tencent_ci_queue_max_concurrent{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id"}) * on (bucket, region, service, queue_id) group_left (name, category) max by (bucket, region, service, queue_id, name, category) (tencent_ci_queue_info)',
            legendFormat: '__auto',
            instant: true,
            range: false,
            format: 'table',
          },
          {
            datasource: ds,
            refId: 'D',
            expr: 'sum by (bucket, region, service, queue_id) (max by (bucket, region, service, queue_id, tag) (tencent_ci_jobs{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Running"})) * on (bucket, region, service, queue_id) group_left (name, category) max by (bucket, region, service, queue_id, name, category) (tencent_ci_queue_info)',
            legendFormat: '__auto',
            instant: true,
            range: false,
            format: 'table',
          },
          {
            datasource: ds,
            refId: 'E',
            expr: '(sum by (bucket, region, service, queue_id) (max by (bucket, region, service, queue_id, tag) (tencent_ci_jobs{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Running"})) / on (bucket, region, service, queue_id) (max by (bucket, region, service, queue_id) (tencent_ci_queue_max_concurrent{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id"}) > 0)) * on (bucket, region, service, queue_id) group_left (name, category) max by (bucket, region, service, queue_id, name, category) (tencent_ci_queue_info)',
            legendFormat: '__auto',
            instant: true,
            range: false,
            format: 'table',
          },
          {
            datasource: ds,
            refId: 'F',
            expr: 'sum by (bucket, region, service, queue_id) (max by (bucket, region, service, queue_id, tag) (tencent_ci_jobs{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Submitted"})) * on (bucket, region, service, queue_id) group_left (name, category) max by (bucket, region, service, queue_id, name, category) (tencent_ci_queue_info)',
            legendFormat: '__auto',
            instant: true,
            range: false,
            format: 'table',
          },
          {
            datasource: ds,
            refId: 'G',
            expr: 'max by (bucket, region, service, queue_id) (time() - tencent_ci_oldest_job_timestamp_seconds{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Submitted"}) * on (bucket, region, service, queue_id) group_left (name, category) max by (bucket, region, service, queue_id, name, category) (tencent_ci_queue_info)',
            legendFormat: '__auto',
            instant: true,
            range: false,
            format: 'table',
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 'short',
            custom: {
              align: 'auto',
            },
          },
          overrides: [
            {
              matcher: {
                id: 'byName',
                options: 'Paused',
              },
              properties: [
                {
                  id: 'unit',
                  value: 'none',
                },
                {
                  id: 'mappings',
                  value: [
                    {
                      type: 'value',
                      options: {
                        '0': {
                          text: 'no',
                          color: 'green',
                          index: 0,
                        },
                        '1': {
                          text: 'PAUSED',
                          color: 'orange',
                          index: 1,
                        },
                      },
                    },
                  ],
                },
                {
                  id: 'custom.cellOptions',
                  value: {
                    type: 'color-background',
                  },
                },
              ],
            },
            {
              matcher: {
                id: 'byName',
                options: 'MaxConcurrent',
              },
              properties: [
                {
                  id: 'unit',
                  value: 'none',
                },
              ],
            },
            {
              matcher: {
                id: 'byName',
                options: 'Running',
              },
              properties: [
                {
                  id: 'unit',
                  value: 'none',
                },
              ],
            },
            {
              matcher: {
                id: 'byName',
                options: 'Saturation',
              },
              properties: [
                {
                  id: 'unit',
                  value: 'percentunit',
                },
                {
                  id: 'thresholds',
                  value: {
                    mode: 'absolute',
                    steps: [
                      {
                        color: 'transparent',
                        value: null,
                      },
                      { color: u.severityColour(a.TencentCIQueueSaturated.severity), value: 1 },
                    ],
                  },
                },
                {
                  id: 'color',
                  value: {
                    mode: 'thresholds',
                  },
                },
                {
                  id: 'custom.cellOptions',
                  value: {
                    type: 'color-background',
                  },
                },
              ],
            },
            {
              matcher: {
                id: 'byName',
                options: 'Submitted backlog',
              },
              properties: [
                {
                  id: 'unit',
                  value: 'none',
                },
              ],
            },
            {
              matcher: {
                id: 'byName',
                options: 'Oldest submitted age',
              },
              properties: [
                {
                  id: 'unit',
                  value: 's',
                },
                {
                  id: 'thresholds',
                  value: {
                    mode: 'absolute',
                    steps: [
                      {
                        color: 'transparent',
                        value: null,
                      },
                      { color: u.severityColour(a.TencentCIBacklogStuck.severity), value: a.TencentCIBacklogStuck.maxAgeSeconds },
                    ],
                  },
                },
                {
                  id: 'color',
                  value: {
                    mode: 'thresholds',
                  },
                },
                {
                  id: 'custom.cellOptions',
                  value: {
                    type: 'color-background',
                  },
                },
              ],
            },
            {
              matcher: {
                id: 'byName',
                options: 'name',
              },
              properties: [
                {
                  id: 'links',
                  value: [
                    {
                      title: 'Open the queue dashboard for ${__data.fields.name}',
                      url: '/d/%(queueUID)s/tencent-ci-queue?${datasource:queryparam}&var-bucket=${__data.fields.bucket}&var-region=${__data.fields.region}&var-service=${__data.fields.service}&var-queue_id=${__data.fields.queue_id}&${tag:queryparam}&${__url_time_range}' % fmt,
                    },
                  ],
                },
              ],
            },
          ],
        },
        options: {
          showHeader: true,
          cellHeight: 'sm',
          sortBy: [
            {
              displayName: 'name',
              desc: false,
            },
          ],
        },
        transformations: [
          {
            id: 'merge',
            options: {},
          },
          {
            id: 'organize',
            options: {
              excludeByName: {
                Time: true,
              },
              indexByName: {
                name: 0,
                service: 1,
                bucket: 2,
                region: 3,
                queue_id: 4,
                category: 5,
                Paused: 6,
                MaxConcurrent: 7,
                Running: 8,
                Saturation: 9,
                'Submitted backlog': 10,
                'Oldest submitted age': 11,
              },
              renameByName: {
                'Value #B': 'Paused',
                'Value #C': 'MaxConcurrent',
                'Value #D': 'Running',
                'Value #E': 'Saturation',
                'Value #F': 'Submitted backlog',
                'Value #G': 'Oldest submitted age',
              },
            },
          },
        ],
        id: 10,
        gridPos: {
          h: 10,
          w: 24,
          x: 0,
          y: 16,
        },
      },
      {
        id: 11,
        type: 'row',
        title: 'Jobs',
        collapsed: false,
        gridPos: {
          h: 1,
          w: 24,
          x: 0,
          y: 26,
        },
        panels: [],
      },
      {
        type: 'timeseries',
        title: 'Jobs finished per second by state',
        description: 'Over 5 minutes (recording rule). The panels of this row count the jobs of media-processing queues: workflow runs and batch jobs are in the Workflows row, and counting them here too would count the same work twice.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'sum by (state) (queue_tag_state:tencent_ci_jobs_finished:rate5m{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag"})',
            legendFormat: '{{state}}',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 'suffix: jobs/s',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
            },
            min: 0,
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 12,
        gridPos: {
          h: 8,
          w: 8,
          x: 0,
          y: 27,
        },
      },
      {
        type: 'timeseries',
        title: 'Failure ratio',
        description: 'Failed out of finished jobs over 5 minutes, per queue and tag, and over all selected. The dashed line is where TencentCIJobFailureRatioHigh pages, for a queue and tag with enough finished jobs.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'queue_tag:tencent_ci_jobs_failed_per_finished:ratio_rate5m{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag"} * on (bucket, region, service, queue_id) group_left (name) max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)',
            legendFormat: '{{name}} / {{tag}}',
            range: true,
            instant: false,
          },
          {
            datasource: ds,
            refId: 'B',
            expr: 'sum(queue_tag_state:tencent_ci_jobs_finished:rate5m{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Failed"}) / (sum(queue_tag_state:tencent_ci_jobs_finished:rate5m{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag"}) > 0)',
            legendFormat: 'all selected',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 'percentunit',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
              thresholdsStyle: {
                mode: 'dashed',
              },
            },
            min: 0,
            max: 1,
            thresholds: {
              mode: 'absolute',
              steps: [
                {
                  color: 'green',
                  value: null,
                },
                { color: u.severityColour(a.TencentCIJobFailureRatioHigh.severity), value: a.TencentCIJobFailureRatioHigh.ratio },
              ],
            },
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 13,
        gridPos: {
          h: 8,
          w: 8,
          x: 8,
          y: 27,
        },
      },
      {
        type: 'timeseries',
        title: 'Failures per second by code',
        description: 'Failed jobs per second by failure code over 5 minutes, all selected queues together. The exporter\'s / page lists the last 50 failed jobs of each bucket with their JobId and Message.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'sum by (code) (queue_tag_code:tencent_ci_job_failures:rate5m{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag"})',
            legendFormat: '{{code}}',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 'suffix: jobs/s',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
            },
            min: 0,
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 14,
        gridPos: {
          h: 8,
          w: 8,
          x: 16,
          y: 27,
        },
      },
      {
        type: 'timeseries',
        title: 'Run duration of successful jobs',
        description: 'StartTime to EndTime.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'histogram_quantile(0.5, sum by (le) (max by (bucket, region, service, queue_id, tag, le, state) (rate(tencent_ci_job_run_duration_seconds_bucket{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Success"}[$__rate_interval]))))',
            legendFormat: 'p50',
            range: true,
            instant: false,
          },
          {
            datasource: ds,
            refId: 'B',
            expr: 'histogram_quantile(0.95, sum by (le) (max by (bucket, region, service, queue_id, tag, le, state) (rate(tencent_ci_job_run_duration_seconds_bucket{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Success"}[$__rate_interval]))))',
            legendFormat: 'p95',
            range: true,
            instant: false,
          },
          {
            datasource: ds,
            refId: 'C',
            expr: 'histogram_quantile(0.99, sum by (le) (max by (bucket, region, service, queue_id, tag, le, state) (rate(tencent_ci_job_run_duration_seconds_bucket{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Success"}[$__rate_interval]))))',
            legendFormat: 'p99',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 's',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
            },
            min: 0,
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 15,
        gridPos: {
          h: 8,
          w: 8,
          x: 0,
          y: 35,
        },
      },
      {
        type: 'timeseries',
        title: 'Queue wait p95 by tag',
        description: 'CreationTime to StartTime.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'histogram_quantile(0.95, sum by (tag, le) (max by (bucket, region, service, queue_id, tag, le) (rate(tencent_ci_job_queue_wait_seconds_bucket{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag"}[$__rate_interval]))))',
            legendFormat: '{{tag}}',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 's',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
            },
            min: 0,
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 16,
        gridPos: {
          h: 8,
          w: 8,
          x: 8,
          y: 35,
        },
      },
      {
        type: 'timeseries',
        title: 'Oldest running job age',
        description: 'Since StartTime of the oldest job still running. The dashed line is where TencentCIJobRunningTooLong warns.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'max by (bucket, region, service, queue_id, tag) (time() - tencent_ci_oldest_job_timestamp_seconds{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Running"}) * on (bucket, region, service, queue_id) group_left (name) max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)',
            legendFormat: '{{name}} / {{tag}}',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 's',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
              thresholdsStyle: {
                mode: 'dashed',
              },
            },
            min: 0,
            thresholds: {
              mode: 'absolute',
              steps: [
                {
                  color: 'green',
                  value: null,
                },
                { color: u.severityColour(a.TencentCIJobRunningTooLong.severity), value: a.TencentCIJobRunningTooLong.maxAgeSeconds },
              ],
            },
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 17,
        gridPos: {
          h: 8,
          w: 8,
          x: 16,
          y: 35,
        },
      },
      {
        type: 'timeseries',
        title: 'Jobs now by state',
        description: 'Submitted, Running and Pause jobs at the last poll.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'sum by (state) (max by (bucket, region, service, queue_id, tag, state) (tencent_ci_jobs{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag"}))',
            legendFormat: '{{state}}',
            range: true,
            instant: false,
          },
        ],
        fieldConfig: {
          defaults: {
            unit: 'short',
            custom: {
              drawStyle: 'line',
              lineWidth: 1,
              fillOpacity: 10,
              showPoints: 'never',
              spanNulls: false,
            },
            min: 0,
          },
          overrides: [],
        },
        options: {
          legend: {
            displayMode: 'table',
            placement: 'bottom',
            calcs: ['lastNotNull', 'max'],
            showLegend: true,
          },
          tooltip: {
            mode: 'multi',
            sort: 'desc',
          },
        },
        id: 18,
        gridPos: {
          h: 7,
          w: 24,
          x: 0,
          y: 43,
        },
      },
      {
        id: 20,
        type: 'row',
        title: 'Workflows',
        collapsed: false,
        gridPos: {
          h: 1,
          w: 24,
          x: 0,
          y: 50,
        },
        panels: [],
      },
      {
        type: 'table',
        title: 'Workflows',
        description: 'Every workflow of the selected buckets (this row follows Bucket and Region only), at the last poll. Running: its runs running now. Failure ratio and Finished in 5m: failed out of finished runs, and how many finished, over 5 minutes. Orange or red cells are at the level of an alert: PAUSED (TencentCIWorkflowPaused warns after %(workflowPausedFor)s: uploads start no run of a paused workflow), Failure ratio (TencentCIWorkflowFailureRatioHigh, once enough runs finished). CI\'s workflow runs never wait: they have no Submitted backlog and no MaxConcurrent.' % fmt,
        datasource: ds,
        targets: [
          tableTarget('B', 'max by (bucket, region, service, queue_id) (tencent_ci_queue_paused{%s})%s' % [wf, named]),
          tableTarget('C', runsRunning + named),
          tableTarget('D', 'max by (bucket, region, service, queue_id) (time() - tencent_ci_oldest_job_timestamp_seconds{%s, state="Running"})%s' % [wf, named]),
          tableTarget('E', finishedRuns + ' * 300' + named),
          tableTarget('F', runFailureRatio),
        ],
        fieldConfig: {
          defaults: {
            unit: 'short',
            custom: {
              align: 'auto',
            },
          },
          overrides: [
            column('Paused', [
              { id: 'unit', value: 'none' },
              {
                id: 'mappings',
                value: [
                  {
                    type: 'value',
                    options: {
                      '0': { text: 'no', color: 'green', index: 0 },
                      '1': { text: 'PAUSED', color: u.severityColour(a.TencentCIWorkflowPaused.severity), index: 1 },
                    },
                  },
                ],
              },
              { id: 'custom.cellOptions', value: { type: 'color-background' } },
            ]),
            column('Running', [{ id: 'unit', value: 'none' }]),
            column('Oldest running age', [{ id: 'unit', value: 's' }]),
            column('Finished in 5m', [{ id: 'unit', value: 'none' }, { id: 'decimals', value: 0 }]),
            column('Failure ratio', [
              { id: 'unit', value: 'percentunit' },
              {
                id: 'thresholds',
                value: {
                  mode: 'absolute',
                  steps: [{ color: 'transparent', value: null }] + ratioSteps[1:],
                },
              },
              { id: 'color', value: { mode: 'thresholds' } },
              { id: 'custom.cellOptions', value: { type: 'color-background' } },
            ]),
          ],
        },
        options: {
          showHeader: true,
          cellHeight: 'sm',
          sortBy: [
            {
              displayName: 'name',
              desc: false,
            },
          ],
        },
        transformations: [
          {
            id: 'merge',
            options: {},
          },
          {
            id: 'organize',
            options: {
              excludeByName: {
                Time: true,
                service: true,
              },
              indexByName: {
                name: 0,
                bucket: 1,
                region: 2,
                queue_id: 3,
                Paused: 4,
                Running: 5,
                'Oldest running age': 6,
                'Finished in 5m': 7,
                'Failure ratio': 8,
              },
              renameByName: {
                queue_id: 'WorkflowId',
                'Value #B': 'Paused',
                'Value #C': 'Running',
                'Value #D': 'Oldest running age',
                'Value #E': 'Finished in 5m',
                'Value #F': 'Failure ratio',
              },
            },
          },
        ],
        id: 21,
        gridPos: {
          h: 8,
          w: 24,
          x: 0,
          y: 51,
        },
      },
      timeseries(
        22, 0, 59,
        'Workflow runs finished per second by state',
        'Runs of each workflow that finished Success, Failed or Cancel, per second over 5 minutes (recording rule). Every finished run is counted, described by id or not.',
        'suffix: runs/s',
        [['queue_tag_state:tencent_ci_jobs_finished:rate5m{%s}%s' % [wf, named], '{{name}} / {{state}}']],
      ),
      timeseries(
        23, 8, 59,
        'Workflow failure ratio',
        'Failed out of finished runs over 5 minutes, per workflow. The dashed line is where TencentCIWorkflowFailureRatioHigh pages, for a workflow with enough finished runs.',
        'percentunit',
        [[runFailureRatio, '{{name}}']],
        {
          fieldConfig+: {
            defaults+: {
              max: 1,
              custom+: { thresholdsStyle: { mode: 'dashed' } },
              thresholds: { mode: 'absolute', steps: ratioSteps },
            },
          },
        },
      ),
      timeseries(
        24, 16, 59,
        'Workflow runs running now',
        'Runs of each workflow in state Running at the last poll. A run starts Running: workflows have no Submitted or Pause runs.',
        'short',
        [[runsRunning + named, '{{name}}']],
      ),
      timeseries(
        25, 0, 67,
        'Failed workflow runs per second by failed step',
        'The step type (Transcode, Snapshot, ...) of the first failed step of failed runs, per second over 5 minutes. Only the runs the exporter described by id are counted (the listing does not say which step failed): an undercount, to tell which step fails, not how many runs do (the failure ratio counts every run). The exporter\'s / page lists the last failed runs with the step\'s JobId and message.',
        'suffix: runs/s',
        [['sum by (bucket, region, service, queue_id, code) (queue_tag_code:tencent_ci_job_failures:rate5m{%s})%s' % [wf, named], '{{name}} / {{code}}']],
      ),
      timeseries(
        26, 8, 67,
        'Failed workflow run duration p90 (described runs)',
        'StartTime of a failed run\'s first step to EndTime of its last, 90th percentile, per workflow. Only runs the exporter described by id have a duration (the listing gives no start or end time), and it describes the failed ones, for their failed step: how long a run takes to fail, with gaps when none failed; do not alert on it. Steps have no duration of their own in the metrics, so there is no slowest-steps view: a run\'s steps are the jobs they ran, in their queues.',
        's',
        [['histogram_quantile(0.9, sum by (bucket, region, service, queue_id, le) (max by (bucket, region, service, queue_id, tag, le, state) (rate(tencent_ci_job_run_duration_seconds_bucket{%s, state="Failed"}[$__rate_interval]))))%s' % [wf, named], '{{name}}']],
      ),
      timeseries(
        27, 16, 67,
        'Batch jobs finished per second by type and state',
        'Inventory trigger (batch) jobs, per second over 5 minutes (recording rule), by type: Workflow (starts workflow runs, counted above) and Job (starts jobs, counted in their queues). Left out of the Jobs row so that the work is not counted twice; no alert watches them.',
        'suffix: jobs/s',
        [['sum by (tag, state) (queue_tag_state:tencent_ci_jobs_finished:rate5m{%s})' % batch, '{{tag}} / {{state}}']],
      ),
    ],
  }
