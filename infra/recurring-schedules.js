'use strict';

// Task types declare their recurring schedules in code, next to the task
// (TaskDefinition(schedules=(Recurring(...),)), runner/recurring.py), where the registry
// checks each schedule's input against the type's model. This local plugin turns them
// into AWS::Scheduler::Schedule resources of the packaged template: it runs
// `python -m runner.recurring`, which prints them as CloudFormation JSON for the
// deployment's registry (tasks/, without TASK_RUNNER_TASK_MODULES), and adds them.
//
// The interpreter: TASK_RUNNER_PYTHON, else the project's .venv/bin/python, else python3
// on PATH; it needs the runner's requirements (pydantic), as the CLI does. A failure
// fails the package: a schedule left out silently would never run.
const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

class RecurringSchedules {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = { 'before:package:finalize': () => this.add() };
  }

  static interpreter(serviceDir, env = process.env) {
    if (env.TASK_RUNNER_PYTHON) return env.TASK_RUNNER_PYTHON;
    const venv = path.join(serviceDir, '.venv', 'bin', 'python');
    return fs.existsSync(venv) ? venv : 'python3';
  }

  add() {
    const serviceDir = this.serverless.serviceDir || this.serverless.config.servicePath;
    const python = RecurringSchedules.interpreter(serviceDir);
    const env = { ...process.env };
    delete env.TASK_RUNNER_TASK_MODULES; // the deployment's task types only
    const run = spawnSync(python, ['-m', 'runner.recurring'], {
      cwd: serviceDir,
      env,
      encoding: 'utf8',
    });
    if (run.error || run.status !== 0) {
      const reason = run.error ? run.error.message : (run.stderr || '').trim().split('\n').pop();
      throw new Error(`recurring schedules: ${python} -m runner.recurring failed: ${reason}`);
    }
    const resources = JSON.parse(run.stdout);
    const template = this.serverless.service.provider.compiledCloudFormationTemplate;
    for (const [logicalId, resource] of Object.entries(resources)) {
      if (template.Resources[logicalId]) {
        throw new Error(`recurring schedules: ${logicalId} is already in the template`);
      }
      template.Resources[logicalId] = resource;
    }
    this.serverless.cli.log(`Recurring schedules: ${Object.keys(resources).length} added`);
  }
}

module.exports = RecurringSchedules;
