// The Grafana dashboards, by file name (grafana/dashboards/<name>). With _config.clusterLabel
// set, each gets a variable for the cluster after `datasource`, and every query selects it
// and keeps it through its aggregations and joins.
local u = import '../lib/utils.libsonnet';

local clusterScoped(dashboard, config) =
  local label = config.clusterLabel;
  local matcher = '%s=~"$cluster"' % label;
  local exporter = '{%s}' % config.exporterSelector;
  local select(expr) =
    std.strReplace(
      std.strReplace(expr, 'bucket=~"$bucket"', '%s, bucket=~"$bucket"' % matcher),
      exporter,
      '{%s, %s}' % [config.exporterSelector, matcher],
    );
  local query(expr) = u.withCluster(select(expr), label);
  local panel(p) =
    p
    + (if std.objectHas(p, 'targets') then { targets: [t { expr: query(t.expr) } for t in p.targets] } else {})
    + (if std.objectHas(p, 'panels') then { panels: [panel(q) for q in p.panels] } else {});
  local variable(v) =
    if v.type != 'query' then v
    else
      local q = std.strReplace(select(v.query), 'label_values(tencent_ci_up, ', 'label_values(tencent_ci_up{%s}, ' % matcher);
      v { query: q, definition: q };
  local cluster = {
    name: 'cluster',
    label: 'Cluster',
    type: 'query',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    query: 'label_values(tencent_ci_up, %s)' % label,
    definition: self.query,
    refresh: 2,
    regex: '',
    sort: 1,
    hide: 0,
    multi: false,
    includeAll: false,
    options: [],
  };
  local vars = dashboard.templating.list;
  if label == '' then dashboard
  else dashboard {
    templating+: { list: [vars[0], cluster] + [variable(v) for v in vars[1:]] },
    panels: [panel(p) for p in dashboard.panels],
  };

{
  grafanaDashboards+:: {
    'tencent-ci-overview.json': clusterScoped((import 'overview.libsonnet')($._config), $._config),
    'tencent-ci-queue.json': clusterScoped((import 'queue.libsonnet')($._config), $._config),
  },
}
