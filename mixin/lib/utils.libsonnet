// Small helpers the alerts, rules and dashboards share.
{
  // A number as PromQL and Grafana write it: 0.1, not 0.10000000000000001.
  num(x):: std.manifestJson(x),

  // '15m' -> '15 minutes', for the descriptions that say how long a condition has held.
  // A duration of more than one unit ('1h30m') is shown as it is.
  humanDuration(d)::
    local units = { s: 'second', m: 'minute', h: 'hour', d: 'day', w: 'week' };
    local unit = d[std.length(d) - 1];
    local count = d[:std.length(d) - 1];
    if std.objectHas(units, unit) && std.length(count) > 0
       && std.all([std.member('0123456789', c) for c in std.stringChars(count)])
    then '%s %s%s' % [count, units[unit], if count == '1' then '' else 's']
    else d,

  // Keeps the cluster label through every aggregation (`by (`) and join (`on (`) of an
  // expression: every rule and panel query writes its groupings so, with one space.
  withCluster(expr, label)::
    if label == '' then expr
    else std.strReplace(std.strReplace(expr, 'by (', 'by (%s, ' % label), 'on (', 'on (%s, ' % label),

  // The colour of a threshold at an alert's level: red pages, orange warns.
  severityColour(severity)::
    local colours = { critical: 'red', warning: 'orange', info: 'blue' };
    assert std.objectHas(colours, severity) : 'severity %s: not one of %s' % [severity, std.objectFields(colours)];
    colours[severity],
}
