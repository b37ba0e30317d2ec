// The Tencent CI / Queue dashboard (grafana/dashboards/tencent-ci-queue.json), from _config.
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
  };
  {
    uid: config.dashboardUIDs.queue,
    title: 'Tencent CI / Queue',
    description: 'One or a few Tencent Cloud CI queues in detail, from tencent-ci-exporter. Workflows and batch jobs are not queues here: the overview\'s Workflows row shows them.',
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
        title: 'Overview',
        type: 'link',
        icon: 'dashboard',
        url: '/d/%(overviewUID)s/tencent-ci-overview' % fmt,
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
        title: 'Queue',
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
        type: 'table',
        title: 'Queue settings',
        description: 'The queue\'s settings at the last poll. PAUSED is orange: TencentCIQueuePaused warns after %(pausedFor)s.' % fmt,
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
            expr: 'max by (bucket, region, service, queue_id) (tencent_ci_queue_max_size{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id"}) * on (bucket, region, service, queue_id) group_left (name, category) max by (bucket, region, service, queue_id, name, category) (tencent_ci_queue_info)',
            legendFormat: '__auto',
            instant: true,
            range: false,
            format: 'table',
          },
          {
            datasource: ds,
            refId: 'E',
            expr: 'max by (bucket, region, service, queue_id) (tencent_ci_queue_notify_enabled{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id"}) * on (bucket, region, service, queue_id) group_left (name, category) max by (bucket, region, service, queue_id, name, category) (tencent_ci_queue_info)',
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
                options: 'MaxSize',
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
                options: 'Notify',
              },
              properties: [
                {
                  id: 'unit',
                  value: 'none',
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
                MaxSize: 8,
                Notify: 9,
              },
              renameByName: {
                'Value #B': 'Paused',
                'Value #C': 'MaxConcurrent',
                'Value #D': 'MaxSize',
                'Value #E': 'Notify',
              },
            },
          },
        ],
        id: 2,
        gridPos: {
          h: 5,
          w: 24,
          x: 0,
          y: 1,
        },
      },
      {
        type: 'timeseries',
        title: 'Running jobs and MaxConcurrent',
        description: 'Running jobs of the selected tags.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'sum by (bucket, region, service, queue_id) (max by (bucket, region, service, queue_id, tag) (tencent_ci_jobs{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Running"})) * on (bucket, region, service, queue_id) group_left (name) max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)',
            legendFormat: '{{name}} running',
            range: true,
            instant: false,
          },
          {
            datasource: ds,
            refId: 'B',
            expr: 'max by (bucket, region, service, queue_id) (tencent_ci_queue_max_concurrent{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id"}) * on (bucket, region, service, queue_id) group_left (name) max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)',
            legendFormat: '{{name}} MaxConcurrent',
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
        id: 3,
        gridPos: {
          h: 8,
          w: 8,
          x: 0,
          y: 6,
        },
      },
      {
        type: 'timeseries',
        title: 'Saturation (running / MaxConcurrent)',
        description: 'Running jobs of the selected tags out of the queue\'s MaxConcurrent. The dashed line (all slots busy) is where TencentCIQueueSaturated warns after %(saturatedFor)s.' % fmt,
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: '(sum by (bucket, region, service, queue_id) (max by (bucket, region, service, queue_id, tag) (tencent_ci_jobs{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Running"})) / on (bucket, region, service, queue_id) (max by (bucket, region, service, queue_id) (tencent_ci_queue_max_concurrent{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id"}) > 0)) * on (bucket, region, service, queue_id) group_left (name) max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)',
            legendFormat: '{{name}}',
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
                { color: u.severityColour(a.TencentCIQueueSaturated.severity), value: 1 },
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
          h: 8,
          w: 8,
          x: 8,
          y: 6,
        },
      },
      {
        type: 'timeseries',
        title: 'Queue fill (waiting / MaxSize)',
        description: 'Submitted and Pause jobs against MaxSize. The dashed line is where TencentCIQueueNearlyFull warns.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: '(sum by (bucket, region, service, queue_id) (max by (bucket, region, service, queue_id, tag, state) (tencent_ci_jobs{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state=~"Submitted|Pause"})) / on (bucket, region, service, queue_id) (max by (bucket, region, service, queue_id) (tencent_ci_queue_max_size{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id"}) > 0)) * on (bucket, region, service, queue_id) group_left (name) max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)',
            legendFormat: '{{name}}',
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
                { color: u.severityColour(a.TencentCIQueueNearlyFull.severity), value: a.TencentCIQueueNearlyFull.fill },
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
        id: 5,
        gridPos: {
          h: 8,
          w: 8,
          x: 16,
          y: 6,
        },
      },
      {
        type: 'timeseries',
        title: 'Jobs now by tag and state',
        description: 'Submitted, Running and Pause jobs of the selected queues at the last poll, by tag.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'sum by (tag, state) (max by (bucket, region, service, queue_id, tag, state) (tencent_ci_jobs{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag"}))',
            legendFormat: '{{tag}} {{state}}',
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
        id: 6,
        gridPos: {
          h: 8,
          w: 12,
          x: 0,
          y: 14,
        },
      },
      {
        type: 'timeseries',
        title: 'Oldest submitted job age by tag',
        description: 'Since CreationTime of the oldest job not started yet. The dashed line is where TencentCIBacklogStuck warns.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'max by (bucket, region, service, queue_id, tag) (time() - tencent_ci_oldest_job_timestamp_seconds{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Submitted"}) * on (bucket, region, service, queue_id) group_left (name) max by (bucket, region, service, queue_id, name) (tencent_ci_queue_info)',
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
                { color: u.severityColour(a.TencentCIBacklogStuck.severity), value: a.TencentCIBacklogStuck.maxAgeSeconds },
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
        id: 7,
        gridPos: {
          h: 8,
          w: 12,
          x: 12,
          y: 14,
        },
      },
      {
        id: 8,
        type: 'row',
        title: 'Jobs',
        collapsed: false,
        gridPos: {
          h: 1,
          w: 24,
          x: 0,
          y: 22,
        },
        panels: [],
      },
      {
        type: 'timeseries',
        title: 'Jobs finished per second by tag and state',
        description: 'Over 5 minutes (recording rule).',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'sum by (tag, state) (queue_tag_state:tencent_ci_jobs_finished:rate5m{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag"})',
            legendFormat: '{{tag}} {{state}}',
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
        id: 9,
        gridPos: {
          h: 8,
          w: 8,
          x: 0,
          y: 23,
        },
      },
      {
        type: 'timeseries',
        title: 'Failure ratio by tag',
        description: 'Failed out of finished jobs over 5 minutes. The dashed line is where TencentCIJobFailureRatioHigh pages, for a queue and tag with enough finished jobs.',
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
        id: 10,
        gridPos: {
          h: 8,
          w: 8,
          x: 8,
          y: 23,
        },
      },
      {
        type: 'timeseries',
        title: 'Failures per second by code',
        description: 'Failed jobs per second by tag and failure code over 5 minutes. The dashed line is where TencentCIJobFailureCodeBurst warns (that many failures of one code in 5 minutes, for one queue). The exporter\'s / page lists the last 50 failed jobs with JobId and Message.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'sum by (tag, code) (queue_tag_code:tencent_ci_job_failures:rate5m{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag"})',
            legendFormat: '{{tag}} {{code}}',
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
                { color: u.severityColour(a.TencentCIJobFailureCodeBurst.severity), value: a.TencentCIJobFailureCodeBurst.failures / 300 },
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
        id: 11,
        gridPos: {
          h: 8,
          w: 8,
          x: 16,
          y: 23,
        },
      },
      {
        type: 'timeseries',
        title: 'Run duration of successful jobs by tag',
        description: 'StartTime to EndTime.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'histogram_quantile(0.5, sum by (tag, le) (max by (bucket, region, service, queue_id, tag, le, state) (rate(tencent_ci_job_run_duration_seconds_bucket{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Success"}[$__rate_interval]))))',
            legendFormat: '{{tag}} p50',
            range: true,
            instant: false,
          },
          {
            datasource: ds,
            refId: 'B',
            expr: 'histogram_quantile(0.95, sum by (tag, le) (max by (bucket, region, service, queue_id, tag, le, state) (rate(tencent_ci_job_run_duration_seconds_bucket{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Success"}[$__rate_interval]))))',
            legendFormat: '{{tag}} p95',
            range: true,
            instant: false,
          },
          {
            datasource: ds,
            refId: 'C',
            expr: 'histogram_quantile(0.99, sum by (tag, le) (max by (bucket, region, service, queue_id, tag, le, state) (rate(tencent_ci_job_run_duration_seconds_bucket{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag", state="Success"}[$__rate_interval]))))',
            legendFormat: '{{tag}} p99',
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
        id: 12,
        gridPos: {
          h: 8,
          w: 8,
          x: 0,
          y: 31,
        },
      },
      {
        type: 'timeseries',
        title: 'Queue wait by tag',
        description: 'CreationTime to StartTime.',
        datasource: ds,
        targets: [
          {
            datasource: ds,
            refId: 'A',
            expr: 'histogram_quantile(0.5, sum by (tag, le) (max by (bucket, region, service, queue_id, tag, le) (rate(tencent_ci_job_queue_wait_seconds_bucket{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag"}[$__rate_interval]))))',
            legendFormat: '{{tag}} p50',
            range: true,
            instant: false,
          },
          {
            datasource: ds,
            refId: 'B',
            expr: 'histogram_quantile(0.95, sum by (tag, le) (max by (bucket, region, service, queue_id, tag, le) (rate(tencent_ci_job_queue_wait_seconds_bucket{bucket=~"$bucket", region=~"$region", service=~"$service", service!~"workflow|batch", queue_id=~"$queue_id", tag=~"$tag"}[$__rate_interval]))))',
            legendFormat: '{{tag}} p95',
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
        id: 13,
        gridPos: {
          h: 8,
          w: 8,
          x: 8,
          y: 31,
        },
      },
      {
        type: 'timeseries',
        title: 'Oldest running job age by tag',
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
        id: 14,
        gridPos: {
          h: 8,
          w: 8,
          x: 16,
          y: 31,
        },
      },
    ],
  }
