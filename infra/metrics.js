'use strict';

// The runner's CloudWatch dashboard and a RetriesExhausted alarm per task type, made at
// package time from the task types the zip registers (`python -m runner.metrics`, the
// same registry the functions build: tasks/ plus TASK_RUNNER_TASK_MODULES).
//
// Why generated: an alarm watches one metric (one set of dimension values), and an
// alarm may not use a SEARCH expression, so "any type" cannot be one alarm over the
// per-type metric without a second, aggregate dimension set that every document would
// carry (one more metric per type and metric name, billed). The types are known when
// the zip is built, and a new type needs a deploy anyway, which makes its alarm.
//
// The names (namespace, metrics, dimensions) are runner/metrics.py's; the deploy tests
// check the two agree.
const { execFileSync } = require('child_process');
const path = require('path');
const fs = require('fs');
const { findPython } = require('./find-python');

const ROOT = path.resolve(__dirname, '..');
const COUNTS_PERIOD = 60;

function taskTypes() {
  const venv = path.join(ROOT, '.venv', 'bin', 'python');
  const pythons = [fs.existsSync(venv) ? venv : null, findPython('3.11+')].filter(Boolean);
  let lastError = 'no Python 3.11+ found';
  for (const python of pythons) {
    try {
      const out = execFileSync(python, ['-m', 'runner.metrics'], {
        cwd: ROOT,
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 60000,
      });
      const types = JSON.parse(out.trim().split('\n').pop());
      if (Array.isArray(types) && types.length > 0) return types;
      lastError = `${python}: no task types registered`;
    } catch (error) {
      lastError = `${python}: ${String(error.stderr || error.message).trim().split('\n').pop()}`;
    }
  }
  throw new Error(
    `infra/metrics.js needs the task types for the per-type alarms: ${lastError}` +
      " (run 'make install' first: the Python that packages must import tasks/)"
  );
}

function pascal(type) {
  return type
    .toLowerCase()
    .split(/[^a-z0-9]+/)
    .filter(Boolean)
    .map((word) => word[0].toUpperCase() + word.slice(1))
    .join('');
}

function alarmId(type) {
  return `RetriesExhausted${pascal(type)}Alarm`;
}

// One line per type (and outcome) of a metric, for a widget's "metrics".
function lines(namespace, metric, types, outcomes, stat) {
  const found = [];
  for (const type of types) {
    for (const outcome of outcomes || [null]) {
      const line = [namespace, metric, 'type', type];
      if (outcome) line.push('outcome', outcome);
      const label = outcome ? `${type} ${outcome}` : type;
      found.push([...line, { stat, label }]);
    }
  }
  return found;
}

function widget(title, metrics, y, x, extra = {}) {
  return {
    type: 'metric',
    x,
    y,
    width: 12,
    height: 6,
    properties: { title, region: '${AWS::Region}', view: 'timeSeries', period: COUNTS_PERIOD, metrics, ...extra },
  };
}

function dashboard(namespace, types, alarms) {
  const widgets = [
    widget('Tasks succeeded per minute', lines(namespace, 'TaskSucceeded', types, null, 'Sum'), 0, 0),
    widget(
      'Tasks failed per minute (retryable / permanent)',
      lines(namespace, 'TaskFailed', types, ['retryable', 'permanent'], 'Sum'),
      0,
      12
    ),
    widget(
      'Timed out, retried, retries exhausted',
      [
        ...lines(namespace, 'TaskTimedOut', types, null, 'Sum'),
        ...lines(namespace, 'TaskRetried', types, null, 'Sum'),
        ...lines(namespace, 'RetriesExhausted', types, null, 'Sum'),
      ],
      6,
      0
    ),
    widget('Handler duration p99 (ms)', lines(namespace, 'HandlerDuration', types, null, 'p99'), 6, 12),
    widget('Queue latency, created to claimed, p99 (ms)', lines(namespace, 'QueueLatency', types, null, 'p99'), 12, 0),
    {
      type: 'alarm',
      x: 12,
      y: 12,
      width: 12,
      height: 6,
      properties: { title: 'Alarms', alarms },
    },
  ];
  return { widgets };
}

// The alarms the template already has (infra/resources.yml), shown beside the new ones
// (tests/deploy checks this names every alarm of the template): each resource whose
// Type is AWS::CloudWatch::Alarm, read from the file so a new alarm joins by itself.
function existingAlarms() {
  const text = fs.readFileSync(path.join(__dirname, 'resources.yml'), 'utf8');
  const found = [...text.matchAll(/^ {2}(\w+):\n {4}Type: AWS::CloudWatch::Alarm$/gm)];
  if (found.length === 0) throw new Error('infra/metrics.js: no alarm found in infra/resources.yml');
  return found.map((m) => m[1]);
}

module.exports = async ({ resolveVariable }) => {
  const stage = await resolveVariable('sls:stage');
  const namespace = `TaskRunner/${stage}`;
  const types = taskTypes();
  const resources = {};
  for (const type of types) {
    resources[alarmId(type)] = {
      Type: 'AWS::CloudWatch::Alarm',
      Properties: {
        AlarmDescription: `${type}: a task's retries are exhausted (the retry workflow gave up; the task is FAILED).`,
        Namespace: namespace,
        MetricName: 'RetriesExhausted',
        Dimensions: [{ Name: 'type', Value: type }],
        Statistic: 'Sum',
        Period: 300,
        EvaluationPeriods: 1,
        Threshold: 0,
        ComparisonOperator: 'GreaterThanThreshold',
        TreatMissingData: 'notBreaching',
        AlarmActions: [{ Ref: 'AlarmTopic' }],
      },
    };
  }
  const alarms = [...existingAlarms(), ...types.map(alarmId)].map((id) => `\${${id}.Arn}`);
  resources.TaskRunnerDashboard = {
    Type: 'AWS::CloudWatch::Dashboard',
    Properties: {
      DashboardName: `task-runner-${stage}`,
      DashboardBody: { 'Fn::Sub': JSON.stringify(dashboard(namespace, types, alarms)) },
    },
  };
  return {
    Resources: resources,
    Outputs: {
      MetricsNamespace: { Value: namespace },
      DashboardName: { Value: { Ref: 'TaskRunnerDashboard' } },
    },
  };
};

module.exports.taskTypes = taskTypes;
module.exports.alarmId = alarmId;
