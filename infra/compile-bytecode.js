'use strict';

// Lambda unpacks the function zip into a read-only /var/task, so Python cannot cache the
// bytecode of what it imports there: without .pyc files in the zip, every cold start
// compiles pydantic, Powertools, the X-Ray SDK and the runner from source (about 0.3 s
// measured here; bench/README.md, figure 3). This local plugin runs after
// serverless-python-requirements has put the requirements in the zip, compiles every .py
// in it with the runtime's Python (the magic number must match: python3.12 for a
// python3.12 runtime) and adds the __pycache__/*.pyc files.
//
// The .pyc files are "unchecked-hash" (PEP 552): Python loads them without comparing
// them with the source's mtime, which a zip does not keep reliably, and the zip is
// immutable once deployed. Tracebacks name /var/task/<path>, where the source lies.
//
// The runtime's interpreter: custom.bytecode.pythonBin, else TASK_RUNNER_LAMBDA_PYTHON,
// else the one infra/find-python.js finds (python3.<minor> on PATH if it runs, else
// pyenv's), as `make` does; so `npx sls package` outside make ships bytecode too.
//
// custom.bytecode:
//   pythonBin: the runtime's interpreter (default: found as above)
//   required:  fail the package when that interpreter is missing (default: false, which
//              warns and ships source only)
//
// Beside each artifact it writes <artifact>.bytecode.json, {python, version, compiled,
// modules, reason}: which interpreter compiled how many modules, or (python null) why
// none did. tests/deploy/test_package.py reads it, so the test agrees with the plugin.
const { execFileSync, spawnSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const JSZip = require('jszip');
const { findPython } = require('./find-python');

const LAMBDA_ROOT = '/var/task';
// The zip's other entries carry this date too (serverless-python-requirements, osls).
const FIXED_DATE = new Date('1980-01-01T00:00:00Z');

class CompileBytecode {
  constructor(serverless) {
    this.serverless = serverless;
    this.hooks = { 'after:package:createDeploymentArtifacts': () => this.compile() };
  }

  log(message) {
    this.serverless.cli.log(`Bytecode: ${message}`);
  }

  settings() {
    const custom = (this.serverless.service.custom || {}).bytecode || {};
    const runtime = this.serverless.service.provider.runtime || '';
    const match = /^python(3\.\d+)$/.exec(runtime);
    if (!match) return null;
    return {
      version: match[1],
      pythonBin: CompileBytecode.interpreterFor(match[1], custom) || `python${match[1]}`,
      required: custom.required === true || custom.required === 'true',
    };
  }

  // The interpreter that compiles for Python `version`, or null (tests ask this too).
  static interpreterFor(version, custom = {}, env = process.env) {
    return custom.pythonBin || env.TASK_RUNNER_LAMBDA_PYTHON || findPython(version, env);
  }

  interpreterVersion(pythonBin) {
    try {
      return execFileSync(
        pythonBin,
        ['-c', 'import sys; print("%d.%d" % sys.version_info[:2])'],
        { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }
      ).trim();
    } catch (error) {
      return null;
    }
  }

  async compile() {
    const settings = this.settings();
    if (!settings) return;
    const found = this.interpreterVersion(settings.pythonBin);
    if (found !== settings.version) {
      const why =
        `${settings.pythonBin} ${found ? `is Python ${found}` : 'was not found'};` +
        ` the runtime needs Python ${settings.version} bytecode`;
      if (settings.required) throw new this.serverless.classes.Error(`Bytecode: ${why}`);
      this.log(`${why}. Shipping source only: every cold start will compile it.`);
      for (const artifact of this.artifacts()) {
        CompileBytecode.record(artifact, { python: null, version: settings.version, reason: why });
      }
      return;
    }
    for (const artifact of this.artifacts()) await this.compileArtifact(artifact, settings);
  }

  static record(artifact, entry) {
    const name = `${path.basename(artifact, '.zip')}.bytecode.json`;
    const where = path.join(path.dirname(artifact), name);
    fs.writeFileSync(where, `${JSON.stringify(entry)}\n`);
  }

  artifacts() {
    const { service } = this.serverless;
    if (!service.package.individually) {
      return [
        service.package.artifact ||
          path.join(this.serverless.serviceDir, '.serverless', `${service.service}.zip`),
      ];
    }
    return Object.values(service.functions || {})
      .map((fn) => fn.package && fn.package.artifact)
      .filter(Boolean);
  }

  async compileArtifact(artifact, settings) {
    const zip = await JSZip.loadAsync(fs.readFileSync(artifact));
    const sources = Object.keys(zip.files).filter(
      (name) => name.endsWith('.py') && !zip.files[name].dir
    );
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'bytecode-'));
    try {
      for (const name of sources) {
        const target = path.join(work, name);
        fs.mkdirSync(path.dirname(target), { recursive: true });
        fs.writeFileSync(target, await zip.file(name).async('nodebuffer'));
      }
      // -s/-p: tracebacks name /var/task/..., not this temporary directory. Exit status 1
      // means some file did not compile (Python 2 code, a template): those ship as source.
      const env = { ...process.env, PYTHONDONTWRITEBYTECODE: '' };
      // These would put the .pyc files under other names or elsewhere.
      delete env.PYTHONPYCACHEPREFIX;
      delete env.PYTHONOPTIMIZE;
      const result = spawnSync(
        settings.pythonBin,
        [
          '-m', 'compileall', '-q', '-j', '0', '--invalidation-mode', 'unchecked-hash',
          '-s', work, '-p', LAMBDA_ROOT, work,
        ],
        { stdio: ['ignore', 'inherit', 'inherit'], env }
      );
      if (result.error || (result.status !== 0 && result.status !== 1)) {
        throw new this.serverless.classes.Error(
          `Bytecode: compileall failed (${result.error || `exit status ${result.status}`})`
        );
      }
      let added = 0;
      for (const name of sources) {
        const cached = path.join(
          path.dirname(name),
          '__pycache__',
          `${path.basename(name, '.py')}.cpython-${settings.version.replace('.', '')}.pyc`
        );
        const compiled = path.join(work, cached);
        if (!fs.existsSync(compiled)) continue; // not valid Python 3 (a template, say)
        zip.file(cached.split(path.sep).join('/'), fs.readFileSync(compiled), {
          date: FIXED_DATE,
          unixPermissions: 0o644,
          createFolders: false,
        });
        added += 1;
      }
      if (sources.length && !added) {
        throw new this.serverless.classes.Error(
          `Bytecode: none of ${sources.length} modules compiled; see compileall's output above`
        );
      }
      const buffer = await zip.generateAsync({
        type: 'nodebuffer',
        platform: 'UNIX',
        compression: 'DEFLATE',
        compressionOptions: { level: 9 },
      });
      fs.writeFileSync(artifact, buffer);
      CompileBytecode.record(artifact, {
        python: settings.pythonBin,
        version: settings.version,
        compiled: added,
        modules: sources.length,
      });
      this.log(
        `${added} of ${sources.length} modules in ${path.basename(artifact)} compiled` +
          ` for Python ${settings.version}`
      );
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }
}

module.exports = CompileBytecode;
